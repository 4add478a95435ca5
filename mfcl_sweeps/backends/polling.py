"""Batched, backing-off polling of a scheduler's queue, shared by the scheduler backends.

One query covers every handle; while nothing changes the interval grows (x1.5 up to a maximum),
so a long sweep costs the scheduler little, and any change or new submission resets it.
"""
from __future__ import annotations

import time
from typing import Any, Callable, Protocol, Sequence

from mfcl_sweeps.backends.base import JobHandle, JobState


class TaskState(Protocol):
    done: bool
    running: bool
    exit_code: Any
    error: Any


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
