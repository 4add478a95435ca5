"""`hydra/launcher=mfcl_torchrun`: every run a DDP job started by torchrun (docs/torchrun.md)."""

from dataclasses import dataclass, field
from typing import Any, List, Optional

from hydra.core.config_store import ConfigStore

from hydra_plugins.mfcl_sweeps._launcher_base import CommonLauncherConf, MfclLauncherBase


@dataclass
class TorchrunLauncherConf(CommonLauncherConf):
    _target_: str = "hydra_plugins.mfcl_sweeps.torchrun_launcher.MfclTorchrunLauncher"
    nproc_per_node: Any = 1  # ranks per node: an integer, or auto | cpu | gpu | xpu
    nnodes: int = 1  # nodes per run; without node_rank every node's agent starts on this machine
    node_rank: Optional[int] = None  # start only this node's agent (one driver per node)
    rdzv_backend: str = "c10d"
    rdzv_endpoint: Optional[str] = None  # host[:port]; no port: a free one per run
    rdzv_id: Optional[str] = None  # default: one id per run and attempt
    rdzv_conf: Any = None  # {key: value} or "key=value,key=value"
    max_restarts: int = 0
    monitor_interval: float = 0.1
    master_addr: str = "127.0.0.1"  # rendezvous host when rdzv_endpoint names none
    master_port: Optional[int] = None  # fixed rendezvous port; default: $MASTER_PORT, else a free one per run
    extra_args: List[str] = field(default_factory=list)  # more torchrun flags, e.g. [--tee, "3"]
    max_concurrent: Optional[int] = None  # runs at once; default: GPUs or CPU count // processes per run
    timeout: Optional[float] = None  # seconds per run
    idle_timeout: Optional[float] = None  # seconds without output
    gpus: Optional[List[Any]] = None  # GPU ids to pack runs onto; default: visible GPUs
    pack_gpus: Optional[bool] = None  # null: pack when GPUs are declared or visible
    python: Optional[str] = None  # interpreter torchrun is started with; default: the driver's
    kill_grace_s: float = 5.0  # on cancel/timeout: SIGTERM, then SIGKILL after this long
    # Node agents on other machines over SSH: node i of a run on hosts[i] ("[user@]host[:port]" or
    # {host, port, user, python, workdir, env, ssh_options}); the sweep dir must be shared with them.
    hosts: List[Any] = field(default_factory=list)
    workdir: Optional[str] = None  # where agents start on the hosts; default: the driver's cwd
    identity_file: Optional[str] = None  # the ssh client options below mean what they do for mfcl_ssh
    known_hosts_file: Optional[str] = None
    ssh_options: List[str] = field(default_factory=list)
    ssh_command: str = "ssh"
    connect_timeout_s: int = 10


class MfclTorchrunLauncher(MfclLauncherBase):
    backend_name = "torchrun"


ConfigStore.instance().store(group="hydra/launcher", name="mfcl_torchrun", node=TorchrunLauncherConf,
                             provider="mfcl_sweeps")
