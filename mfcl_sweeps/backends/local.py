"""Local backend: every job in its own process group on this machine.

Jobs are forked from the driver, which has already imported Hydra and the task (warm start,
no interpreter start-up per job), unless the driver has initialized CUDA: such a process cannot
be forked safely and its children ignore their CUDA_VISIBLE_DEVICES, so jobs then start as fresh
interpreters (`python -m mfcl_sweeps.worker`). Either way a crash, `os._exit` or kill of one
job never reaches the driver, and each job runs under its own supervisor (job/supervise.py):
no process of a job outlives it or the driver, whatever signal ends the driver.
"""
from __future__ import annotations

import gc
import logging
import os
import select
import signal
import sys
import time
import traceback
from typing import Any, NoReturn, Optional, Sequence

from mfcl_sweeps.backends.base import Backend, JobHandle, JobRequest, JobState, Submission
from mfcl_sweeps.backends.children import GpuPool, overdue_reason, signal_name, visible_gpus
from mfcl_sweeps.config import LocalLauncherConf
from mfcl_sweeps.errors import MfclError
from mfcl_sweeps.job import supervise
from mfcl_sweeps.job.jobspec import worker_argv
from mfcl_sweeps.options import options_type

log = logging.getLogger(__name__)
EXIT_UNKNOWN = 255  # a job reaped before its status could be read
SUPERVISOR_MARGIN_S = 2.0  # how long a supervisor may take to stop its job's tree once told


def cuda_driver_loaded(maps: Optional[str] = None) -> bool:
    """Whether this process has loaded the CUDA driver library. `torch.cuda.is_available()`, a
    CUDA tensor, JAX and TensorFlow all load it (and call cuInit); from then on a fork is unsafe
    and children ignore their CUDA_VISIBLE_DEVICES, while `torch.cuda.is_initialized()` can
    still say False. `maps`: the text of /proc/self/maps (read when not given)."""
    if maps is None:
        try:
            with open("/proc/self/maps") as f:
                maps = f.read()
        except OSError:  # not Linux
            return False
    return any(os.path.basename(line.rsplit(" ", 1)[-1]).startswith("libcuda.so") for line in maps.splitlines())


def cuda_initialized() -> bool:
    torch = sys.modules.get("torch")
    try:
        if torch is not None and torch.cuda.is_initialized():
            return True
    except Exception:
        pass
    return cuda_driver_loaded()


def pidfd_of(pid: int) -> Optional[int]:
    """A descriptor that becomes readable when `pid` exits (Linux >= 5.3), else None."""
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):
        return None


LocalOptions = options_type(LocalLauncherConf)  # declared, with their checks, in mfcl_sweeps.config


class LocalBackend(Backend):
    name = "local"
    conf = LocalLauncherConf
    poll_interval = 0.1  # wait() wakes at once when a job exits; this paces timeout checks

    def __init__(self, options: LocalOptions, *, session: Any = None) -> None:
        self.options = options
        self.session = session  # the in-memory session, for forked jobs
        self.running: dict[str, JobHandle] = {}
        self.max_concurrent = options.max_concurrent or os.cpu_count() or 1
        self.gpus = GpuPool(visible_gpus(options.gpus) if options.gpus_per_job else ())
        self.templates: Any = None  # composed configs forked jobs finish from (mfcl_sweeps.job.config_templates)
        self._fork_safe: Optional[bool] = None
        if options.gpus_per_job and len(self.gpus) < options.gpus_per_job:
            raise MfclError(f"hydra.launcher.gpus_per_job={options.gpus_per_job} but only "
                            f"{len(self.gpus)} GPU(s) are visible ({self.gpus.ids}); "
                            "lower gpus_per_job or set hydra.launcher.gpus=[...]")

    # -- planning (pure) -------------------------------------------------------------------
    def use_fork(self) -> bool:
        method = self.options.start_method
        if method == "spawn" or self.session is None:
            return False
        if self._fork_safe is None:  # the driver runs no task code between jobs: once per launch
            self._fork_safe = not cuda_initialized()
            if not self._fork_safe and method == "auto":
                log.info("mfcl_local: CUDA is initialized in this process, so jobs start as fresh interpreters")
        return method == "fork" or self._fork_safe

    def argv(self, request: JobRequest) -> list[str]:
        return worker_argv((self.options.python or sys.executable), request.spec.session_path, request.job_path)

    def plan(self, requests: Sequence[JobRequest]) -> list[Submission]:
        return [Submission(requests=[r], commands=[self.argv(r)]) for r in requests]

    def capacity(self) -> Optional[int]:
        free = self.max_concurrent - len(self.running)
        if self.options.gpus_per_job:
            free = min(free, len(self.gpus.free) // self.options.gpus_per_job)
        return max(free, 0)

    # -- running ------------------------------------------------------------------------------
    def job_env(self, request: JobRequest, gpus: list[str]) -> dict[str, str]:
        env = {}
        if self.options.gpus_per_job:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(gpus)
        return env

    def submit(self, submission: Submission) -> list[JobHandle]:
        handles = []
        for request, argv in zip(submission.requests, submission.commands):
            gpus = self.gpus.take(self.options.gpus_per_job)
            env = self.job_env(request, gpus)
            os.makedirs(os.path.dirname(request.log_path), exist_ok=True)
            command = None if self.use_fork() else argv
            prepared = self._prepare(request) if command is None else None
            data: dict[str, Any] = {"gpus": gpus, "pid": self._start(request, env, command, prepared)}
            data["pidfd"] = pidfd_of(data["pid"])
            handle = JobHandle(request=request, backend_job_id=str(data["pid"]), started=time.monotonic(), data=data)
            self.running[handle.key] = handle
            handles.append(handle)
        return handles

    def _prepare(self, request: JobRequest) -> Any:
        if self.templates is None:
            from mfcl_sweeps.job.config_templates import ConfigTemplates

            self.templates = ConfigTemplates(self.session)
        return self.templates.prepare(request.spec.overrides)

    def _start(self, request: JobRequest, env: dict[str, str], command: Optional[list[str]], prepared: Any) -> int:
        """Fork the job's supervisor (job/supervise.py), which forks the job: `command` exec'd
        (a fresh interpreter), or without one a forked worker. Returns the supervisor's pid."""
        sys.stdout.flush()
        sys.stderr.flush()
        driver = os.getpid()
        # A stop signal landing during fork is kept pending for the driver's own handler, not
        # raised inside an after-fork hook (where Python drops it) or in the child.
        old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, supervise.GRACEFUL)
        try:
            pid = os.fork()
            if pid == 0:
                # The heap inherited from the driver is moved out of the child's collector: its
                # garbage collections would otherwise write to every page of it and copy the
                # driver's heap. Frozen here, not in the driver: a freeze in the driver before
                # each fork moved each run's not yet collected garbage (the unpickled result's
                # configs, ~830 objects) where no collection ever looks, ~115 KB lost per run.
                gc.freeze()
                try:
                    supervise.supervise(lambda: self._job(request, env, command, prepared),
                                        grace_s=self.options.kill_grace_s, parent=driver)
                finally:
                    os._exit(1)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
        return pid

    def _job(self, request: JobRequest, env: dict[str, str], command: Optional[list[str]], prepared: Any) -> NoReturn:
        code = 1
        try:
            fd = os.open(request.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            os.dup2(fd, 1)
            os.dup2(fd, 2)
            os.close(fd)
            null = os.open(os.devnull, os.O_RDONLY)
            os.dup2(null, 0)
            os.environ.update(env)
            if command is not None:
                os.execvp(command[0], command)
            from hydra.core.utils import JobStatus

            from mfcl_sweeps.job import worker

            ret = worker.run(self.session, request.spec, prepared=prepared)
            code = 0 if ret.status == JobStatus.COMPLETED else worker.EXIT_TASK_FAILED
        except MfclError as err:  # e.g. a full disk (DiskError): one line in the job's log
            print(f"mfcl: {err}", file=sys.stderr)
        except BaseException:
            traceback.print_exc()
        finally:
            try:
                sys.stdout.flush()
                sys.stderr.flush()
            finally:
                os._exit(code)

    def poll(self, handles: Sequence[JobHandle]) -> dict[str, JobState]:
        states = {}
        now = time.monotonic()
        for h in handles:
            pid = h.data["pid"]
            code = self._exit_code(h)
            if code is not None:
                error = h.data.get("kill_reason")
                if error is None and code < 0:
                    error = f"job process killed by {signal_name(code)}"
                states[h.key] = JobState(done=True, exit_code=code, error=error)
                self._release(h)
                continue
            reason = self._overdue(h, now)
            if reason and "kill_reason" not in h.data:
                h.data["kill_reason"] = reason
                self._stop_now(pid)
            states[h.key] = JobState(done=False, running=True)
        return states

    def wait(self, timeout: float) -> None:
        """Wake as soon as any job exits (pidfds), so a free slot is refilled at once."""
        fds = [h.data["pidfd"] for h in self.running.values() if h.data.get("pidfd") is not None]
        if fds:
            select.select(fds, [], [], timeout)
        else:
            time.sleep(timeout)

    @staticmethod
    def _exit_code(h: JobHandle, block: bool = False) -> Optional[int]:
        """The job's exit code (negative: killed by that signal), or None while it runs."""
        if "exit_code" not in h.data:
            try:
                done_pid, status = os.waitpid(h.data["pid"], 0 if block else os.WNOHANG)
            except ChildProcessError:  # reaped already (its status went with it): it has ended
                h.data["exit_code"] = EXIT_UNKNOWN
                return EXIT_UNKNOWN
            if not done_pid:
                return None
            h.data["exit_code"] = os.waitstatus_to_exitcode(status)
        return h.data["exit_code"]

    def _overdue(self, h: JobHandle, now: float) -> Optional[str]:
        return overdue_reason(h, now, self.options.timeout, self.options.idle_timeout)

    @staticmethod
    def _kill(pid: int, sig: int) -> None:
        try:
            os.killpg(pid, sig)  # the job's supervisor leads the job's process group
        except ProcessLookupError:
            pass

    @staticmethod
    def _stop_now(pid: int) -> None:
        """SIGKILL for the job and every process below it, through its supervisor."""
        try:
            os.kill(pid, signal.SIGUSR1)
        except ProcessLookupError:
            pass

    def _release(self, h: JobHandle) -> None:
        self.running.pop(h.key, None)
        if h.data.get("pidfd") is not None:
            os.close(h.data.pop("pidfd"))
        self.gpus.release(h.data.get("gpus", []))

    def cancel(self, handles: Sequence[JobHandle]) -> None:
        # SIGTERM reaches the job's group; its supervisor then stops every process below it and
        # kills what is left after kill_grace_s. The group's SIGKILL is the fallback.
        for h in handles:
            if "exit_code" not in h.data:  # a reaped supervisor's pid may be another process's now
                self._kill(h.data["pid"], signal.SIGTERM)
        self._wait_ended(handles, self.options.kill_grace_s + SUPERVISOR_MARGIN_S)

    def kill(self, handles: Sequence[JobHandle]) -> None:
        for h in handles:
            if "exit_code" not in h.data:
                self._stop_now(h.data["pid"])
        self._wait_ended(handles, SUPERVISOR_MARGIN_S)

    def _wait_ended(self, handles: Sequence[JobHandle], grace_s: float) -> None:
        deadline = time.monotonic() + grace_s
        alive = list(handles)
        while alive and time.monotonic() < deadline:
            alive = [h for h in alive if self._exit_code(h) is None]
            if alive:
                time.sleep(0.05)
        for h in alive:
            self._kill(h.data["pid"], signal.SIGKILL)
            self._exit_code(h, block=True)
        for h in handles:
            self._release(h)

    @classmethod
    def from_options(cls, raw: Any, *, session: Any) -> LocalBackend:
        return cls(cls.check_options(raw), session=session)

    @classmethod
    def cancel_records(cls, records: Sequence[Any]) -> Any:
        """`mfcl-sweeps cancel` for runs this backend started (they lead their own process groups)."""
        from mfcl_sweeps.backends.procs import cancel_records as cancel_process_groups

        return cancel_process_groups(records)
