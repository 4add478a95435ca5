"""What the pool keeps per source and per run while a launch goes on."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Optional

from mfcl_sweeps.backends.base import Backend, JobHandle, Submission
from mfcl_sweeps.backends.pool.sources import SourceSpec
from mfcl_sweeps.backends.ssh.health import HostHealth
from mfcl_sweeps.backends.ssh.strategy import HostLoad
from mfcl_sweeps.errors import MfclError

HELD = "-"  # the source of a run the pool holds until a source that fits it has a free slot


class AllSourcesDown(MfclError):
    """Every source stayed disabled; the manifest keeps the runs still to do."""


@dataclass
class PoolSubmission(Submission):
    """One batch of runs in input order, as `parts`: (source name, its backend's submission)
    each, with source None for runs the pool holds until a source that fits them has a slot."""

    parts: list[tuple[Optional[str], Submission]] = field(default_factory=list)

    def describe(self) -> str:
        out = []
        for source, sub in self.parts:
            head = f"## source {source}" if source else "## held by the pool until a fitting source has a free slot"
            if sub.extra.get("attach"):
                head += f" (re-attached to job(s) {', '.join(sub.extra['attach'])}: nothing submitted)"
            out.append(f"{head}\n{sub.describe()}")
        return "\n".join(out)


class Source:
    """One source at run time: its child backend, load and health."""

    def __init__(self, spec: SourceSpec, backend: Backend) -> None:
        self.spec, self.backend = spec, backend
        self.running = 0
        self.started = 0
        self.health = HostHealth()
        self.last_check = 0.0
        self.unanswered_since: Optional[float] = None  # poll raising since
        self.controller_errors = 0  # a scheduler's controller: errors in a row (backends/pool/controller.py)
        self.controller_down: Optional[str] = None  # its last error
        self.last_asked = 0.0

    @property
    def name(self) -> str:
        return self.spec.name

    def load(self, free: Optional[int] = None) -> HostLoad:
        """Its load for the strategies; `free`: the free slots it has now (default: its own count)."""
        slots = self.spec.slots if free is None else self.running + free
        return HostLoad(slots=slots, running=self.running, started=self.started, weight=self.spec.weight,
                        enabled=self.health.enabled)


@dataclass
class Flight:
    """A run in the pool: where it is and since when (kept in its handle's data)."""

    source: str = HELD
    child: Optional[JobHandle] = None
    submitted: float = field(default_factory=time.monotonic)
    withdrawing: Optional[str] = None  # why it is being withdrawn from its scheduler queue
    started_running: bool = False
    error: Optional[str] = None  # why the run could not be started (it then fails with this error)


def local_process(child: JobHandle) -> dict:
    """host and pid of a job the child started on this machine (its process group leader), for
    `mfcl-sweeps cancel`: the worker, which would journal them, does not journal in a pool."""
    from mfcl_sweeps.liveness import HOST

    pid = child.data.get("pid")
    return {"host": HOST, "pid": pid} if isinstance(pid, int) else {}


def one_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return (text[-1] if text else type(err).__name__)[:300]
