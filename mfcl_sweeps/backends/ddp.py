"""torchrun command lines and what a failed agent left behind: shared by the torchrun backend and
Slurm's torchrun allocations (slurm/task.py), so neither backend imports the other.

Pure: `RunLaunch` holds one run's torchrun parameters, `node_command` turns it into one node's
argv, `failure_reason` reads a failed agent's error file or log.
"""
from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any, Optional, Sequence, Union

from mfcl_sweeps.backends.children import signal_name


# -- one run's torchrun parameters --------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class RunLaunch:
    """Everything torchrun needs for one run, resolved from the launcher options and the run's
    own resources; `node_command` turns it into each node's command line."""

    run_id: str
    nnodes: int
    nproc_per_node: Union[int, str]
    nodes: tuple[int, ...]  # the node ranks this driver starts
    rdzv_backend: str
    rdzv_endpoint: str
    rdzv_id: str
    rdzv_conf: str
    max_restarts: int
    monitor_interval: float
    python: str
    session_path: str
    job_path: str
    state_dir: str  # torchrun log dirs and error files of this attempt
    node_result: Optional[str]  # where node-local rank 0 writes its JobReturn (one driver per node)
    extra_args: tuple[str, ...] = ()
    hosts: tuple[Any, ...] = ()  # HostSpec of each node in `nodes` when agents start over SSH

    @property
    def per_node_driver(self) -> bool:
        return self.node_result is not None

    def gpus_needed(self) -> int:
        return self.nproc_per_node * len(self.nodes) if isinstance(self.nproc_per_node, int) else 0

    def error_file(self, node_rank: int) -> str:
        return str(Path(self.state_dir) / f"node{node_rank}.error.json")


def node_command(launch: RunLaunch, node_rank: int, *, host: Optional[str] = None,
                 gpus: Sequence[str] = ()) -> list[str]:
    """One node's agent: `env VARS python -m torch.distributed.run FLAGS -m mfcl_sweeps.ddp_worker ...`.

    `host` is where the agent runs (None: this machine); it becomes torchrun's --local-addr so an
    SSH launcher can run this same argv on that host.
    """
    env = {"NNODES": str(launch.nnodes), "NODE_RANK": str(node_rank),
           "TORCHELASTIC_ERROR_FILE": launch.error_file(node_rank)}
    if gpus:
        env["CUDA_VISIBLE_DEVICES"] = ",".join(gpus)
    argv = ["env", *(f"{k}={v}" for k, v in env.items()), launch.python, "-m", "torch.distributed.run",
            "--nnodes", str(launch.nnodes), "--nproc-per-node", str(launch.nproc_per_node),
            "--rdzv-backend", launch.rdzv_backend, "--rdzv-endpoint", launch.rdzv_endpoint,
            "--rdzv-id", launch.rdzv_id]
    if launch.rdzv_backend == "static":  # other backends assign node ranks themselves (and warn)
        argv += ["--node-rank", str(node_rank)]
    if launch.rdzv_conf:
        argv += ["--rdzv-conf", launch.rdzv_conf]
    if host is not None:
        argv += ["--local-addr", host]
    argv += ["--max-restarts", str(launch.max_restarts), "--monitor-interval", f"{launch.monitor_interval:g}",
             "--log-dir", str(Path(launch.state_dir) / f"node{node_rank}"), *launch.extra_args,
             "-m", "mfcl_sweeps.ddp_worker", launch.session_path, launch.job_path]
    if launch.node_result:
        argv += ["--node-result", launch.node_result]
    return argv


# -- failures ------------------------------------------------------------------------------------
ROOT_CAUSE = re.compile(r"rank\s*:\s*(\d+)\s*\(local_rank:\s*\d+\)\s*\n\s*exitcode\s*:\s*(-?\d+)"
                        r"(?:.*\n\s*error_file\s*:.*\n\s*traceback\s*:\s*(.*))?")


def failure_reason(error_file: str, log_text: str) -> Optional[tuple[int, str]]:
    """(exit code, "rank R exited with code C: last error line") of a failed agent, from the error
    file torchrun copies from the failed rank (written by ddp_worker), else from torchrun's
    root-cause report in the log (a rank killed by a signal writes no error file)."""
    try:
        msg = json.loads(Path(error_file).read_text())["message"]
        info = msg.get("extraInfo", {})
        code = int(msg.get("errorCode", 1))
        rank = info.get("mfcl_rank", "?")
        return code, f"rank {rank} exited with code {code}: {msg['message']}"
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        pass
    found = ROOT_CAUSE.findall(log_text)
    if not found:
        return None
    rank, code, why = found[-1]
    code = int(code)
    shown = f"code {code} ({signal_name(code)})" if code < 0 else f"code {code}"
    return code, f"rank {rank} exited with {shown}" + (f": {why.strip()}" if why.strip() else "")
