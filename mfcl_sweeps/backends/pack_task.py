"""One packed array task (`hydra.launcher.runs_per_task` > 1): its runs one after another, or
side by side.

    python -m mfcl_sweeps.backends.pack_task SESSION JOBS.json --runs-per-task K [--runs-per-gpu G] \
        --index-env VARS

(PBS runs this; a Slurm task reaches `run_task` through backends/slurm/task.py.) The task loads
the session once and forks one child per run, in its own process group, with its output in the
run's log: a run that raises, exits or crashes fails alone and the next one starts. Each run
writes its result under a temporary name, renamed into place once its outcome is journaled, so
the driver (backends/packing.py) reads a run as done only after the journal says how it ended.

With `--runs-per-gpu G` up to G runs per GPU of the task run at once, each seeing only its GPU
(CUDA_VISIBLE_DEVICES: one of those the task's own CUDA_VISIBLE_DEVICES lists, the least shared);
a task that lists no GPU runs G at once, with the environment it has. A cancelled run is stopped
by the stop every backend uses (children.stop_gracefully), while the others go on.

A task started again (Slurm requeue, PBS rerun) skips the runs the journal shows ended after the
task was submitted (completed or failed: a failed run is retried by `retries`, not by a requeue)
and runs the rest as a new attempt, journaling `preempted` for the one that was interrupted.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import select
import signal
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any, Mapping, Optional

from mfcl_sweeps import model
from mfcl_sweeps.backends import packing
from mfcl_sweeps.backends.children import signal_group, signal_name, stop_gracefully, visible_gpus
from mfcl_sweeps.backends.procs import group_members
from mfcl_sweeps.job import worker
from mfcl_sweeps.job.jobspec import JobSpec, load_session, log_path_for

ENDED = (model.COMPLETED, model.FAILED, model.CANCELLED)
CANCEL_CHECK_S = 0.2  # how often running runs' cancel markers are looked for
KILL_GRACE_S = 5.0  # a cancelled run's group: SIGTERM, then SIGKILL this long after


def say(text: str) -> None:
    print(f"mfcl-sweeps: {text}", file=sys.stderr, flush=True)


def journal(job: JobSpec, status: str, **fields: Any) -> None:
    if job.journal:
        from mfcl_sweeps.state.manifest import SweepManifest

        SweepManifest(job.sweep_dir).transition(job.planned_run, status, **fields)


def earlier_records(job: JobSpec) -> dict[str, Any]:
    """The journal's records, read only when the task may have run before (a restart)."""
    if not job.journal:
        return {}
    from mfcl_sweeps.state.manifest import SweepManifest

    return SweepManifest(job.sweep_dir).records()


def resume_attempt(job: JobSpec, rec: Any, submitted_at: float, restarts: int) -> Optional[int]:
    """None: the run ended after this task was submitted, skip it; else the attempt to run it as."""
    if rec is not None and rec.status in ENDED and (rec.end_time or 0) >= submitted_at:
        return None
    attempt = job.attempt + restarts
    if rec is not None and rec.status in (model.RUNNING, model.PREEMPTED) and (rec.start_time or 0) >= submitted_at:
        attempt = max(attempt, (rec.attempt or job.attempt) + 1)  # interrupted here: a new attempt
    return attempt


def child(session: Any, job: JobSpec, handed_off: int, prepared: Any, gpu: Optional[str]) -> None:
    """The forked run: its own group and log (and GPU, when given); never returns. It writes a
    byte to `handed_off` once its result is in place (the driver may read and remove the result
    at once)."""
    code = worker.EXIT_TASK_FAILED
    try:
        os.setpgid(0, 0)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGUSR2, signal.SIG_IGN)  # the task's (requeue on Slurm), not the run's
        if gpu is not None:
            os.environ["CUDA_VISIBLE_DEVICES"] = gpu
        worker.redirect_output(log_path_for(job.sweep_dir, job.planned_run.run_id))
        staged = dataclasses.replace(job, result_path=job.result_path + ".staged")
        ret = worker.run(session, staged, prepared=prepared)
        os.replace(staged.result_path, job.result_path)  # done for the driver: outcome journaled
        os.write(handed_off, b"1")
        code = 0 if ret.status.name == "COMPLETED" else worker.EXIT_TASK_FAILED
    except BaseException:  # noqa: BLE001 - whatever happens, the child must not return into the task
        import traceback

        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def task_gpus(environ: Mapping[str, str]) -> list[str]:
    """The GPUs the scheduler gave this task: its CUDA_VISIBLE_DEVICES (never the node's nvidia-smi
    list, which holds other jobs' GPUs too)."""
    return visible_gpus() if environ.get("CUDA_VISIBLE_DEVICES") is not None else []


def group_alive(pgid: int) -> bool:
    return bool(group_members(pgid))


@dataclasses.dataclass
class Started:
    """A run of the task that has been forked and not yet collected."""

    job: JobSpec
    marker_dir: str
    pipe: int  # read end: a byte once the result is in place, EOF once the run is gone; -1: closed
    gpu: Optional[str]
    handed_off: bool = False
    cancelled: bool = False


class Task:
    """The task's runs, `at_once` at a time; SIGTERM (scancel, requeue, qdel) is passed to them."""

    def __init__(self, session: Any, jobs: list[JobSpec], *, submitted_at: float, restarts: int,
                 runs_per_gpu: Optional[int] = None) -> None:
        self.session, self.jobs, self.submitted_at, self.restarts = session, jobs, submitted_at, restarts
        self.gpus = task_gpus(os.environ) if runs_per_gpu else []  # in turn: each run sees all of them
        self.at_once = runs_per_gpu * max(1, len(self.gpus)) if runs_per_gpu else 1
        self.gpu_load: Counter = Counter({g: 0 for g in self.gpus})
        self.running: dict[int, Started] = {}  # by pid, which is also its process group
        from mfcl_sweeps.job.config_templates import ConfigTemplates

        # runs that pick the same config groups finish one config composed here (as mfcl_local's)
        self.templates = ConfigTemplates(session)
        if len(jobs) > 1:
            # the cache composes a choice of groups at its second sight; the task knows its runs up
            # front, so the second run's is seen now and the first run's start composes the template
            # here, once, instead of the first run composing in full and run 2 composing again
            self.templates.prepare(jobs[1].overrides)
        # and what every run imports is imported once, here, not in each child
        import cloudpickle  # noqa: F401
        import hydra.core.utils  # noqa: F401

        import mfcl_sweeps.state.manifest  # noqa: F401

    def on_term(self, signum: int, frame: object) -> None:
        for pid in list(self.running):
            signal_group(pid, signal.SIGTERM)
        sys.exit(128 + signum)

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self.on_term)
        # Slurm counts restarts: a first start there need not read the journal (elsewhere it must)
        first_start = "SLURM_JOB_ID" in os.environ and not self.restarts
        records = {} if first_start else earlier_records(self.jobs[0])
        failed = 0
        for job in self.jobs:
            while len(self.running) >= self.at_once:
                failed += self.collect()
            job = self.to_run(job, records)  # decided at its turn: a cancel may have come meanwhile
            if job is not None:
                self.start(job)
        while self.running:
            failed += self.collect()
        return worker.EXIT_TASK_FAILED if failed else 0

    def to_run(self, job: JobSpec, records: Mapping[str, Any]) -> Optional[JobSpec]:
        """The job as the attempt to run now; None when it is not run (ended already, cancelled)."""
        run = job.planned_run
        marker_dir = packing.cancel_dir(job.sweep_dir, job.backend)
        rec = records.get(run.config_hash)
        attempt = resume_attempt(job, rec, self.submitted_at, self.restarts)
        if attempt is None:
            say(f"run {run.run_id} already ended in this task; not run again")
            return None
        if packing.cancel_requested(marker_dir, run.run_id):
            Path(marker_dir, run.run_id + packing.STOPPED).touch()
            return None
        if attempt != job.attempt:
            job = dataclasses.replace(job, attempt=attempt)
            if rec is not None and rec.status == model.RUNNING:
                journal(job, model.PREEMPTED, attempt=rec.attempt, error="its array task was started again")
        return job

    def start(self, job: JobSpec) -> None:
        run = job.planned_run
        gpu = min(self.gpus, key=lambda g: self.gpu_load[g]) if self.gpus else None  # the least shared
        say(f"run {run.run_id}, attempt {job.attempt}" + (f", GPU {gpu}" if gpu is not None else ""))
        prepared = self.templates.prepare(job.overrides)  # in the task, so the next run reuses it
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(read_end)
            child(self.session, job, write_end, prepared, gpu)
        os.close(write_end)
        os.set_blocking(read_end, False)
        try:
            os.setpgid(pid, pid)  # as the child does: no signal to its group can come too early
        except OSError:
            pass  # the child got there first, or is gone already
        if gpu is not None:
            self.gpu_load[gpu] += 1
        self.running[pid] = Started(job, packing.cancel_dir(job.sweep_dir, job.backend), read_end, gpu)

    def collect(self) -> int:
        """Wait a moment for runs to end, act on cancel markers, collect the runs that ended;
        how many of them failed."""
        pipes = [s.pipe for s in self.running.values() if s.pipe >= 0]
        readable, _, _ = select.select(pipes, [], [], CANCEL_CHECK_S)  # a run's end wakes it at once
        failed = 0
        for pid, started in list(self.running.items()):
            if started.pipe in readable:
                read_pipe(started)
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                del self.running[pid]
                failed += self.ended(pid, started, os.waitstatus_to_exitcode(status)) != 0
            elif not started.cancelled and packing.cancel_requested(started.marker_dir, started.job.planned_run.run_id):
                started.cancelled = True  # stopped in a thread: the task's other runs go on meanwhile
                threading.Thread(target=stop_gracefully, args=([pid], signal_group, group_alive, KILL_GRACE_S),
                                 daemon=True).start()
        return failed

    def ended(self, pid: int, started: Started, code: int) -> int:
        """A run's process is gone: its group cleared, its outcome made sure of; its exit code
        (0 when it was cancelled: not a failure of the task)."""
        signal_group(pid, signal.SIGKILL)  # what the run left in its group
        read_pipe(started)  # a byte written just before it ended
        if started.pipe >= 0:
            os.close(started.pipe)
        if started.gpu is not None:
            self.gpu_load[started.gpu] -= 1
        run = started.job.planned_run
        if started.cancelled:
            Path(started.marker_dir, run.run_id + packing.STOPPED).touch()
            say(f"run {run.run_id} cancelled")
            return 0
        if not started.handed_off:
            self.crashed(started.job, code)
        return code

    def crashed(self, job: JobSpec, code: int) -> None:
        """A run that ended without a result (os._exit, a signal): failed, journaled, handed off."""
        why = f"killed by {signal_name(code)}" if code < 0 else f"exited with code {code}"
        error = f"run process {why} and wrote no result"
        say(f"run {job.planned_run.run_id} failed: {error}")
        journal(job, model.FAILED, exit_code=code, error=error, attempt=job.attempt, end_time=time.time())
        worker.write_result(job.result_path, worker.failed_return(job.planned_run.overrides, error))


def read_pipe(started: Started) -> None:
    """What a run's pipe holds now: its hand-off byte, or EOF (the pipe is closed then)."""
    if started.pipe < 0:
        return
    try:
        data = os.read(started.pipe, 1)
    except BlockingIOError:  # nothing yet, or a process the run started still holds the write end
        return
    if data == b"1":
        started.handed_off = True
    else:
        os.close(started.pipe)
        started.pipe = -1


def run_task(session_path: str, job_list: str, task: int, runs_per_task: int, restarts: int = 0,
             runs_per_gpu: Optional[int] = None) -> int:
    from hydra.core.singleton import Singleton

    paths = packing.task_slice(json.loads(Path(job_list).read_text()), task, runs_per_task)
    jobs = [JobSpec.from_json(Path(p).read_text()) for p in paths]
    session = load_session(session_path)
    Singleton.set_state(session.singleton_state)
    # the job list is written just before the task is submitted: what ended after it, ran here
    return Task(session, jobs, submitted_at=os.stat(job_list).st_mtime, restarts=restarts,
                runs_per_gpu=runs_per_gpu).run()


def task_index(index_env: list[str], environ: Mapping[str, str]) -> int:
    for name in index_env:
        if environ.get(name, "") != "":
            return int(environ[name])
    return 0  # a single job (no array): its one task


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m mfcl_sweeps.backends.pack_task",
                                description="One packed array task of an mfcl sweep: its runs.")
    p.add_argument("session")
    p.add_argument("jobs", help="JSON list of job files; task T runs entries T*K .. T*K+K-1")
    p.add_argument("--runs-per-task", type=int, required=True)
    p.add_argument("--runs-per-gpu", type=int, help="run them side by side, this many per GPU of the task")
    p.add_argument("--index-env", default="PBS_ARRAY_INDEX,PBS_ARRAYID,SLURM_ARRAY_TASK_ID",
                   help="comma-separated variables holding the array index, first set wins (none: task 0)")
    args = p.parse_args(argv)
    restarts = int(os.environ.get("SLURM_RESTART_COUNT") or 0)  # PBS front ends over Slurm count them too
    return run_task(args.session, args.jobs, task_index(args.index_env.split(","), os.environ),
                    args.runs_per_task, restarts, args.runs_per_gpu)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
