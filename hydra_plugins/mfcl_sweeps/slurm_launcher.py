"""`hydra/launcher=mfcl_slurm`: Slurm job arrays with requeue, torchrun in allocations and detach
(docs/slurm.md). Option names and meanings follow hydra-submitit-launcher's `submitit_slurm`."""
# Options are declared (with their checks) in mfcl_sweeps.config; this module only registers them.
# No `from __future__ import annotations` here: Hydra executes plugin modules without
# registering them in sys.modules.

from hydra.core.config_store import ConfigStore

from hydra_plugins.mfcl_sweeps._launcher_base import MfclLauncherBase
from mfcl_sweeps.config import SlurmLauncherConf


class MfclSlurmLauncher(MfclLauncherBase):
    backend_name = "slurm"


ConfigStore.instance().store(group="hydra/launcher", name="mfcl_slurm", node=SlurmLauncherConf, provider="mfcl_sweeps")
