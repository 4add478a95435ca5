"""One host's agent (`hydra.launcher.agent: true`): a single channel of the host's multiplexed
connection running `ssh_agent`, spoken to in JSON lines (protocol in `sshclient/agent.py`).

Three threads per channel: one reads the agent's events (pids, output, exits, tar replies) and
hands them to the jobs; one logs the channel's stderr; one collects finished jobs in batches:
their results came with their exit events, and the job dirs of every job finished meanwhile
come back in one tar stream over the same channel (over `TAR_LIMIT` bytes, each dir is copied
through the multiplexed connection instead). When the channel ends, every job still on it is
treated as its own channel dropping today: re-sent once confirmed gone (`RemoteJob`).
"""
from __future__ import annotations

import base64
import itertools
import json
import logging
import os
import subprocess
import threading
from typing import TYPE_CHECKING, Any, Optional

from mfcl_sweeps.backends.ssh.paths import job_dir_of
from mfcl_sweeps.backends.sshclient.transport import SSH_FAILED, unpack_tar

if TYPE_CHECKING:
    from mfcl_sweeps.backends.ssh.agent_job import AgentJob
    from mfcl_sweeps.backends.ssh.backend import SshBackend
    from mfcl_sweeps.backends.ssh.job import Host

log = logging.getLogger(__name__)

TAR_LIMIT = 32 << 20  # bytes of job dirs per batch sent in-band; larger ones go through their own copy


class AgentChannel:
    def __init__(self, backend: "SshBackend", host: "Host", script: str) -> None:
        self.backend, self.host = backend, host
        self.cond = threading.Condition()  # guards jobs, replies, to_collect, lost, closing
        self.write_lock = threading.Lock()  # stdin only: never held while waiting for the agent
        self.jobs: dict[str, AgentJob] = {}
        self.replies: dict[str, dict] = {}
        self.to_collect: list[tuple[AgentJob, Optional[bytes]]] = []
        self.lost: Optional[str] = None
        self.closing = False
        self._ids = itertools.count()
        self._stderr_tail: list[str] = []
        try:
            self.proc: Optional[subprocess.Popen] = host.conn.channel(script)
        except OSError as err:
            self.proc, self.lost = None, str(err)
            return
        self._stderr = threading.Thread(target=self._read_stderr, daemon=True)
        self._stderr.start()
        threading.Thread(target=self._read_events, daemon=True).start()
        threading.Thread(target=self._collect_loop, daemon=True).start()

    # -- requests (driver threads) --------------------------------------------------------
    def send(self, **request: Any) -> bool:
        data = (json.dumps(request) + "\n").encode()
        with self.write_lock:
            try:
                self.proc.stdin.write(data)
                self.proc.stdin.flush()
            except (OSError, ValueError):  # the agent is gone: its events thread reports it
                return False
        return True

    def start(self, job: "AgentJob", **request: Any) -> Optional[str]:
        """The job's id on this channel; None when the channel is already lost."""
        with self.cond:
            if self.lost is not None:
                return None
            jid = str(next(self._ids))
            self.jobs[jid] = job
        self.send(op="start", id=jid, **request)
        return jid

    def _request(self, **request: Any) -> Optional[dict]:
        """Send a request and wait for its reply; None if the channel ends first."""
        rid = f"r{next(self._ids)}"
        if not self.send(id=rid, **request):
            return None
        with self.cond:
            while rid not in self.replies and self.lost is None:
                self.cond.wait()
            return self.replies.pop(rid, None)

    def close(self) -> None:
        """Stdin's EOF stops the agent (and any job still on it, TERM then KILL)."""
        with self.cond:
            self.closing = True
            self.cond.notify_all()
        if self.proc is None:
            return
        with self.write_lock:
            try:
                self.proc.stdin.close()
            except OSError:
                pass
        try:
            self.proc.wait(timeout=self.backend.opts.kill_grace_s + 10)
        except subprocess.TimeoutExpired:
            self.proc.kill()

    # -- events (own thread) ----------------------------------------------------------------
    def _read_events(self) -> None:
        for line in self.proc.stdout:
            try:
                event = json.loads(line)
            except ValueError:
                self.backend.logs.host(self.host.label, f"agent: {line.decode(errors='replace').rstrip()}")
                continue
            try:
                self._dispatch(event)
            except Exception:  # one bad event (or a full disk for a log) must not stop every job's events
                log.exception("ssh agent on %s: handling %r failed", self.host.label, event.get("ev"))
        code = self.proc.wait()
        self._stderr.join(timeout=5)
        detail = self._stderr_tail[-1] if self._stderr_tail else f"ssh exit code {code}"
        with self.cond:
            self.lost = detail
            orphans = list(self.jobs.values())
            self.jobs.clear()
            self.cond.notify_all()
        if orphans:
            self.backend.logs.host(self.host.label, f"agent channel ended: {detail}")
        for job in orphans:  # each may wait up to dead_after_s to confirm its job is gone
            threading.Thread(target=job.channel_lost, args=(detail, code, self.closing), daemon=True).start()

    def _dispatch(self, event: dict) -> None:
        kind, jid = event.get("ev"), str(event.get("id"))
        if kind == "tar":
            with self.cond:
                self.replies[jid] = event
                self.cond.notify_all()
            return
        if kind in ("ready", "error"):
            self.backend.logs.host(self.host.label, f"agent {kind}: {event.get('pid') or event.get('detail')}")
            return
        with self.cond:
            job = self.jobs.pop(jid, None) if kind == "exit" else self.jobs.get(jid)
        if job is None:
            return
        if kind == "started":
            job.on_started(int(event["pid"]))
        elif kind == "out":
            job.on_output(base64.b64decode(event["b64"]))
        elif kind == "exit" and event.get("error"):
            job.could_not_start(event["error"])
        elif kind == "exit":
            job.exit_code = int(event["code"])
            result = base64.b64decode(event["result"]) if event.get("result") else None
            with self.cond:
                self.to_collect.append((job, result))
                self.cond.notify_all()

    def _read_stderr(self) -> None:
        for raw in self.proc.stderr:
            line = raw.decode(errors="replace").rstrip("\n")
            if line.strip():
                self._stderr_tail = (self._stderr_tail + [line])[-5:]
                self.backend.logs.host(self.host.label, f"agent: {line}")

    # -- collection (own thread) ----------------------------------------------------------
    def _collect_loop(self) -> None:
        while True:
            with self.cond:
                while not self.to_collect and not self.closing and self.lost is None:
                    self.cond.wait()
                batch, self.to_collect = self.to_collect, []
            if not batch and (self.closing or self.lost is not None):
                return
            try:
                self._collect(batch)
            except Exception as exc:  # never leave the driver waiting on a job nobody follows
                log.exception("ssh agent on %s: collecting results failed", self.host.label)
                for job, _ in batch:
                    job.collect_failed(exc)

    def _collect(self, batch: list[tuple["AgentJob", Optional[bytes]]]) -> None:
        layout = self.host.layout
        loaded = []
        for job, raw in batch:
            ret = job.load_result(raw) if raw is not None else None
            if ret is None:  # no result there (False), or handed on as it came (True)
                job.collected(raw is not None)
            else:
                loaded.append((job, ret, job_dir_of(ret, layout)))
        dirs = [d for _, _, d in loaded if d]
        shipped = self._ship(dirs) if dirs else True
        for job, ret, _ in loaded:
            if shipped:
                job.store_result(ret)
            job.collected(shipped)

    def _ship(self, dirs: list[str]) -> Optional[bool]:
        """Copy these job dirs into the local sweep dir at once; None if the host stopped answering."""
        layout, label = self.host.layout, self.host.label
        reply = self._request(op="tar", root=layout.root, dirs=[os.path.relpath(d, layout.root) for d in dirs],
                              limit=TAR_LIMIT)
        if reply is None:
            return None
        if reply.get("big"):
            for d in dirs:
                got = self.host.conn.fetch_dir(d, layout.paths.to_local(d))
                if got.code == SSH_FAILED:
                    return None
                if not got.ok:
                    self.backend.logs.host(label, f"copying {d} back failed: {got.err.strip()}")
            return True
        error = unpack_tar(base64.b64decode(reply["b64"]), layout.local_sweep_dir)
        if error:
            self.backend.logs.host(label, f"unpacking {len(dirs)} job dirs failed: {error}")
        return True
