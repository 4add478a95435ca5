"""The one driver loop shared by every mfcl launcher.

Submits through a backend as its capacity allows, polls, reads each result as it lands (never in
submission order), retries with backoff, journals what the worker itself could not (a killed or
timed-out job), and returns JobReturns in input order, as Hydra's launcher contract requires.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import shlex
import signal
import time
from typing import Any, Iterable, NoReturn, Optional

from mfcl_sweeps import model
from mfcl_sweeps.backends.base import Backend, JobHandle, JobRequest, JobState
from mfcl_sweeps.errors import DiskError, MfclError
from mfcl_sweeps.fsio import FULL
from mfcl_sweeps.job.failures import failed_return, failure_summary, restore_traceback
from mfcl_sweeps.job.jobspec import (
    STDERR_TAIL_LINES,
    JobSpec,
    job_path_for,
    log_path_for,
    log_tail,
    read_result,
    read_result_bytes,
    result_path_for,
    run_to_dict,
)
from mfcl_sweeps.launch.interrupt import Interrupted, StopSignals, SweepInterrupted, say
from mfcl_sweeps.launch.output import JobOutput
from mfcl_sweeps.launch.progress import Progress
from mfcl_sweeps.model import PlannedRun

log = logging.getLogger(__name__)


@dataclasses.dataclass
class RetryPolicy:
    retries: int = 0
    backoff_s: float = 1.0  # doubled after each failed attempt

    def delay(self, attempt: int) -> float:
        return self.backoff_s * (2 ** (attempt - 1))


def make_request(run: PlannedRun, overrides: list[str], *, sweep_dir: str, session_path: str,
                 backend: str = "", attempt: int = 1, env_set: Optional[dict] = None) -> JobRequest:
    spec = JobSpec(
        overrides=list(overrides), index=run.index, run=run_to_dict(run),
        result_path=result_path_for(sweep_dir, run.run_id, attempt), sweep_dir=sweep_dir,
        session_path=session_path, attempt=attempt, backend=backend, env_set=dict(env_set or {}),
    )
    return JobRequest(run=run, spec=spec, job_path=job_path_for(sweep_dir, run.run_id, attempt),
                      log_path=log_path_for(sweep_dir, run.run_id))


def next_attempt(req: JobRequest) -> JobRequest:
    spec = dataclasses.replace(
        req.spec, attempt=req.spec.attempt + 1,
        result_path=result_path_for(req.spec.sweep_dir, req.run.run_id, req.spec.attempt + 1))
    return dataclasses.replace(req, spec=spec, job_path=job_path_for(req.spec.sweep_dir, req.run.run_id, spec.attempt))


class DriverJournal:
    """The driver's side of journaling; a no-op when the launch has no manifest."""

    def __init__(self, manifest: Any, backend_name: str) -> None:
        self.manifest, self.backend_name = manifest, backend_name
        self.unjournaled: list[tuple[PlannedRun, Any]] = []  # (run, attempt) whose line a full disk refused

    def __call__(self, run: PlannedRun, status: str, **fields: Any) -> None:
        self.many([(run, status, fields)])

    def many(self, changes: list[tuple[PlannedRun, str, dict]]) -> None:
        """(run, status, fields) lines in one append (one fsync, however many runs)."""
        if self.manifest is not None and changes:
            try:
                self.manifest.transitions([(run, status, {"backend": self.backend_name, **fields})
                                           for run, status, fields in changes])
            except DiskError:
                self.unjournaled.extend((run, fields.get("attempt")) for run, _, fields in changes)
                raise

    def full_disk_stopped(self, handles: list[JobHandle], err: DiskError) -> None:
        """The runs a full disk stopped, journaled `interrupted` in space the journal keeps for
        it; without that space they are shown `lost` (docs/manifest.md#full-disks-and-read-only-sweep-dirs)."""
        if self.manifest is None:
            return
        runs = [*self.unjournaled, *((h.request.run, h.request.spec.attempt) for h in handles)]
        stopped = [(run, attempt) for run, attempt in runs if self.status_of(run) != model.COMPLETED]
        try:
            self.manifest.interrupt_on_full_disk(stopped, f"stopped by a full disk: {err}")
        except (OSError, MfclError) as again:
            log.error("mfcl: %d stopped run(s) not journaled interrupted: %s", len(stopped), again)

    def status_of(self, run: PlannedRun) -> Optional[str]:
        if self.manifest is None:
            return None
        self.manifest.refresh()  # the new lines only, then one lookup (not a copy of every record)
        record = self.manifest.record(run.config_hash)
        return record.status if record is not None else None


def _discard(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _outcome(req: JobRequest, state: JobState) -> tuple[Any, bool, Optional[bytes]]:
    """(JobReturn, worker_journaled, the bytes it was read from: None for a made-up failure) for a
    finished handle."""
    import cloudpickle
    from hydra.core.utils import JobStatus

    pickled = read_result_bytes(req.spec.result_path)
    ret = None if pickled is None else restore_traceback(cloudpickle.loads(pickled))
    _discard(req.spec.result_path)  # it may hold secrets (the task's config): nothing keeps it on disk
    if ret is not None and (state.error is None or (ret.status == JobStatus.COMPLETED and not state.run_failed)):
        return ret, req.spec.journal, pickled
    error = state.error or f"job exited with code {state.exit_code} and wrote no result"
    tail = log_tail(req.log_path, 5)
    if tail and state.error is None:
        error = f"{error}: {tail.splitlines()[-1][:300]}"
    return failed_return(req.run.overrides, error), False, None


CANCEL_JOURNAL_WAIT_S = 2.0  # `mfcl-sweeps cancel` journals a run once its process is gone


def cancelled_by_user(journal: DriverJournal, run: PlannedRun, state: JobState) -> bool:
    """Whether `mfcl-sweeps cancel` stopped this run. Its line lands just after the process it
    killed is gone, so a run ended by SIGTERM/SIGKILL that the driver did not send is given a
    moment for that line before it counts as failed."""
    killed = state.exit_code in (-signal.SIGTERM, -signal.SIGKILL) \
        and (state.error or "").startswith("job process killed")
    deadline = time.monotonic() + (CANCEL_JOURNAL_WAIT_S if killed else 0.0)
    while True:
        if journal.status_of(run) == model.CANCELLED:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)


def journal_outcome(journal: DriverJournal, req: JobRequest, ret: Any, state: JobState) -> None:
    """Journal a finished job for a worker that could not (killed, or journal out of its reach)."""
    from mfcl_sweeps.job.worker import outcome

    status, fields = outcome(ret)
    if status == model.FAILED:
        if state.exit_code is not None:
            fields["exit_code"] = state.exit_code
        fields["stderr_tail"] = log_tail(req.log_path, STDERR_TAIL_LINES) or None
    journal(req.run, status, end_time=time.time(), attempt=req.spec.attempt, **{**fields, **state.fields})


def run_jobs(backend: Backend, requests: Iterable[JobRequest], *, manifest: Any = None,
             retry: RetryPolicy = RetryPolicy(), launch_delay: float = 0.0,
             progress: Optional[Progress] = None, output: Optional[JobOutput] = None) -> list[Any]:
    """Run every request; `requests` is consumed lazily, as the backend has room, so the first
    job of a huge sweep starts before the rest is even planned. A stop signal (SIGINT, SIGTERM,
    SIGHUP) ends the launch as `stop_launch` says, by `SweepInterrupted`."""
    from hydra.core.utils import JobStatus

    from mfcl_sweeps.launch.returns import ConfigSpill, slim

    journal = DriverJournal(manifest, backend.name)
    spill = ConfigSpill()  # finished runs' configs wait there, not in memory
    source = enumerate(requests)
    results: dict[int, Any] = {}
    retrying: list[tuple[float, int, JobRequest]] = []  # (not before, input position, request)
    active: dict[str, tuple[int, JobHandle]] = {}
    progress = progress or Progress(0, live=False)
    output = output or JobOutput("quiet")
    failed: list[PlannedRun] = []
    last_submit = -float("inf")
    exhausted = False
    stop = StopSignals()
    try:
        stop.install()
        while not stop.pending:
            now = time.monotonic()
            ready: list[tuple[int, JobRequest]] = []
            cap = backend.capacity()
            while cap is None or len(ready) < cap:
                if launch_delay and (ready or now - last_submit < launch_delay):
                    break
                due = [item for item in retrying if item[0] <= now]
                if due:
                    retrying.remove(due[0])
                    ready.append(due[0][1:])
                    continue
                if exhausted:
                    break
                nxt = next(source, None)
                if nxt is None:
                    exhausted = True
                    break
                ready.append(nxt)
            if not ready and not active and not retrying and exhausted:
                break
            if ready:
                last_submit = now
                for _, req in ready:
                    req.spec.write(req.job_path)
                    output.submitting(req)
                order = {r.key: i for i, r in ready}
                for submission in backend.plan([r for _, r in ready]):
                    if stop.pending:
                        break
                    submitted = []
                    for handle in backend.submit(submission):
                        active[handle.key] = (order[handle.key], handle)
                        queued = handle.data.get("queued", backend.queues_jobs)  # per handle: mfcl_pool mixes kinds
                        if queued or not handle.request.spec.journal:
                            # the worker journals once it runs (if it can); record the backend id now
                            submitted.append((handle.request.run, model.PENDING if queued else model.RUNNING,
                                              {"backend_job_id": handle.backend_job_id, "start_time": time.time(),
                                               "attempt": handle.request.spec.attempt,
                                               **handle.data.get("journal_fields", {})}))
                    # one append per submission (an array of 1,000 runs: one fsync, not 1,000), written
                    # before the next one is submitted, so its runs' own lines rarely come first
                    journal.many(submitted)
            changed = False
            if active:
                for key, state in backend.poll([h for _, h in active.values()]).items():
                    if not state.done:
                        continue
                    changed = True
                    idx, handle = active.pop(key)
                    req = handle.request
                    if state.preempted and read_result(req.spec.result_path) is None:
                        output.finished(key, ok=True)
                        # ended by its backend (a lost host), not by the task: requeue at once,
                        # without spending one of the run's retries
                        journal(req.run, model.PREEMPTED, error=state.error, attempt=req.spec.attempt, **state.fields)
                        log.warning("run %s preempted (%s), requeued", req.run.run_id, state.error)
                        retrying.append((time.monotonic(), idx, next_attempt(req)))
                        continue
                    ret, journaled, pickled = _outcome(req, state)
                    ok = ret.status == JobStatus.COMPLETED
                    output.finished(key, ok)
                    cancelled = not journaled and cancelled_by_user(journal, req.run, state)
                    if cancelled:  # `mfcl-sweeps cancel` stopped it: keep that state, no retry
                        ret = failed_return(req.run.overrides, "cancelled (mfcl-sweeps cancel)")
                    elif not journaled:
                        journal_outcome(journal, req, ret, state)
                    if not ok and not cancelled and req.spec.attempt <= retry.retries:
                        delay = retry.delay(req.spec.attempt)
                        log.warning("run %s failed (attempt %d), retrying in %.1fs",
                                    req.run.run_id, req.spec.attempt, delay)
                        retrying.append((time.monotonic() + delay, idx, next_attempt(req)))
                        continue
                    results[idx] = slim(ret, spill, pickled)  # memory flat in the number of runs
                    if not ok and not cancelled:
                        failed.append(req.run)
                    progress.finished(ok, req.run.run_id, "cancelled" if cancelled else None)
            output.pump()
            progress.update(running=len(active))
            if not changed and not ready:
                try:
                    with stop.interruptible():
                        backend.wait(backend.poll_interval)
                except Interrupted:
                    pass
        if stop.pending:
            progress.close()
            handles = [h for _, h in active.values()]
            active.clear()
            stop_launch(backend, handles, journal, stop)
    except BaseException as err:
        if active:
            backend.cancel([h for _, h in active.values()])
        if isinstance(err, DiskError) and err.errno in FULL:
            journal.full_disk_stopped([h for _, h in active.values()], err)
        raise
    finally:
        stop.restore()
        progress.close()
        backend.close()
    report_failures(manifest, failed)
    return [results[i] for i in sorted(results)]


def report_failures(manifest: Any, failed: list[PlannedRun]) -> None:
    """After a launch with failed runs: the ends of the first tracebacks and where the rest is."""
    if not failed or manifest is None:
        return
    records = manifest.records()
    found = sorted((records[run.config_hash] for run in failed if run.config_hash in records), key=lambda r: r.index)
    if found:
        log.error("%s", failure_summary(found, manifest.sweep_dir))


def stop_launch(backend: Backend, handles: list[JobHandle], journal: DriverJournal, stop: StopSignals) -> NoReturn:
    """After a stop signal: stop the running jobs (at once on a second signal), journal them
    `interrupted`, write the manifest, say so in one line and exit 128 + signal."""
    stop.acknowledge()
    try:
        with stop.interruptible():
            backend.cancel(handles)
    except Interrupted:
        stop.acknowledge()
        backend.kill(handles)
    stopped = [h for h in handles if journal.status_of(h.request.run) != model.COMPLETED]
    for h in stopped:
        journal(h.request.run, model.INTERRUPTED, end_time=time.time(), attempt=h.request.spec.attempt,
                error=f"interrupted by {signal.Signals(stop.signum).name}")
    sweep_dir, not_started = "", 0
    if journal.manifest is not None:
        sweep_dir = journal.manifest.sweep_dir
        try:
            not_started = journal.manifest.counts().get(model.PENDING, 0)
            journal.manifest.write_snapshot()
        except (OSError, MfclError) as err:
            log.error("mfcl: sweep_manifest.json not written: %s", err)
    line = (f"interrupted: {len(stopped)} runs stopped, {not_started} not started; "
            f"mfcl-sweeps resume {shlex.quote(sweep_dir)}")
    say(line)
    raise SweepInterrupted(stop.signum, line)
