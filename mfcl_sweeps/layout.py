"""Every path under a sweep dir, named once: for the driver's copy and for an SSH host's copy.

Paths are strings joined with '/', so the same layout serves a remote root
(`SweepLayout("/scratch/u/sweep")` built on the driver names files on the host).
"""
from __future__ import annotations

import os
import posixpath
from pathlib import Path
from typing import Union

STATE_DIR = ".mfcl"
SNAPSHOT_NAME = "sweep_manifest.json"


class SweepLayout:
    def __init__(self, root: Union[str, os.PathLike]) -> None:
        self.root = os.fspath(root)
        join = posixpath.join
        # state: the journal and what is derived from it
        self.state = join(self.root, STATE_DIR)
        self.journal = join(self.state, "journal.jsonl")
        self.checkpoint = join(self.state, "replay.ckpt")
        self.claims = join(self.state, "claims")
        self.owners = join(self.state, "owners")
        self.drivers = join(self.state, "drivers")  # one file per live driver (state/drivers.py)
        self.store_pointer = join(self.state, "store.json")  # names the database store, if any (state/store.py)
        self.snapshot = join(self.root, SNAPSHOT_NAME)
        # what travels to a job (SSH hosts get one session; drivers one per launch)
        self.session = join(self.state, "session.pkl")
        # what a user reads
        self.logs = join(self.root, "logs")
        self.reports = join(self.root, "reports")

    @classmethod
    def of(cls, sweep_dir: Union[str, os.PathLike]) -> "SweepLayout":
        return cls(sweep_dir)

    def plan_index(self, spec_hash: str) -> str:
        return posixpath.join(self.state, "plans", f"{spec_hash}.idx")

    def driver_session(self, tag: str) -> str:
        return posixpath.join(self.state, f"session-{tag}.pkl")

    def job_file(self, run_id: str, attempt: int) -> str:
        return posixpath.join(self.state, "jobs", f"{run_id}.{attempt}.json")

    def result_file(self, run_id: str, attempt: int) -> str:
        return posixpath.join(self.state, "results", f"{run_id}.{attempt}.pkl")

    def backend_dir(self, backend: str, *parts: str) -> str:
        """A backend's own files (batch scripts, job lists, torchrun agents' state)."""
        return posixpath.join(self.state, backend, *parts)

    def run_log(self, run_id: str) -> str:
        return posixpath.join(self.logs, "runs", f"{run_id}.log")


def sweep_id_of(sweep_dir: Union[str, os.PathLike]) -> str:
    """A readable id for a sweep dir that no name was given for: the last two parts of its
    absolute path (symlinks kept as written, so the driver and its jobs agree)."""
    parts = Path(os.path.abspath(os.fspath(sweep_dir))).parts
    return "_".join(parts[-2:]) if len(parts) >= 2 else parts[-1]
