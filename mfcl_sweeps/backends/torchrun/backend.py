"""Torchrun backend: every run is a DDP job started by the real torchrun
(`python -m torch.distributed.run ... -m mfcl_sweeps.ddp_worker SESSION JOB`).

Per run it starts one torchrun agent per node: every node of the run on this machine when no
`node_rank` is given (nnodes > 1 then means several local agents meeting at one rendezvous
endpoint), node i on `hosts[i]` over SSH when hosts are given (torchrun_hosts.py), or only the
given node's agent when one driver runs per node. Rank 0 runs the job through Hydra's
`run_job`; the other ranks run the task with the same config (ddp_worker.py).

Commands are argv lists from pure functions (`resolve`, `node_command`, `remote_argv`).
Rendezvous ports that the user did not fix are picked in `plan` by an injectable allocator, so a
dry run prints the exact command, and back-to-back or concurrent runs never share a port.
"""
from __future__ import annotations

import dataclasses
import os
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence

from mfcl_sweeps.backends.base import Backend, JobHandle, JobRequest, JobState, Submission
from mfcl_sweeps.backends.children import (
    GpuPool,
    overdue_reason,
    signal_group,
    signal_name,
    stop_gracefully,
    visible_gpus,
)
from mfcl_sweeps.backends.ddp import RunLaunch, failure_reason, node_command
from mfcl_sweeps.backends.torchrun.hosts import (
    check_host,
    parse_hosts,
    python_of,
    remote_argv,
    ssh_options,
    workdir_of,
)
from mfcl_sweeps.config import TorchrunLauncherConf
from mfcl_sweeps.errors import MfclError
from mfcl_sweeps.job.supervise import die_with_parent
from mfcl_sweeps.layout import SweepLayout
from mfcl_sweeps.model import PlannedRun
from mfcl_sweeps.options import conf_string, is_port, options_type, problem, split_endpoint

LOCALHOST = "127.0.0.1"


TorchrunOptions = options_type(TorchrunLauncherConf)  # declared, with their checks, in mfcl_sweeps.config


def resolve(o: TorchrunOptions, request: JobRequest, take_port: Callable[[], int],
            environ: Mapping[str, str], hosts: Sequence[Any] = ()) -> RunLaunch:
    """The run's values where the sweep set them, the launcher's elsewhere; a free port where
    neither the endpoint, `master_port` nor the driver's MASTER_PORT names one. With `hosts`,
    node i runs on hosts[i] and the rendezvous is on node 0's host unless an endpoint is given."""
    run: PlannedRun = request.run
    res = run.resources
    rdzv = dict(res.rendezvous or {})
    where = f"run {run.run_id}: resources"
    nnodes = res.nnodes or o.nnodes
    nproc = res.nproc_per_node or o.nproc_per_node
    node_rank = res.node_rank if res.node_rank is not None else o.node_rank
    if node_rank is not None and not 0 <= node_rank < nnodes:
        raise MfclError(f"{where}.node_rank={node_rank}: must be in [0, nnodes={nnodes})")
    if hosts and node_rank is not None:
        raise MfclError(f"{where}.node_rank={node_rank}: not with hydra.launcher.hosts, which start every node's agent "
                        "from this driver; drop node_rank from the sweep or the hosts from the launcher")
    if hosts and nnodes > len(hosts):
        raise MfclError(f"run {run.run_id}: nnodes={nnodes} needs {nnodes} hosts but hydra.launcher.hosts lists "
                        f"{len(hosts)}; add hosts or lower nnodes")
    endpoint = rdzv.get("endpoint") or o.rdzv_endpoint
    default_host = hosts[0].host if hosts else o.master_addr
    host, port = split_endpoint(endpoint, f"{where}.rendezvous.endpoint") if endpoint else (default_host, None)
    if port is None and o.master_port is not None:
        port = o.master_port
    if port is None and environ.get("MASTER_PORT"):
        if not environ["MASTER_PORT"].isdigit() or not is_port(int(environ["MASTER_PORT"])):
            raise MfclError(f"MASTER_PORT={environ['MASTER_PORT']!r}: must be a TCP port in 1..65535")
        port = int(environ["MASTER_PORT"])
    if port is None:
        if node_rank is not None and nnodes > 1:
            raise MfclError(f"{where}: node_rank={node_rank} of nnodes={nnodes} needs a rendezvous port every node "
                            "agrees on; set rendezvous.endpoint=HOST:PORT in the sweep, hydra.launcher.rdzv_endpoint "
                            "or hydra.launcher.master_port")
        port = take_port()
    attempt = request.spec.attempt
    state_dir = SweepLayout(request.spec.sweep_dir).backend_dir("torchrun", f"{run.run_id}.{attempt}")
    return RunLaunch(
        run_id=run.run_id,
        nnodes=nnodes,
        nproc_per_node=nproc,
        nodes=(node_rank,) if node_rank is not None else tuple(range(nnodes)),
        rdzv_backend=rdzv.get("backend") or o.rdzv_backend,
        rdzv_endpoint=f"{host}:{port}",
        rdzv_id=str(rdzv.get("id") or o.rdzv_id or f"mfcl-{run.config_hash[:16]}-{attempt}"),
        rdzv_conf=conf_string(rdzv.get("conf") or o.rdzv_conf, f"{where}.rendezvous.conf"),
        max_restarts=o.max_restarts,
        monitor_interval=o.monitor_interval,
        python=o.python or sys.executable,
        session_path=request.spec.session_path,
        job_path=request.job_path,
        state_dir=state_dir,
        node_result=str(Path(state_dir) / f"node{node_rank}.result.pkl") if node_rank is not None else None,
        extra_args=tuple(o.extra_args),
        hosts=tuple(hosts[:nnodes]),
    )


class PortAllocator:
    """Free TCP ports on this machine, never the same one twice from one allocator: runs planned
    back to back get distinct ports even before their agents bind them."""

    def __init__(self, host: str = LOCALHOST) -> None:
        self.host = host
        self.given: set[int] = set()

    def __call__(self) -> int:
        for _ in range(1000):
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                s.bind((self.host, 0))
                port = s.getsockname()[1]
            if port not in self.given:
                self.given.add(port)
                return port
        raise MfclError(f"no free TCP port found on {self.host}")


PORTS = PortAllocator()  # one per driver process: several launches in one sweep share it


# -- the backend ---------------------------------------------------------------------------------
class TorchrunBackend(Backend):
    name = "torchrun"
    conf = TorchrunLauncherConf

    def __init__(self, options: TorchrunOptions, *, session: Any = None,
                 ports: Optional[Callable[[], int]] = None, environ: Optional[Mapping[str, str]] = None) -> None:
        self.options = options
        self.hosts = self.node_hosts(options)
        self.ssh = ssh_options(options, self.hosts) if self.hosts else None
        self.checked_hosts: set[int] = set()
        self.ports = ports or PORTS
        self.environ = os.environ if environ is None else environ
        self.running: dict[str, JobHandle] = {}
        self.waiting: list[JobHandle] = []  # accepted, waiting for GPUs (a run larger than the default)
        declared_or_seen = visible_gpus(options.gpus) if options.pack_gpus is not False and not self.hosts else []
        self.pack = bool(declared_or_seen) if options.pack_gpus is None else options.pack_gpus
        self.gpus = GpuPool(declared_or_seen if self.pack else ())
        per_run = self.default_procs()
        if self.pack and not isinstance(options.nproc_per_node, int):
            raise problem("nproc_per_node", options.nproc_per_node, "must be an integer when packing runs onto GPUs; "
                          "set a number of ranks or pack_gpus=false")
        if self.pack and len(self.gpus) < per_run:
            nodes = per_run // int(options.nproc_per_node)
            raise MfclError(f"hydra.launcher.nproc_per_node={options.nproc_per_node} x {nodes} "
                            f"local node(s) needs {per_run} GPU(s) but {len(self.gpus)} are visible ({self.gpus.ids}); "
                            "lower nproc_per_node, set hydra.launcher.gpus=[...] or pack_gpus=false")
        self.max_concurrent = options.max_concurrent or (
            1 if self.hosts else len(self.gpus) if self.pack else max(1, (os.cpu_count() or 1) // per_run))

    @classmethod
    def check_options(cls, raw: Mapping[str, Any]) -> TorchrunOptions:
        options = super().check_options(raw)
        cls.node_hosts(options)
        return options

    @classmethod
    def driver_part(cls, options: TorchrunOptions) -> Optional[str]:
        return None if options.node_rank is None else f"node_rank={options.node_rank}"

    @classmethod
    def from_options(cls, raw: Mapping[str, Any], *, session: Any) -> TorchrunBackend:
        return cls(cls.check_options(raw), session=session)

    @staticmethod
    def node_hosts(options: TorchrunOptions) -> tuple[Any, ...]:
        """The hosts node agents start on (checked: at least nnodes of them)."""
        hosts = parse_hosts(options)
        if hosts and options.nnodes > len(hosts):
            raise problem("nnodes", options.nnodes, f"needs as many hosts; hydra.launcher.hosts lists {len(hosts)}: "
                          "add hosts or lower nnodes")
        return hosts

    def default_procs(self) -> int:
        o = self.options
        nodes = 1 if o.node_rank is not None else o.nnodes
        return (o.nproc_per_node if isinstance(o.nproc_per_node, int) else 1) * nodes

    # -- planning (pure but for the port allocator) ------------------------------------------
    def plan(self, requests: Sequence[JobRequest]) -> list[Submission]:
        subs = []
        free = list(self.gpus.free)  # the slices submit will take, so the printed commands are exact
        for request in requests:
            launch = resolve(self.options, request, self.ports, self.environ, self.hosts)
            if self.pack and launch.gpus_needed() > len(self.gpus):
                raise MfclError(f"run {launch.run_id}: nproc_per_node={launch.nproc_per_node} x {len(launch.nodes)} "
                                f"local node(s) needs {launch.gpus_needed()} GPU(s); only {len(self.gpus)} exist here")
            gpus = self._slices(launch, free) if self.pack and launch.gpus_needed() <= len(free) else None
            if gpus is not None:
                del free[:launch.gpus_needed()]
            commands = (self._remote_commands(request, launch) if launch.hosts else
                        [node_command(launch, n, gpus=g)
                         for n, g in zip(launch.nodes, gpus or [()] * len(launch.nodes))])
            subs.append(Submission(requests=[self._for_driver(request, launch)], commands=commands,
                                   extra={"launch": launch, "gpus": gpus}))
        return subs

    def _remote_commands(self, request: JobRequest, launch: RunLaunch) -> list[list[str]]:
        """Each node's agent over ssh, under the supervisor that stops it when the connection ends."""
        commands = []
        for n, host in zip(launch.nodes, launch.hosts):
            python = python_of(host, self.options)
            agent = node_command(dataclasses.replace(launch, python=python), n, host=host.host)
            commands.append(remote_argv(self.ssh, host, workdir=workdir_of(host, self.options), python=python,
                                        agent_argv=agent, job_path=request.job_path, job_json=request.spec.to_json(),
                                        grace_s=self.options.kill_grace_s))
        return commands

    def _check_hosts(self, launch: RunLaunch) -> None:
        """Before a host's first agent: can it log in, find the workdir, read the sweep dir, import us?"""
        for i, host in enumerate(launch.hosts):
            if i not in self.checked_hosts:
                check_host(self.ssh, host, i, workdir=workdir_of(host, self.options),
                           python=python_of(host, self.options), session_path=launch.session_path)
                self.checked_hosts.add(i)

    @staticmethod
    def _slices(launch: RunLaunch, free: list[str]) -> list[list[str]]:
        n = launch.nproc_per_node
        return [free[i * n:(i + 1) * n] for i in range(len(launch.nodes))]

    @staticmethod
    def _for_driver(request: JobRequest, launch: RunLaunch) -> JobRequest:
        """With one driver per node, this driver's result is its own node's local rank 0's."""
        if not launch.per_node_driver:
            return request
        return dataclasses.replace(request, spec=dataclasses.replace(request.spec, result_path=launch.node_result))

    def capacity(self) -> Optional[int]:
        free = self.max_concurrent - len(self.running) - len(self.waiting)
        if self.pack:
            free = min(free, len(self.gpus.free) // self.default_procs())
        return max(free, 0)

    # -- running ---------------------------------------------------------------------------------
    def submit(self, submission: Submission) -> list[JobHandle]:
        (request,) = submission.requests
        launch: RunLaunch = submission.extra["launch"]
        self._check_hosts(launch)
        handle = JobHandle(request=request, backend_job_id="", started=time.monotonic(),
                           data={"launch": launch, "pids": [], "codes": {}, "gpus": []})
        if self.pack and submission.extra["gpus"] is None:
            self.waiting.append(handle)  # started by poll once enough GPUs are free
        else:
            self._start(handle, submission.commands, [g for s in submission.extra["gpus"] or [] for g in s])
        return [handle]

    def _start(self, handle: JobHandle, commands: list[list[str]], gpus: list[str]) -> None:
        import subprocess

        launch: RunLaunch = handle.data["launch"]
        self.gpus.take_these(gpus)
        Path(launch.state_dir).mkdir(parents=True, exist_ok=True)
        for n in launch.nodes:
            Path(launch.error_file(n)).unlink(missing_ok=True)
        Path(handle.request.log_path).parent.mkdir(parents=True, exist_ok=True)
        procs = []
        # over ssh, stdin stays open: the remote supervisor stops the agent when it closes
        stdin = subprocess.PIPE if launch.hosts else subprocess.DEVNULL
        with open(handle.request.log_path, "ab") as out:
            for argv in commands:
                procs.append(subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=stdin,
                                              start_new_session=True, preexec_fn=die_with_parent))
        # the Popen objects are kept: a dropped one is reaped by the next Popen, its exit code lost
        pids = [p.pid for p in procs]
        handle.data.update(pids=pids, procs=procs, gpus=gpus)
        handle.backend_job_id = ",".join(map(str, pids))
        handle.started = time.monotonic()
        self.running[handle.key] = handle

    def _start_waiting(self) -> None:
        while self.waiting:
            handle = self.waiting[0]
            launch: RunLaunch = handle.data["launch"]
            if launch.gpus_needed() > len(self.gpus.free):
                return
            gpus = self._slices(launch, self.gpus.free)
            self.waiting.pop(0)
            commands = [node_command(launch, n, gpus=g) for n, g in zip(launch.nodes, gpus)]
            self._start(handle, commands, [g for s in gpus for g in s])

    def poll(self, handles: Sequence[JobHandle]) -> dict[str, JobState]:
        self._start_waiting()
        states = {}
        now = time.monotonic()
        for h in handles:
            if not h.data["pids"]:
                states[h.key] = JobState(done=False, running=False)
                continue
            if self._reap(h):
                states[h.key] = self._final_state(h)
                self._release(h)
                continue
            failed = any(c != 0 for c in h.data["codes"].values())
            reason = overdue_reason(h, now, self.options.timeout, self.options.idle_timeout)
            if reason and "kill_reason" not in h.data:
                h.data["kill_reason"] = reason
                self._signal(h, signal.SIGKILL)
            elif failed and "stopping" not in h.data:
                # a failed node fails the run: do not leave the other nodes' agents waiting for it
                h.data["stopping"] = True
                self._signal(h, signal.SIGTERM)
            states[h.key] = JobState(done=False, running=True)
        return states

    def _final_state(self, h: JobHandle) -> JobState:
        launch: RunLaunch = h.data["launch"]
        codes = [h.data["codes"][p] for p in h.data["pids"]]
        fields = {"torchrun_nodes": list(launch.nodes), "rdzv_endpoint": launch.rdzv_endpoint}
        if "kill_reason" in h.data:
            return JobState(done=True, exit_code=next((c for c in codes if c), -9), error=h.data["kill_reason"],
                            run_failed=True, fields=fields)
        if not any(codes):
            return JobState(done=True, exit_code=0, fields=fields)
        from mfcl_sweeps.job.jobspec import log_tail

        log_text = log_tail(h.request.log_path, 200)
        reasons = [failure_reason(launch.error_file(n), log_text) for n, c in zip(launch.nodes, codes) if c]
        code, error = next((r for r in reasons if r), (None, None))
        if error is None:
            node, code = next((n, c) for n, c in zip(launch.nodes, codes) if c)
            error = f"torchrun agent of node {node} exited with {signal_name(code) if code < 0 else f'code {code}'}"
            if launch.hosts and code == 255:
                error += f" (ssh to {launch.hosts[launch.nodes.index(node)].describe()} failed; see the run's log)"
        return JobState(done=True, exit_code=code, error=error, run_failed=True, fields=fields)

    def _signal(self, h: JobHandle, sig: int) -> None:
        for pid in h.data["pids"]:
            if pid not in h.data["codes"]:
                signal_group(pid, sig)  # each agent leads its own process group; ranks die with it

    def _release(self, h: JobHandle) -> None:
        self.running.pop(h.key, None)
        for proc in h.data.get("procs", []):
            if proc.stdin:
                proc.stdin.close()
        self.gpus.release(h.data.get("gpus", []))

    def cancel(self, handles: Sequence[JobHandle]) -> None:
        self.waiting = [w for w in self.waiting if all(w is not h for h in handles)]
        live = [h for h in handles if h.data["pids"]]
        # torchrun stops its ranks on SIGTERM; an agent still there after the grace gets SIGKILL
        stop_gracefully(live, self._signal, lambda h: not self._reap(h), self.options.kill_grace_s)
        for h in live:
            for proc in h.data["procs"]:
                h.data["codes"].setdefault(proc.pid, proc.wait())
            self._release(h)

    @staticmethod
    def _reap(h: JobHandle) -> bool:
        """Collect the exit codes of the handle's agents that ended; True once all have."""
        codes = h.data["codes"]
        for proc in h.data["procs"]:
            if proc.pid not in codes and proc.poll() is not None:
                codes[proc.pid] = proc.returncode
        return len(codes) == len(h.data["pids"])

    @classmethod
    def cancel_records(cls, records: Sequence[Any]) -> Any:
        """`mfcl-sweeps cancel`: stops rank 0's process group (journaled by the worker); its torchrun
        agent then stops the run's other ranks. Returns the config hashes stopped."""
        from mfcl_sweeps.backends.procs import cancel_records as cancel_process_groups

        return cancel_process_groups(records)
