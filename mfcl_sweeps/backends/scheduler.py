"""One base for the array schedulers (Slurm, PBS): what they do alike is written here once.

- planning: runs grouped by the resources they ask for, each group split under the largest
  array the scheduler takes (`plan`);
- submission: job list and script written before the submit command runs, one error wording,
  one handle per run with its task id and journal fields, the poller reset (`submit`);
- polling: one batched query per interval for every handle, backing off while nothing changes
  (x1.5 up to a maximum; any change or new submission resets it);
- a task's state as the scheduler tells it (`TaskState`), mapped once to journal fields for
  `mfcl-sweeps status` (`refresh_records`), and `cancel_records`.

A scheduler supplies small hooks: `resources`, `plan_array` (script text and submit argv),
`parse_job_id`, `task_id`, `query`, `cancel_ids`, and their class-level twins for journaled
runs (`query_records`, `cancel_record_ids`). Slurm-only extras (chained arrays, the detached
aggregation job) stay in the Slurm backend.
"""
from __future__ import annotations

import abc
import json
import logging
import shlex
import subprocess
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar, Hashable, Optional, Sequence

from mfcl_sweeps import model
from mfcl_sweeps.backends.base import Backend, JobHandle, JobRequest, JobState, Submission
from mfcl_sweeps.errors import MfclError
from mfcl_sweeps.fsio import atomic_write

log = logging.getLogger(__name__)


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


def record_fields(rec: Any, s: Optional[TaskState], job: str) -> Optional[dict]:
    """What the scheduler's word on a journaled active run changes in its record: a task it has
    ended without an outcome in the journal died from outside (cancelled, time or memory limit,
    node); one it runs is running; one it holds again after it ran was requeued (preempted)."""
    if s is None or s.status == "ending":  # not known yet, or its end not recorded yet
        return None
    if s.done:
        return {"status": model.FAILED, "exit_code": s.exit_code,
                "error": s.error or f"{job} {rec.backend_job_id} ended ({s.status}) without recording an outcome"}
    if s.running and rec.status == model.PENDING:
        return {"status": model.RUNNING}
    if not s.running and rec.status == model.RUNNING:
        return {"status": model.PREEMPTED}
    return None


class ArraySchedulerBackend(Backend):
    """Job arrays on a batch scheduler. Subclasses set `state_dir`, `options` (with
    poll_min_s/poll_max_s) and `poller` (a BackoffPoller over `query`) in their __init__."""

    queues_jobs = True
    poll_interval = 0.2  # the driver loop's sleep; the scheduler is queried every poll_min_s..poll_max_s
    scheduler: ClassVar[str] = "?"  # how errors name it ("Slurm", "PBS")
    job_word: ClassVar[str] = "job"  # how `status` names one of its jobs ("Slurm job")
    error_type: ClassVar[type[MfclError]] = MfclError
    submit_timeout_s: ClassVar[float] = 120

    state_dir: str
    poller: BackoffPoller

    # -- hooks ---------------------------------------------------------------------------------
    @abc.abstractmethod
    def resources(self, request: JobRequest) -> Hashable:
        """What one array asks for; runs whose resources differ go to different arrays."""

    @abc.abstractmethod
    def max_array_size(self) -> int:
        """The most tasks one array may hold."""

    @abc.abstractmethod
    def plan_array(self, res: Any, requests: list[JobRequest], part: int) -> Submission:
        """One array's script and submit command (`part`: its number within its group). Its
        `extra` holds `job_list_path` (None: no job list) for `submit`."""

    @abc.abstractmethod
    def parse_job_id(self, stdout: str) -> str:
        """The job id the submit command printed."""

    @abc.abstractmethod
    def task_id(self, job_id: str, index: int, submission: Submission) -> str:
        """The id of task `index` of the array (or job) `job_id`."""

    @abc.abstractmethod
    def query(self, task_ids: list[str]) -> dict[str, TaskState]:
        """The scheduler's word on these tasks; only the ones it knows are in the answer."""

    @abc.abstractmethod
    def cancel_ids(self, task_ids: list[str]) -> None:
        """Ask the scheduler to stop these tasks (ended ones are not an error)."""

    @abc.abstractmethod
    def run_command(self, argv: list[str], timeout: float) -> subprocess.CompletedProcess:
        """Run one of the scheduler's commands."""

    def submit_argv(self, submission: Submission) -> list[str]:
        return submission.commands[0]

    def journal_fields(self, submission: Submission, job_id: str, index: int) -> dict[str, Any]:
        return {}

    def submitted(self, submission: Submission, job_id: str) -> None:
        """Called after each successful submission (Slurm chains and releases jobs here)."""

    # -- planning (pure) ------------------------------------------------------------------
    def plan(self, requests: Sequence[JobRequest]) -> list[Submission]:
        groups: dict[Hashable, list[JobRequest]] = defaultdict(list)
        for req in requests:
            groups[self.resources(req)].append(req)
        size = self.max_array_size()
        return [self.plan_array(res, reqs[i:i + size], part) for res, reqs in groups.items()
                for part, i in enumerate(range(0, len(reqs), size))]

    # -- running ------------------------------------------------------------------------------
    def submit(self, submission: Submission) -> list[JobHandle]:
        Path(self.state_dir).mkdir(parents=True, exist_ok=True)
        for req in submission.requests:
            Path(req.log_path).parent.mkdir(parents=True, exist_ok=True)
        if submission.extra.get("job_list_path"):  # written before submitting: no task waits for its input
            atomic_write(submission.extra["job_list_path"],
                               json.dumps([r.job_path for r in submission.requests]).encode())
        if submission.script is not None:
            atomic_write(submission.script_path, submission.script.encode())
        job_id = self.run_submit(self.submit_argv(submission))
        now = time.monotonic()
        handles = [JobHandle(request=req, backend_job_id=self.task_id(job_id, i, submission), started=now,
                             data={"job_id": job_id, "journal_fields": self.journal_fields(submission, job_id, i)})
                   for i, req in enumerate(submission.requests)]
        log.info("submitted %s job %s (%d run(s)) with %s", self.scheduler, job_id, len(handles),
                 submission.script_path)
        self.submitted(submission, job_id)
        self.poller.reset()
        return handles

    def run_submit(self, argv: list[str]) -> str:
        """Run a submit command; the job id it printed."""
        proc = self.run_command(argv, self.submit_timeout_s)
        if proc.returncode != 0:
            detail = (proc.stderr.strip() or proc.stdout.strip())[-500:]
            raise self.error_type(f"{argv[0]} failed (exit {proc.returncode}): {detail}; command: {shlex.join(argv)}")
        return self.parse_job_id(proc.stdout)

    def poll(self, handles: Sequence[JobHandle]) -> dict[str, JobState]:
        return self.poller.states(handles)

    def cancel(self, handles: Sequence[JobHandle]) -> None:
        self.cancel_ids([h.backend_job_id for h in handles])

    # -- journaled runs (mfcl-sweeps status / cancel, claim takeover) ---------------------------
    @classmethod
    @abc.abstractmethod
    def query_records(cls, records: Sequence[Any]) -> dict[str, TaskState]:
        """The scheduler's word on these journaled runs, by backend job id."""

    @classmethod
    @abc.abstractmethod
    def cancel_record_ids(cls, records: Sequence[Any]) -> None:
        """Stop these journaled runs' jobs (and whatever else the sweep left queued for them)."""

    @classmethod
    def refresh_records(cls, records: Sequence[Any]) -> dict[str, dict]:
        mine = [r for r in records if r.backend_job_id]
        states = cls.query_records(mine) if mine else {}
        out = {}
        for rec in mine:
            fields = record_fields(rec, states.get(rec.backend_job_id), cls.job_word)
            if fields:
                out[rec.config_hash] = fields
        return out

    @classmethod
    def cancel_records(cls, records: Sequence[Any]) -> list[str]:
        mine = [r for r in records if r.backend_job_id]
        if mine:
            cls.cancel_record_ids(mine)
        return [r.config_hash for r in mine]
