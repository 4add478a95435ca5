"""One host's runtime state (`Host`) and one job on it (`RemoteJob`: its ssh channel, the
supervisor's pid, its output and outcome, the copy of its result back into the local sweep dir).
A RemoteJob reports to its backend (logs, health, finished) through the calls named in
`SshBackend`; the host state it changes is guarded by the backend's lock."""
from __future__ import annotations

import logging
import os
import subprocess
import threading
import time
from typing import TYPE_CHECKING, Any, Optional

from mfcl_sweeps.backends.base import JobRequest, JobState
from mfcl_sweeps.backends.ssh.health import HostHealth
from mfcl_sweeps.backends.ssh.paths import RemoteLayout, job_dir_of, localize_return
from mfcl_sweeps.backends.ssh.strategy import HostLoad
from mfcl_sweeps.backends.sshclient import commands as cmd
from mfcl_sweeps.backends.sshclient.hosts import HostSpec, SshOptions
from mfcl_sweeps.backends.sshclient.transport import SSH_FAILED, HostConn
from mfcl_sweeps.fsio import atomic_write

if TYPE_CHECKING:
    from mfcl_sweeps.backends.ssh.agent_channel import AgentChannel
    from mfcl_sweeps.backends.ssh.backend import SshBackend

log = logging.getLogger(__name__)


class Host:
    """One host's runtime state; counters change under the backend's lock."""

    def __init__(self, spec: HostSpec, opts: SshOptions, control_dir: Optional[str], project_dir: str) -> None:
        self.spec = spec
        self.conn = HostConn(spec, opts, control_dir)
        self.python = spec.python or opts.python
        self.workdir = spec.workdir or opts.workdir or (project_dir if spec.is_local else None)
        self.env = {**opts.env, **spec.env}
        self.health = HostHealth()
        self.running = 0
        self.started = 0
        self.layout: Optional[RemoteLayout] = None
        self.session_sent = False
        self.last_check = 0.0
        self.agent: Optional[AgentChannel] = None  # with hydra.launcher.agent: this host's agent, once started

    @property
    def label(self) -> str:
        return self.spec.label

    def load(self) -> HostLoad:
        return HostLoad(slots=self.spec.slots, running=self.running, started=self.started,
                        weight=float(self.spec.weight), enabled=self.health.enabled)


class RemoteJob:
    """One job on one host: its ssh channel, the supervisor's pid, and its outcome."""

    def __init__(self, backend: "SshBackend", host: Optional[Host], request: JobRequest) -> None:
        self.backend, self.host, self.request = backend, host, request
        self.pid: Optional[int] = None
        self.exit_code: Optional[int] = None
        self.proc: Optional[subprocess.Popen] = None
        self.state: Optional[JobState] = None
        self.stop_reason: Optional[str] = None
        self.confirming = False
        self.started = time.monotonic()
        self._pid_seen = threading.Event()
        self._stderr_tail: list[str] = []

    # -- start (driver thread) ------------------------------------------------------------
    def start(self, script: str) -> None:
        os.makedirs(os.path.dirname(self.request.log_path), exist_ok=True)
        with open(self.request.log_path, "ab") as out:
            self.proc = self.host.conn.start(script, out)
        self._reader = threading.Thread(target=self._read_stderr, daemon=True)
        self._reader.start()

    def wait_started(self, deadline: float) -> None:
        """Until the supervisor reports the job's pid (journaled at submit), then follow the job."""
        if self.proc is None:  # never started (no free slot, or staging failed): its state is set
            return
        while not self._pid_seen.wait(0.05):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                break
        threading.Thread(target=self._follow, args=(self._reader,), daemon=True).start()

    def _read_stderr(self) -> None:
        for raw in self.proc.stderr:
            line = raw.decode(errors="replace").rstrip("\n")
            if line.startswith(cmd.PID_MARK + " "):
                self.pid = int(line.split()[1])
                self._pid_seen.set()
            elif line.startswith(cmd.EXIT_MARK + " "):
                self.exit_code = int(line.split()[1])
            elif line.strip():
                self._stderr_tail = (self._stderr_tail + [line])[-5:]
                self.backend.logs.host(self.host.label, f"{self.request.run.run_id}: {line}")
        self._pid_seen.set()

    def stop(self, reason: str) -> None:
        """Close the channel's stdin: the supervisor then kills the job's group (TERM, grace, KILL)."""
        if self.stop_reason is None:
            self.stop_reason = reason
        if self.proc is not None and self.proc.stdin and not self.proc.stdin.closed:
            try:
                self.proc.stdin.close()
            except OSError:
                pass

    # -- follow (own thread) --------------------------------------------------------------
    def _follow(self, reader: threading.Thread) -> None:
        try:
            self._outcome(reader)
        except Exception as exc:  # never leave the driver waiting on a job nobody follows
            log.exception("ssh job %s: following it failed", self.request.run.run_id)
            if self.state is None:
                self._finish(JobState(done=True, error=f"ssh launcher error: {exc!r}",
                                      fields={"host": self.host.label}), host_ok=None)

    def _outcome(self, reader: threading.Thread) -> None:
        self.proc.wait()
        reader.join()
        if self.exit_code is not None:
            self._collected(self._collect())
            return
        detail = self._stderr_tail[-1] if self._stderr_tail else f"ssh exit code {self.proc.returncode}"
        self._ended_unreported(detail, self.proc.returncode)

    def _collected(self, ok: Optional[bool]) -> None:
        """The job reported its exit code; `ok` says how collecting its result went (`_collect`)."""
        host = self.host
        if ok is None:  # finished there, but its result could not be fetched: run it again
            self.backend.disable(host, "unreachable while collecting results")
            self._finish(JobState(done=True, preempted=True, error=f"results lost with host {host.label}",
                                  fields={"host": host.label}), host_ok=None)
            return
        error = self.stop_reason
        if error is None and self.exit_code < 0:
            error = f"job process killed by signal {-self.exit_code} on {host.label}"
        self._finish(JobState(done=True, exit_code=self.exit_code, error=error, fields={"host": host.label}),
                     host_ok=self.exit_code == 0 if self.stop_reason is None else None)

    def _ended_unreported(self, detail: str, ssh_code: Optional[int]) -> None:
        """The channel ended before the job's exit code came back: stopped, never started, or lost."""
        b, host, run_id = self.backend, self.host, self.request.run.run_id
        if self.stop_reason is not None:  # stopped before it could report: it is gone with its channel
            self._finish(JobState(done=True, exit_code=None, error=self.stop_reason, fields={"host": host.label}),
                         host_ok=None)
            return
        if self.pid is None and ssh_code != SSH_FAILED:
            # the host answered but the supervisor never started (python missing, bad workdir...)
            self._finish(JobState(done=True, exit_code=ssh_code,
                                  error=f"could not start on {host.label}: {detail}", fields={"host": host.label}),
                         host_ok=False)
            return
        b.logs.host(host.label, f"{run_id}: connection lost ({detail})")
        b.check_reachable(host, detail)
        self._confirm_gone(detail)

    def _confirm_gone(self, detail: str) -> None:
        """Re-send only once the job cannot still be running there."""
        b, host = self.backend, self.host
        self.confirming = True
        deadline = time.monotonic() + b.opts.dead_after_s
        why = None
        while why is None:
            if self.pid is None:
                why = "it never started"
                break
            res = host.conn.run(cmd.group_alive_script(self.pid), timeout=b.opts.connect_timeout_s + 5)
            out = res.out.decode(errors="replace")
            if res.ok and "gone" in out:
                why = f"process group {self.pid} confirmed gone"
            elif res.ok and "alive" in out:
                host.conn.run(cmd.kill_group_script(self.pid, b.opts.kill_grace_s))
            elif time.monotonic() > deadline:
                why = f"host declared dead after {b.opts.dead_after_s:g}s"
            else:
                time.sleep(min(1.0, max(0.05, deadline - time.monotonic())))
        b.logs.host(host.label, f"{self.request.run.run_id}: re-sending ({why})")
        self._finish(JobState(done=True, preempted=True, error=f"connection to {host.label} lost ({detail}); {why}",
                              fields={"host": host.label}), host_ok=False)

    def _collect(self) -> Optional[bool]:
        """Copy result and job dir back; False: no result there; None: the host did not answer."""
        host, req = self.host, self.request
        layout = host.layout
        rpath = layout.result_path(req.run.run_id, req.spec.attempt)
        for _ in range(3):
            res = host.conn.run(cmd.cat_script(rpath), timeout=self.backend.opts.connect_timeout_s + 300)
            if res.code != SSH_FAILED:
                break
            time.sleep(0.5)
        if res.code == SSH_FAILED:
            return None
        if not res.ok:
            return False
        ret = self.load_result(res.out)
        if ret is None:
            return True
        remote_dir = job_dir_of(ret, layout)
        if remote_dir:
            got = host.conn.fetch_dir(remote_dir, layout.paths.to_local(remote_dir))
            if got.code == SSH_FAILED:
                return None
            if not got.ok:
                self.backend.logs.host(host.label,
                                       f"{req.run.run_id}: copying {remote_dir} back failed: {got.err.strip()}")
        self.store_result(ret)
        return True

    def load_result(self, raw: bytes) -> Any:
        """The host's JobReturn; None when it does not load here (its bytes are handed on as they
        are, and the driver reports it)."""
        import cloudpickle

        try:
            return cloudpickle.loads(raw)
        except Exception as exc:
            self.backend.logs.host(self.host.label, f"{self.request.run.run_id}: result not loadable locally: {exc!r}")
            atomic_write(self.request.spec.result_path, raw)
            return None

    def store_result(self, ret: Any) -> None:
        """The JobReturn where the driver reads it, its paths pointing at the local copy."""
        import cloudpickle

        atomic_write(self.request.spec.result_path, cloudpickle.dumps(localize_return(ret, self.host.layout.paths)))

    def _finish(self, state: JobState, host_ok: Optional[bool]) -> None:
        self.backend.job_finished(self, host_ok)
        self.state = state
