"""What Slurm says about array tasks (and jobs without an array, which the PBS front end over
Slurm submits: the slurm and pbs backends share this module): one `sacct` call for all of them,
`squeue` for the ones sacct cannot settle (docs/slurm-notes.md, section 4).

Parsing is pure (`parse_sacct`, `parse_squeue`, `ended`); `SlurmQuery.states` runs the two
commands. A task is done only when nothing of it can run again: sacct says it ended and squeue
does not hold it (a requeued or preempted task waits there, PENDING, under the same id).
"""
from __future__ import annotations

import functools
import logging
import re
import time
from dataclasses import dataclass, field
from typing import AbstractSet, Callable, Iterable, Mapping, Optional, Sequence

from mfcl_sweeps.backends.children import signal_name
from mfcl_sweeps.backends.scheduler import TaskState, scheduler_command
from mfcl_sweeps.errors import MfclError

log = logging.getLogger(__name__)

ENDED = frozenset({"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "PREEMPTED",
                   "BOOT_FAIL", "DEADLINE"})
# Why Slurm, not the task, ended a job: the run's error when the worker wrote no result.
REASONS = {"CANCELLED": "was cancelled (scancel)", "TIMEOUT": "reached its time limit",
           "OUT_OF_MEMORY": "ran out of memory", "NODE_FAIL": "lost its node", "PREEMPTED": "was preempted",
           "BOOT_FAIL": "could not boot its node", "DEADLINE": "reached its deadline"}
# squeue forgets a task within seconds of its end, and sacct may record the end ~5 s later
# (measured). Until sacct does, or this long has passed, the task is not reported done.
SACCT_GRACE_S = 30.0

TASK_ID = re.compile(r"(\d+)_(\d+)")
COLLAPSED = re.compile(r"(\d+)_\[([\d,\-]+)(?:%\d+)?\]")


class SlurmError(MfclError):
    """A Slurm option is invalid or a Slurm command failed."""


def expand_ids(job_id: str, plain: AbstractSet[str] = frozenset()) -> list[str]:
    """`51_[0-2,5%2]` -> 51_0 51_1 51_2 51_5; `51_3` -> 51_3; a bare `51` -> [] (sacct shows an
    array task without its index for a moment after it starts: not usable) unless it is in
    `plain`, the ids of jobs submitted without an array."""
    if job_id in plain:
        return [job_id]
    m = COLLAPSED.fullmatch(job_id)
    if m:
        out = []
        for part in m.group(2).split(","):
            lo, _, hi = part.partition("-")
            out += [f"{m.group(1)}_{i}" for i in range(int(lo), int(hi or lo) + 1)]
        return out
    return [job_id] if TASK_ID.fullmatch(job_id) else []


def table_rows(text: str, width: int) -> Iterable[list[str]]:
    """The `|`-separated rows of `sacct -P` / `squeue -o a|b` output with at least `width` fields."""
    for line in text.splitlines():
        row = line.strip().split("|")
        if len(row) >= width:
            yield row


def parse_sacct(text: str, plain: AbstractSet[str] = frozenset()) -> dict[str, tuple[str, str]]:
    """`sacct -n -P -X -o JobID,State,ExitCode` -> {task id: (state word, "code:signal")}. A task's
    own row wins over the collapsed row of its pending array."""
    collapsed: dict[str, tuple[str, str]] = {}
    tasks: dict[str, tuple[str, str]] = {}
    for job_id, state, code, *_ in table_rows(text, 3):
        value = (state.split()[0] if state.strip() else "?", code)
        target = collapsed if "[" in job_id else tasks
        for tid in expand_ids(job_id, plain):
            target[tid] = value
    return {**collapsed, **tasks}


def parse_squeue(text: str, plain: AbstractSet[str] = frozenset()) -> dict[str, str]:
    """`squeue -h -r -o %i|%T` -> {task id: state}."""
    out = {}
    for job_id, state, *_ in table_rows(text, 2):
        for tid in expand_ids(job_id, plain):
            out[tid] = state
    return out


@dataclass(frozen=True)
class Wording:
    """How errors name a task: the PBS front end over Slurm speaks of PBS jobs, in PBS ids."""
    job: str = "Slurm job"
    reasons: Mapping[str, str] = field(default_factory=lambda: REASONS)
    shown_id: Callable[[str], str] = str  # Slurm's task id -> the id the user knows

    def name(self, task_id: str) -> str:
        return f"{self.job} {self.shown_id(task_id)}"


SLURM_WORDING = Wording()


def ended(task_id: str, state: str, exit_code: str, wording: Wording = SLURM_WORDING) -> TaskState:
    """A task sacct reports as ended (state word, `code:signal`) -> TaskState; a signal exit is
    recorded as -N, as the local backend does."""
    code, _, sig = exit_code.partition(":")
    status = int(code) if code.isdigit() else None
    if sig.isdigit() and sig != "0":
        status = -int(sig)
    error = None
    if state in wording.reasons:
        error = f"{wording.name(task_id)} {wording.reasons[state]} ({state})"
    elif status is not None and status < 0:
        error = f"{wording.name(task_id)} was killed by {signal_name(status)}"
    return TaskState(done=True, exit_code=status, error=error, status=state)


run_command = functools.partial(scheduler_command, error_type=SlurmError, scheduler="Slurm")


def array_ids(task_ids: Iterable[str]) -> list[str]:
    return sorted({t.split("_")[0] for t in task_ids}, key=int)


def plain_ids(task_ids: Iterable[str]) -> frozenset[str]:
    """The ids among these of jobs submitted without an array (`51`, not `51_0`)."""
    return frozenset(t for t in task_ids if t.isdigit())


class SlurmQuery:
    """States of many array tasks (and jobs without an array) from one sacct call (+ one squeue
    call when needed)."""

    def __init__(self, grace_s: float = SACCT_GRACE_S, has_result: Callable[[str], bool] = lambda _: False,
                 wording: Wording = SLURM_WORDING) -> None:
        self.grace_s = grace_s
        self.has_result = has_result  # task id -> its result file exists (the truth for success)
        self.wording = wording
        self._unrecorded: dict[str, float] = {}  # task id -> when we first saw it gone from squeue, unended in sacct

    def sacct(self, task_ids: Sequence[str]) -> dict[str, tuple[str, str]]:
        proc = run_command(["sacct", "-n", "-P", "-X", "-j", ",".join(array_ids(task_ids)),
                            "-o", "JobID,State,ExitCode"])
        if proc.returncode:
            log.warning("sacct failed (exit %s): %s; falling back to squeue", proc.returncode,
                        proc.stderr.strip()[:300])
            return {}
        return parse_sacct(proc.stdout, plain_ids(task_ids))

    def squeue(self, task_ids: Sequence[str]) -> Optional[dict[str, str]]:
        proc = run_command(["squeue", "-h", "-r", "-j", ",".join(array_ids(task_ids)), "-o", "%i|%T"])
        if proc.returncode and "invalid job id" not in proc.stderr.lower():
            log.warning("squeue failed (exit %s): %s", proc.returncode, proc.stderr.strip()[:300])
            return None
        return parse_squeue(proc.stdout, plain_ids(task_ids))

    def states(self, task_ids: Sequence[str]) -> dict[str, TaskState]:
        """Only tasks whose state is known are in the answer."""
        if not task_ids:
            return {}
        acct = self.sacct(task_ids)
        # sacct settles a task that ended for good; squeue decides the rest (still queued or
        # running, requeued after preemption, or gone before sacct recorded its end)
        unsettled = [t for t in task_ids if acct.get(t, ("?",))[0] not in ENDED - {"PREEMPTED", "NODE_FAIL"}]
        queue = self.squeue(unsettled) if unsettled else {}
        out: dict[str, TaskState] = {}
        now = time.monotonic()
        for tid in task_ids:
            state, code = acct.get(tid, ("?", ""))
            queued = None if queue is None else queue.get(tid)
            if tid not in unsettled:
                out[tid] = ended(tid, state, code, self.wording)
            elif queue is None:  # squeue failed: report what sacct alone can tell
                if state not in ENDED and state != "?":
                    out[tid] = TaskState(done=False, running=state == "RUNNING", status=state)
            elif queued is not None and queued not in ENDED:
                self._unrecorded.pop(tid, None)
                out[tid] = TaskState(done=False, running=queued in ("RUNNING", "COMPLETING"), status=queued)
            elif state in ENDED:
                out[tid] = ended(tid, state, code, self.wording)
            elif now - self._unrecorded.setdefault(tid, now) < self.grace_s:
                out[tid] = TaskState(done=False, status="ending")
            else:
                self._unrecorded.pop(tid, None)
                error = None if self.has_result(tid) else (
                    f"{self.wording.name(tid)} left the queue without an accounting record (sacct: {state})")
                out[tid] = TaskState(done=True, error=error, status="gone")
        return out


def cancel(job_ids: Sequence[str]) -> None:
    """scancel these tasks/jobs; ids that already ended are not an error."""
    if job_ids:
        proc = run_command(["scancel", *job_ids])
        if proc.returncode:
            log.info("scancel exit %s: %s", proc.returncode, (proc.stdout + proc.stderr).strip()[:300])
