"""The one interface every backend implements.

`plan` is pure (it builds the exact scripts/commands, printable in a dry run); `submit` is the
only place a backend starts anything; `poll` and `cancel` act on handles. The driver loop in
`mfcl_sweeps.launch.driver` does everything else (rolling submission, results, retries, journal).
"""
from __future__ import annotations

import abc
import time
from dataclasses import dataclass, field
from typing import Any, ClassVar, Mapping, Optional, Sequence

from mfcl_sweeps import model
from mfcl_sweeps.job.jobspec import JobSpec
from mfcl_sweeps.model import PlannedRun
from mfcl_sweeps.options import parse_options


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
    """A backend, registered under `name` in `mfcl_sweeps.backends`. The class methods are what
    the launcher's setup, the CLI (`status`, `cancel`) and claim takeover ask of it; the instance
    methods run one launch."""

    name: ClassVar[str] = "?"
    conf: ClassVar[type]  # its launcher config (mfcl_sweeps.config): the options' one declaration
    conf_defaults: ClassVar[Mapping[str, Any]] = {}  # for config defaults that are Hydra interpolations
    poll_interval: float = 0.05
    queues_jobs: ClassVar[bool] = False  # True for schedulers: a job waits in a queue under a backend job id

    # -- what is asked of a backend without a launch ------------------------------------------
    @classmethod
    def check_options(cls, raw: Mapping[str, Any]) -> Any:
        """`hydra.launcher.*` -> this backend's frozen options; OptionError (one line) for the
        first bad one. Called at the launcher's setup(), before anything is journaled."""
        return parse_options(cls.conf, raw, f"mfcl_{cls.name}", **cls.conf_defaults)

    @classmethod
    @abc.abstractmethod
    def from_options(cls, raw: Mapping[str, Any], *, session: Any) -> "Backend":
        """The backend for one launch, from `hydra.launcher.*` (checked again here)."""

    @classmethod
    def refresh_records(cls, records: Sequence[Any]) -> dict[str, dict]:
        """`mfcl-sweeps status`: what the backend knows of journaled active runs beyond the
        journal, as {config_hash: fields to apply}. Backends whose runs die with their driver
        know nothing more."""
        return {}

    @classmethod
    @abc.abstractmethod
    def cancel_records(cls, records: Sequence[Any]) -> Optional[list[str]]:
        """`mfcl-sweeps cancel`: stop these journaled runs; the config hashes stopped (None: all)."""

    @classmethod
    def driver_part(cls, options: Any) -> Optional[str]:
        """The part of every run a driver with these (checked) options runs, where one driver per
        part shares each run (torchrun's node_rank: one driver per node); None: the whole run, so
        a second driver without claims would run everything twice."""
        return None

    @classmethod
    def still_running(cls, record: Any) -> bool:
        """Claim takeover: does this run live on in the backend whatever its driver did? True
        only for a run the backend still holds (a queued or running scheduler job): other
        backends' runs die with their driver."""
        if not cls.queues_jobs or not record.backend_job_id or record.status not in model.ACTIVE_STATES:
            return False
        fields = (cls.refresh_records([record]) or {}).get(record.config_hash, {})
        return fields.get("status", record.status) in model.ACTIVE_STATES

    # -- one launch ---------------------------------------------------------------------------

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
