"""`hydra/launcher=mfcl_pbs`: job arrays on PBS Pro or Torque (docs/pbs.md)."""
# No `from __future__ import annotations` here: Hydra executes plugin modules without
# registering them in sys.modules, and dataclasses then cannot resolve string annotations.

from dataclasses import dataclass, field
from typing import List, Optional

from hydra.core.config_store import ConfigStore

from hydra_plugins.mfcl_sweeps._launcher_base import CommonLauncherConf, MfclLauncherBase


@dataclass
class PbsLauncherConf(CommonLauncherConf):
    _target_: str = "hydra_plugins.mfcl_sweeps.pbs_launcher.MfclPbsLauncher"
    dialect: str = "pbspro"  # pbspro (-J, select=) | torque (-t, nodes=)
    frontend: str = "auto"  # auto | pbs | slurm (Debian's slurm-wlm-torque qsub over Slurm)
    job_name: str = "${hydra.job.name}"
    queue: Optional[str] = None
    account: Optional[str] = None
    priority: Optional[int] = None
    nodes: int = 1
    ncpus: int = 1  # per node
    ngpus: int = 0  # per node
    mem_gb: Optional[float] = None  # per node
    timeout_min: float = 60.0  # walltime
    array_parallelism: Optional[int] = None  # tasks of one array running at once
    subjob_limit: str = "suffix"  # pbspro: -J 0-K%P (suffix) | -W max_run_subjobs=P
    max_array_size: int = 1000
    output_dir: Optional[str] = None  # default <sweep_dir>/.mfcl/pbs
    join_output: bool = True  # -j oe
    extra_directives: List[str] = field(default_factory=list)
    setup: List[str] = field(default_factory=list)  # shell lines before the job
    template: Optional[str] = None  # your Jinja2 job script template
    python: Optional[str] = None  # interpreter on the nodes; default: the driver's
    poll_min_s: float = 1.0
    poll_max_s: float = 30.0


class MfclPbsLauncher(MfclLauncherBase):
    backend_name = "pbs"


ConfigStore.instance().store(group="hydra/launcher", name="mfcl_pbs", node=PbsLauncherConf, provider="mfcl_sweeps")
