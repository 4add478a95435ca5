"""One base for the array schedulers (Slurm, PBS): what they do alike is written here once.

- planning: runs grouped by the resources they ask for, each group split under the largest
  array the scheduler takes (`plan`);
- submission: job list and script written before the submit command runs, one error wording,
  one handle per run with its task id and journal fields, the poller reset (`submit`);
- polling: one batched query per interval for every handle, backing off while nothing changes
  (x1.5 up to a maximum; any change or new submission resets it);
- packing (`runs_per_task`, `runs_per_gpu`, `pack_minutes`; backends/packing.py): several runs
  per array task, each run still its own handle, done when its result lands;
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
import os
import shlex
import subprocess
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar, Hashable, Optional, Sequence

from mfcl_sweeps import model
from mfcl_sweeps.backends import packing
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
            fresh = self.query(list(dict.fromkeys(h.backend_job_id for h in handles)))
            changed = any(s.done or s.running != getattr(self._cache.get(t), "running", False)
                          for t, s in fresh.items())
            self._cache.update(fresh)
            self._interval = self.min_s if changed else min(self._interval * 1.5, self.max_s)
            self._next = now + self._interval
        out = {}
        ended = set()
        for h in handles:  # a packed task's runs share its id: forget its state after all of them
            s = self._cache.get(h.backend_job_id)
            if s is not None and s.done:
                ended.add(h.backend_job_id)
                out[h.key] = JobState(done=True, exit_code=s.exit_code, error=s.error)
            else:
                out[h.key] = JobState(done=False, running=bool(s and s.running))
        for task in ended:
            self._cache.pop(task, None)
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
    if s.running and rec.status == model.PENDING and not packing.is_packed(rec):  # its turn may not have come
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
    sweep_dir: str
    poller: BackoffPoller

    # -- hooks ---------------------------------------------------------------------------------
    @abc.abstractmethod
    def resources(self, request: JobRequest) -> Hashable:
        """What one array asks for; runs whose resources differ go to different arrays."""

    @abc.abstractmethod
    def max_array_size(self) -> int:
        """The most tasks one array may hold."""

    @abc.abstractmethod
    def plan_array(self, res: Any, requests: list[JobRequest], part: int, pack: packing.Plan) -> Submission:
        """One array's script and submit command (`part`: its number within its group; `pack`:
        how its runs share its tasks). Its `extra` holds `job_list_path` (None: no job list) for `submit`."""

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

    def pack(self, res: Any, requests: Sequence[JobRequest]) -> packing.Plan:
        """How the runs of an array for `res` share its tasks (one per task unless the scheduler packs)."""
        return packing.Plan()

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
        out = []
        for res, reqs in groups.items():
            pack = self.pack(res, reqs)  # one for the group: its arrays split at whole tasks
            runs = self.max_array_size() * pack.runs_per_task  # the limit counts tasks, not runs
            for part, i in enumerate(range(0, len(reqs), runs)):
                out.append(self.plan_array(res, reqs[i:i + runs], part, pack))
                out[-1].extra["runs_per_task"] = pack.runs_per_task
        return out

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
        k = submission.extra.get("runs_per_task", 1)
        markers = packing.cancel_dir(self.sweep_dir, self.name)
        handles = []
        for i, req in enumerate(submission.requests):
            fields = self.journal_fields(submission, job_id, i // k)
            if k > 1:
                fields.update(packing.journal_fields(len(packing.task_slice(submission.requests, i // k, k)), markers))
            handles.append(JobHandle(request=req, backend_job_id=self.task_id(job_id, i // k, submission),
                                     started=now, data={"job_id": job_id, "journal_fields": fields,
                                                        "packed": k > 1}))
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
        states = self.poller.states(handles)
        for h in handles:
            if h.data.get("packed"):
                states[h.key] = self.packed_state(h, states[h.key])
        return states

    def packed_state(self, handle: JobHandle, task: JobState) -> JobState:
        """One run of a packed task: done once its result is in place (looked for only while the
        scheduler has started the task), stopped by a cancel, or left behind by the task's end."""
        run_id = handle.request.run.run_id
        if (task.running or task.done) and os.path.exists(handle.request.spec.result_path):
            return JobState(done=True, exit_code=0)
        stopped = packing.stopped_state(handle.data["journal_fields"][packing.PACK_DIR], run_id)
        if stopped:
            return JobState(done=True, exit_code=stopped[0], error=stopped[1])
        if task.done:
            why = task.error or f"exit code {task.exit_code}"
            return JobState(done=True, exit_code=task.exit_code,
                            error=f"{self.job_word} {handle.backend_job_id} ended ({why}) before run {run_id} finished")
        return task

    def cancel(self, handles: Sequence[JobHandle]) -> None:
        self.cancel_ids(list(dict.fromkeys(h.backend_job_id for h in handles)))  # packed runs share a task

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
        """Unpacked runs: their tasks are stopped. Packed runs stop alone (packing.request_cancel);
        a task whose every run is cancelled is stopped as a whole."""
        mine = [r for r in records if r.backend_job_id]
        whole = set(packing.request_cancel([r for r in mine if packing.is_packed(r)]))
        stop = [r for r in mine if not packing.is_packed(r)]
        stop += list({r.backend_job_id: r for r in mine if r.backend_job_id in whole}.values())
        if stop:
            cls.cancel_record_ids(stop)
        return [r.config_hash for r in mine]
