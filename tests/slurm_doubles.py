"""A test double for Slurm's query commands, for the lag cases that the real cluster produces
only by chance: sacct and squeue answers are given as text, parsing and decisions are the real ones."""
from __future__ import annotations

from mfcl_sweeps.backends.sacct import SlurmQuery, parse_sacct, parse_squeue, plain_ids


class FakeOutputQuery(SlurmQuery):
    def __init__(self, acct: str, queue: str, **kw) -> None:
        super().__init__(**kw)
        self.acct, self.queue = acct, queue

    def sacct(self, task_ids):
        return parse_sacct(self.acct, plain_ids(task_ids))

    def squeue(self, task_ids):
        return parse_squeue(self.queue, plain_ids(task_ids))
