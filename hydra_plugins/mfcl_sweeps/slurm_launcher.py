"""`hydra/launcher=mfcl_slurm`: Slurm job arrays with requeue, torchrun in allocations and detach
(docs/slurm.md). Option names and meanings follow hydra-submitit-launcher's `submitit_slurm`."""
# No `from __future__ import annotations` here: Hydra executes plugin modules without
# registering them in sys.modules, and dataclasses then cannot resolve string annotations.

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore

from hydra_plugins.mfcl_sweeps._launcher_base import CommonLauncherConf, MfclLauncherBase


@dataclass
class SlurmLauncherConf(CommonLauncherConf):
    _target_: str = "hydra_plugins.mfcl_sweeps.slurm_launcher.MfclSlurmLauncher"
    # as in hydra-submitit-launcher
    partition: Optional[str] = None
    qos: Optional[str] = None
    account: Optional[str] = None
    comment: Optional[str] = None
    constraint: Optional[str] = None
    exclude: Optional[str] = None
    gres: Optional[str] = None
    timeout_min: float = 60.0
    cpus_per_task: Optional[int] = None
    cpus_per_gpu: Optional[int] = None
    gpus_per_node: Optional[int] = None
    gpus_per_task: Optional[int] = None
    tasks_per_node: int = 1
    mem_gb: Optional[float] = None
    mem_per_gpu: Optional[str] = None
    mem_per_cpu: Optional[str] = None
    nodes: int = 1
    name: str = "${hydra.job.name}"
    stderr_to_stdout: bool = False
    signal_delay_s: int = 120  # USR2 this long before the time limit: the task requeues itself
    max_num_timeout: int = 3  # time-limit requeues per run
    additional_parameters: Dict[str, Any] = field(default_factory=dict)  # e.g. {mail-type: END}
    array_parallelism: Optional[int] = 256  # tasks of one array running at once
    setup: List[str] = field(default_factory=list)  # shell lines before srun
    srun_args: List[str] = field(default_factory=list)
    # mfcl
    torchrun: bool = False  # start every run with torchrun in its allocation
    nproc_per_node: Optional[int] = None  # torchrun processes per node (set: torchrun)
    rdzv_port: Optional[int] = None  # rendezvous port on the first node; default from the job id
    requeue: bool = True  # sbatch --requeue
    max_array_size: Optional[int] = None  # default: the cluster's MaxArraySize
    python: Optional[str] = None  # interpreter on the nodes; default: the driver's
    poll_min_s: float = 1.0
    poll_max_s: float = 10.0


class MfclSlurmLauncher(MfclLauncherBase):
    backend_name = "slurm"


ConfigStore.instance().store(group="hydra/launcher", name="mfcl_slurm", node=SlurmLauncherConf, provider="mfcl_sweeps")
