"""The one interface every backend implements.

`plan` is pure (it builds the exact scripts/commands, printable in a dry run); `submit` is the
only place a backend starts anything; `poll` and `cancel` act on handles. The driver loop in
`mfcl_sweeps.launch.driver` does everything else (rolling submission, results, retries, journal).
"""
from __future__ import annotations

import abc
import dataclasses
import time
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional, Sequence

from mfcl_sweeps.job.jobspec import JobSpec
from mfcl_sweeps.model import PlannedRun


@dataclass
class JobRequest:
    """One run to start: its plan, the job file the worker reads, where its output goes."""

    run: PlannedRun
    spec: JobSpec
    job_path: str  # where `spec` is written (JSON), read by `python -m mfcl_sweeps.worker`
    log_path: str  # the job's stdout+stderr

    @property
    def key(self) -> str:
        return f"{self.run.run_id}.{self.spec.attempt}"


@dataclass
class Submission:
    """What one `submit` call sends: exact script text (if any) and command lines."""

    requests: list[JobRequest]
    commands: list[list[str]] = field(default_factory=list)
    script: Optional[str] = None
    script_path: Optional[str] = None
    extra: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> str:
        import shlex

        parts = [f"# {len(self.requests)} run(s): " + ", ".join(r.run.run_id for r in self.requests[:8])
                 + (" ..." if len(self.requests) > 8 else "")]
        if self.script is not None:
            parts.append(f"# script {self.script_path or ''}\n{self.script.rstrip()}")
        parts.extend("$ " + shlex.join(c) for c in self.commands)
        return "\n".join(parts)


@dataclass
class JobHandle:
    request: JobRequest
    backend_job_id: str
    started: float
    data: dict[str, Any] = field(default_factory=dict)  # backend-private (pid, host, submitit job...)

    @property
    def key(self) -> str:
        return self.request.key


@dataclass
class JobState:
    """A handle's state as the backend sees it. `done` means no process of it remains."""

    done: bool
    running: bool = False
    exit_code: Optional[int] = None
    error: Optional[str] = None  # why it ended badly, when the worker could not say (signal, timeout...)
    preempted: bool = False  # ended by the scheduler, to be requeued rather than counted as a failure
    run_failed: bool = False  # failed even if its worker wrote a completed result (e.g. another DDP rank failed)
    fields: dict[str, Any] = field(default_factory=dict)  # extra journal fields (host, ...)


class Backend(abc.ABC):
    name: str = "?"
    poll_interval: float = 0.05
    queues_jobs: bool = False  # True for schedulers: a job waits in a queue under a backend job id

    @abc.abstractmethod
    def plan(self, requests: Sequence[JobRequest]) -> list[Submission]:
        """Pure: the exact submissions for these requests."""

    def capacity(self) -> Optional[int]:
        """How many more jobs may start now; None means no limit."""
        return None

    @abc.abstractmethod
    def submit(self, submission: Submission) -> list[JobHandle]:
        """Start a planned submission; one handle per request, in order."""

    @abc.abstractmethod
    def poll(self, handles: Sequence[JobHandle]) -> dict[str, JobState]:
        """States of these handles, keyed by handle key."""

    @abc.abstractmethod
    def cancel(self, handles: Sequence[JobHandle]) -> None:
        """Stop these jobs (and every process they started)."""

    def kill(self, handles: Sequence[JobHandle]) -> None:
        """Stop these jobs now, without a grace period (a second Ctrl-C); `cancel` unless overridden."""
        self.cancel(handles)

    def wait(self, timeout: float) -> None:
        """Block until something may have changed, at most `timeout` seconds."""
        time.sleep(timeout)

    def close(self) -> None:
        """Release resources (connections, temp dirs) at the end of a launch."""


def options_type(type_name: str, conf: type, /, **defaults: Any) -> type:
    """A backend's frozen, typed options, made from its launcher's config dataclass: the one
    place where an option's name, default and meaning are written. The options every mfcl
    launcher shares (handled by the driver) are left out; lists become tuples; `defaults`
    replaces config defaults that are Hydra interpolations (e.g. `${hydra.job.name}`)."""
    from mfcl_sweeps.launch.core import COMMON_OPTIONS

    fields = []
    for f in dataclasses.fields(conf):
        if f.name in COMMON_OPTIONS or f.name == "_target_":
            continue
        if f.name in defaults:
            default = defaults[f.name]
        else:
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        if isinstance(default, list):
            fields.append((f.name, tuple, dataclasses.field(default=tuple(default))))
        elif isinstance(default, dict):
            fields.append((f.name, Mapping[str, Any], dataclasses.field(default_factory=dict)))
        else:
            fields.append((f.name, f.type, dataclasses.field(default=default)))
    return dataclasses.make_dataclass(type_name, fields, frozen=True)
