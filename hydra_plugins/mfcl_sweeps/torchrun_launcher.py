"""`hydra/launcher=mfcl_torchrun`: every run a DDP job started by torchrun (docs/torchrun.md)."""
# Options are declared (with their checks) in mfcl_sweeps.config; this module only registers them.
# No `from __future__ import annotations` here: Hydra executes plugin modules without
# registering them in sys.modules.

from hydra.core.config_store import ConfigStore

from hydra_plugins.mfcl_sweeps._launcher_base import MfclLauncherBase
from mfcl_sweeps.config import TorchrunLauncherConf


class MfclTorchrunLauncher(MfclLauncherBase):
    backend_name = "torchrun"


ConfigStore.instance().store(group="hydra/launcher", name="mfcl_torchrun", node=TorchrunLauncherConf,
                             provider="mfcl_sweeps")
