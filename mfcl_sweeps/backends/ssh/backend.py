"""SSH backend: a pool of hosts (`hydra/launcher=mfcl_ssh`), each with a number of slots.

Per host: one multiplexed ssh connection (the system client, so ~/.ssh/config, agents and
ProxyJump work), a sync check of the project before the first job, the session pickle copied
once, then per job one channel running the supervisor (`ssh_remote`) that ties the job's
process group to that channel. Each job's stdout/stderr streams into the run's local log; when
it ends, its result and job dir are copied back into the local sweep dir with paths rewritten,
so the driver (launching.py) sees the same layout as with any other launcher.

A job whose channel drops is re-sent (reported `preempted`) only once its process group is
confirmed gone on the host, or the host has been unreachable for `dead_after_s`. Hosts are
disabled and re-enabled by the rules in `ssh_health`; when every host stays down for
`all_down_timeout_s` the launch stops with an error and the manifest keeps what is left to do.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import random
import shutil
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Mapping, Optional, Sequence

from mfcl_sweeps import events
from mfcl_sweeps.backends.base import Backend, JobHandle, JobRequest, JobState, Submission
from mfcl_sweeps.backends.ssh.agent_channel import AgentChannel
from mfcl_sweeps.backends.ssh.agent_job import AgentJob
from mfcl_sweeps.backends.ssh.health import HealthRules, SweepLogs
from mfcl_sweeps.backends.ssh.job import Host, RemoteJob
from mfcl_sweeps.backends.ssh.paths import RemoteLayout, remote_session, remote_spec
from mfcl_sweeps.backends.ssh.strategy import choose
from mfcl_sweeps.backends.ssh.sync import Unreachable, local_commit, prepare_host, project_root
from mfcl_sweeps.backends.sshclient import commands as cmd
from mfcl_sweeps.backends.sshclient.hosts import HostSpec, SshOptions, check_workdirs, parse_options
from mfcl_sweeps.backends.sshclient.transport import HostConn
from mfcl_sweeps.config import SshLauncherConf
from mfcl_sweeps.errors import MfclError
from mfcl_sweeps.job.jobspec import worker_argv

log = logging.getLogger(__name__)


class AllHostsDown(MfclError):
    """Every SSH host stayed unusable; the manifest keeps the runs still to do (resume them)."""


class SshBackend(Backend):
    name = "ssh"
    conf = SshLauncherConf

    @classmethod
    def check_options(cls, raw: Mapping[str, Any]) -> SshOptions:
        options = parse_options(dict(raw))
        check_workdirs(options)
        return options

    @classmethod
    def from_options(cls, raw: Mapping[str, Any], *, session: Any) -> SshBackend:
        return cls(cls.check_options(raw), session=session)

    @classmethod
    def cancel_records(cls, records: Sequence[Any]) -> list[str]:
        return cancel_records(records)

    def __init__(self, opts: SshOptions, *, session: Any) -> None:
        self.opts = opts
        self.session = session
        self.sweep_dir = os.path.abspath(session.sweep_dir) if session is not None else os.getcwd()
        cwd = _launch_cwd(session)
        self.project_dir = os.path.abspath(opts.project_dir) if opts.project_dir else project_root(cwd)
        self.control_dir = tempfile.mkdtemp(prefix="mfcl-ssh-")  # 0700: nobody else reaches our sockets
        self.hosts = [Host(spec, opts, self.control_dir, self.project_dir) for spec in opts.hosts]
        self.rules = HealthRules(opts.max_consecutive_failures, opts.max_failure_rate, opts.min_jobs_for_rate)
        self.logs = SweepLogs(self.sweep_dir)
        self.lock = threading.RLock()
        self.rng = random.Random(opts.seed)
        self.turn = 0
        self.jobs: dict[str, RemoteJob] = {}
        self.prepared = False
        self.all_down_since: Optional[float] = None
        self.announce_all_down = True  # False as a pool's source: the pool says when all its sources are down
        self._stop_monitor = threading.Event()
        self._monitor: Optional[threading.Thread] = None

    # -- setup: sync check, once, at the first capacity() (a dry run never connects) ------
    def prepare(self) -> None:
        if self.prepared:
            return
        self.prepared = True
        with ThreadPoolExecutor(max_workers=min(16, len(self.hosts))) as pool:
            outcomes = list(pool.map(self._prepare_host, self.hosts))
        for h, err in zip(self.hosts, outcomes):
            if err is not None:
                self.disable(h, f"unreachable: {err}")
        if not any(h.health.enabled for h in self.hosts):
            raise AllHostsDown("no ssh host is reachable: " + "; ".join(
                f"{h.label} ({h.health.reason})" for h in self.hosts))
        self._monitor = threading.Thread(target=self._watch_disabled, daemon=True)
        self._monitor.start()

    def _prepare_host(self, h: Host) -> Optional[str]:
        """Sync/check one host and set its layout; the reason it is unreachable, or None."""
        commit = local_commit(self.project_dir)
        rel = os.path.relpath(self.sweep_dir, self.project_dir)
        excludes = [] if rel.startswith("..") else [f"/{rel}/"]  # never copy the sweep's own outputs
        try:
            workdir = prepare_host(h.conn, mode=self.opts.sync, workdir=h.workdir, python=h.python,
                                   project_dir=self.project_dir, commit=commit,
                                   allow_out_of_sync=self.opts.allow_out_of_sync, excludes=excludes)
        except Unreachable as err:
            return err.detail
        h.layout = RemoteLayout(self.sweep_dir, workdir, self.project_dir)
        self.logs.host(h.label, f"ready: {h.spec.describe()} workdir {workdir} commit {commit or '-'} "
                                f"slots {h.spec.slots}")
        return None

    # -- health -------------------------------------------------------------------------------
    def disable(self, host: Host, reason: str) -> None:
        with self.lock:
            if host.health.disable(reason, time.monotonic()):
                log.warning("ssh host %s disabled: %s", host.label, reason)
                self.logs.health(host.label, "disabled", f"reason={reason!r}")

    def check_reachable(self, host: Host, detail: str) -> bool:
        res = host.conn.run("true", timeout=self.opts.connect_timeout_s + 5)
        if not res.ok:
            self.disable(host, f"unreachable: {res.err.strip().splitlines()[-1] if res.err.strip() else detail}")
        return res.ok

    def job_finished(self, job: RemoteJob, host_ok: Optional[bool]) -> None:
        host = job.host
        with self.lock:
            host.running -= 1
            if host_ok is not None:
                reason = host.health.record(host_ok, self.rules)
                if reason:
                    self.disable(host, reason)
            self.logs.host(host.label, f"{job.request.run.run_id}: finished exit={job.exit_code}")

    def _watch_disabled(self) -> None:
        """Re-enable a disabled host once it answers again (checked every health_check_interval_s)."""
        interval = self.opts.health_check_interval_s
        while not self._stop_monitor.wait(min(1.0, interval)):
            now = time.monotonic()
            for h in self.hosts:
                if h.health.enabled or now - max(h.health.since, h.last_check) < interval:
                    continue
                h.last_check = now
                try:
                    back = self._prepare_host(h) is None if h.layout is None else \
                        h.conn.run("true", timeout=self.opts.connect_timeout_s + 5).ok
                except MfclError as err:  # answers, but cannot run this sweep (yet)
                    self.logs.health(h.label, "still-disabled", f"reason={str(err)!r}")
                    continue
                if back:
                    with self.lock:
                        h.health.enable()
                        h.session_sent = False  # the host may have been rebuilt; send it again
                    log.warning("ssh host %s answers again: re-enabled", h.label)
                    self.logs.health(h.label, "enabled", "reason='answers again'")

    # -- the Backend interface ------------------------------------------------------------
    def capacity(self) -> Optional[int]:
        self.prepare()
        with self.lock:
            free = sum(max(0, h.spec.slots - h.running) for h in self.hosts if h.health.enabled)
            if any(h.health.enabled for h in self.hosts):
                self.all_down_since = None
                return free
            now = time.monotonic()
            if self.all_down_since is None:
                self.all_down_since = now
                if self.announce_all_down:
                    events.emit(events.ALL_DOWN, sweep_dir=self.sweep_dir, launcher="mfcl_ssh",
                                wait_s=self.opts.all_down_timeout_s,
                                sources=[{"name": h.label, "reason": h.health.reason} for h in self.hosts])
            confirming = any(j.state is None for j in self.jobs.values())
            if not confirming and now - self.all_down_since > self.opts.all_down_timeout_s:
                raise AllHostsDown(
                    f"every ssh host has been down for {self.opts.all_down_timeout_s:g}s ("
                    + "; ".join(f"{h.label}: {h.health.reason}" for h in self.hosts)
                    + f"); the manifest in {self.sweep_dir} keeps the runs still to do: resume once a host is back")
            return 0

    def plan(self, requests: Sequence[JobRequest]) -> list[Submission]:
        loads = [h.load() for h in self.hosts]
        turn = self.turn
        chosen = []
        for _ in requests:
            i = choose(self.opts.strategy, loads, turn, self.rng)
            if i is None:  # more than the free slots (a dry run of a whole sweep): keep cycling
                i = turn % len(self.hosts)
            loads[i] = dataclasses.replace(loads[i], running=loads[i].running + 1, started=loads[i].started + 1)
            turn = i + 1
            chosen.append(i)
        if not requests:
            return []
        if self.opts.agent:  # each host's agent (started once), and each job as its request on that channel
            commands = [self.hosts[i].conn.argv(self._agent_script(self.hosts[i])) for i in sorted(set(chosen))]
            keys = ("job_path", "job_json", "argv")
            lines = [json.dumps({"host": self.hosts[i].label, "op": "start", **dict(zip(keys, self._job_parts(
                self.hosts[i], r)))}) for i, r in zip(chosen, requests)]
            return [Submission(requests=list(requests), commands=commands, script="\n".join(lines),
                               script_path="(requests to the agents)", extra={"hosts": chosen})]
        # one submission: its jobs start side by side, each on its own channel
        commands = [self.hosts[i].conn.argv(self._job_script(self.hosts[i], r)) for i, r in zip(chosen, requests)]
        return [Submission(requests=list(requests), commands=commands, extra={"hosts": chosen})]

    def _layout(self, host: Host) -> RemoteLayout:
        return host.layout or RemoteLayout(self.sweep_dir, host.workdir, self.project_dir)

    def _job_parts(self, host: Host, req: JobRequest) -> tuple[str, str, list[str]]:
        """The job file's path on the host, its content, and the worker's argv there."""
        layout = self._layout(host)
        job_path = layout.job_path(req.run.run_id, req.spec.attempt)
        return (job_path, remote_spec(req.spec, req.run.run_id, layout).to_json(),
                worker_argv(host.python, layout.session_path, job_path))

    def _job_script(self, host: Host, req: JobRequest) -> str:
        job_path, job_json, argv = self._job_parts(host, req)
        return cmd.job_script(workdir=self._layout(host).workdir, python=host.python, env=host.env,
                              job_path=job_path, job_json=job_json, grace_s=self.opts.kill_grace_s, worker_argv=argv)

    def _agent_script(self, host: Host) -> str:
        return cmd.agent_script(workdir=self._layout(host).workdir, python=host.python, env=host.env,
                                grace_s=self.opts.kill_grace_s)

    def _agent(self, host: Host) -> AgentChannel:
        """The host's agent, started at its first job and again after its channel ended."""
        with self.lock:
            if host.agent is None or host.agent.lost is not None:
                host.agent = AgentChannel(self, host, self._agent_script(host))
            return host.agent

    def _pick(self, planned: int) -> Optional[Host]:
        with self.lock:
            host = self.hosts[planned]
            if not host.load().free:
                i = choose(self.opts.strategy, [h.load() for h in self.hosts], self.turn, self.rng)
                host = None if i is None else self.hosts[i]
            if host is not None:
                host.running += 1
                host.started += 1
                self.turn = self.hosts.index(host) + 1
            return host

    def _send_session(self, host: Host) -> bool:
        import cloudpickle

        if host.session_sent:
            return True
        payload = cloudpickle.dumps(remote_session(self.session, host.layout))
        res = host.conn.run(cmd.write_file_script(host.layout.session_path), input=payload, timeout=600)
        host.conn.check_host_key(res)
        if not res.ok:
            self.logs.host(host.label, f"sending the session failed: {res.err.strip()}")
            return False
        host.session_sent = True
        return True

    def submit(self, submission: Submission) -> list[JobHandle]:
        jobs = []
        for req, planned in zip(submission.requests, submission.extra.get("hosts") or [0] * len(submission.requests)):
            req.spec.journal = False  # the host cannot reach the sweep's journal: the driver journals for it
            host = self._pick(planned)
            job = (AgentJob if self.opts.agent else RemoteJob)(self, host, req)
            self.jobs[req.key] = job
            jobs.append(job)
            if host is None:
                job.state = JobState(done=True, preempted=True, error="no ssh host had a free slot")
            elif not self._send_session(host):
                reachable = self.check_reachable(host, "could not send the session")
                job.state = JobState(done=True, preempted=True, error=f"could not stage the job on {host.label}")
                self.job_finished(job, host_ok=False if reachable else None)
            else:
                self.logs.host(host.label, f"{req.run.run_id}: starting attempt {req.spec.attempt}")
                if self.opts.agent:
                    job.start_on(self._agent(host), *self._job_parts(host, req))
                else:
                    job.start(self._job_script(host, req))
        deadline = time.monotonic() + self.opts.connect_timeout_s + 30
        handles = []
        for job in jobs:
            req, host = job.request, job.host
            job.wait_started(deadline)
            label = host.label if host else "-"
            fields = {"host": label, "ssh": _ssh_record(host, self.opts)} if host else {}
            if job.pid is not None:
                fields.update(pid=job.pid, pgid=job.pid)
            handles.append(JobHandle(request=req, backend_job_id=f"{label}:{job.pid or '-'}", started=time.monotonic(),
                                     data={"job": job, "host": label, "pid": job.pid, "journal_fields": fields}))
        return handles

    def poll(self, handles: Sequence[JobHandle]) -> dict[str, JobState]:
        states = {}
        now = time.monotonic()
        for h in handles:
            job: RemoteJob = h.data["job"]
            if job.state is not None:
                states[h.key] = job.state
                self.jobs.pop(h.key, None)
                continue
            timeout = self.opts.timeout
            if h.request.run.resources.timeout_min:
                timeout = h.request.run.resources.timeout_min * 60
            if timeout and now - job.started > timeout and job.stop_reason is None:
                job.stop(f"timed out after {timeout:g}s (timeout) on {job.host.label}")
            states[h.key] = JobState(done=False, running=True)
        return states

    def cancel(self, handles: Sequence[JobHandle]) -> None:
        jobs = [h.data["job"] for h in handles]
        for job in jobs:
            job.stop("cancelled")
        deadline = time.monotonic() + self.opts.kill_grace_s + 5
        while time.monotonic() < deadline and any(j.state is None and not j.confirming for j in jobs):
            time.sleep(0.05)

    def close(self) -> None:
        self._stop_monitor.set()
        for h in self.hosts:
            if h.agent is not None:
                h.agent.close()
            h.conn.close()
        shutil.rmtree(self.control_dir, ignore_errors=True)


def _launch_cwd(session: Any) -> str:
    from omegaconf import OmegaConf

    cfg = getattr(session, "master_config", None)
    cwd = OmegaConf.select(cfg, "hydra.runtime.cwd", throw_on_missing=False) if cfg is not None else None
    return str(cwd) if cwd else os.getcwd()


def _ssh_record(host: Host, opts: SshOptions) -> dict:
    """What `mfcl-sweeps cancel` needs to reach the host again (journaled with the run)."""
    s = host.spec
    return {"host": s.host, "port": s.port, "user": s.user, "local": s.is_local, "ssh_options": list(s.ssh_options),
            "identity_file": opts.identity_file, "known_hosts_file": opts.known_hosts_file,
            "global_ssh_options": list(opts.ssh_options), "ssh_command": opts.ssh_command,
            "kill_grace_s": opts.kill_grace_s}


def cancel_records(records: Sequence[Any]) -> list[str]:
    """`mfcl-sweeps cancel`: kill each run's process group on its host (TERM, then KILL); the
    config hashes of the runs stopped (a host that does not answer keeps its run)."""
    stopped = []
    for rec in records:
        info = (getattr(rec, "extra", None) or {}).get("ssh")
        pgid = getattr(rec, "pgid", None) or getattr(rec, "pid", None)
        if not info or not pgid:
            continue
        spec = HostSpec(host=info["host"], port=info.get("port"), user=info.get("user"), local=info.get("local"),
                        ssh_options=list(info.get("ssh_options") or []))
        opts = SshOptions(hosts=[spec], identity_file=info.get("identity_file"),
                          known_hosts_file=info.get("known_hosts_file"),
                          ssh_options=list(info.get("global_ssh_options") or []),
                          ssh_command=info.get("ssh_command") or "ssh", multiplex=False)
        res = HostConn(spec, opts, None).run(cmd.kill_group_script(int(pgid), float(info.get("kill_grace_s") or 5)))
        if res.ok:
            stopped.append(rec.config_hash)
        else:
            log.warning("could not cancel run %s on %s: %s", getattr(rec, "run_id", "?"), spec.describe(),
                        res.err.strip())
    return stopped

