"""What the scheduler backends (Slurm, PBS) share: a task's state as the scheduler tells it,
running the scheduler's commands, and batched, backing-off polling of its queue.

One query covers every handle; while nothing changes the interval grows (x1.5 up to a maximum),
so a long sweep costs the scheduler little, and any change or new submission resets it.
"""
from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

from mfcl_sweeps.backends.base import JobHandle, JobState


@dataclass
class TaskState:
    done: bool
    running: bool = False
    exit_code: Optional[int] = None
    error: Optional[str] = None  # set when the scheduler ended it (signal, time limit, deletion, node)
    status: str = ""  # the scheduler's word for the state, shown by `mfcl-sweeps status`


def scheduler_command(argv: list[str], timeout: float = 60, *, error_type: type[Exception],
                      scheduler: str) -> subprocess.CompletedProcess:
    """Run a scheduler command; a timeout reads as exit 124, a missing command raises error_type."""
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except FileNotFoundError as err:
        raise error_type(f"{argv[0]}: command not found; is this a {scheduler} login node? ({err})") from err
    except subprocess.TimeoutExpired:
        return subprocess.CompletedProcess(argv, 124, "", f"{argv[0]} timed out after {timeout:g}s")


class BackoffPoller:
    def __init__(self, query: Callable[[list[str]], dict[str, TaskState]], min_s: float, max_s: float) -> None:
        self.query, self.min_s, self.max_s = query, min_s, max_s
        self._interval = min_s
        self._next = 0.0
        self._cache: dict[str, TaskState] = {}

    def reset(self) -> None:
        """Poll soon again (e.g. after a new submission)."""
        self._interval, self._next = self.min_s, 0.0

    def states(self, handles: Sequence[JobHandle]) -> dict[str, JobState]:
        now = time.monotonic()
        if now >= self._next:
            fresh = self.query([h.backend_job_id for h in handles])
            changed = any(s.done or s.running != getattr(self._cache.get(t), "running", False)
                          for t, s in fresh.items())
            self._cache.update(fresh)
            self._interval = self.min_s if changed else min(self._interval * 1.5, self.max_s)
            self._next = now + self._interval
        out = {}
        for h in handles:
            s = self._cache.get(h.backend_job_id)
            if s is not None and s.done:
                self._cache.pop(h.backend_job_id)
                out[h.key] = JobState(done=True, exit_code=s.exit_code, error=s.error)
            else:
                out[h.key] = JobState(done=False, running=bool(s and s.running))
        return out
