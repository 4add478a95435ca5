"""`hydra/launcher=mfcl_pbs`: job arrays on PBS Pro or Torque (docs/pbs.md)."""
# Options are declared (with their checks) in mfcl_sweeps.config; this module only registers them.
# No `from __future__ import annotations` here: Hydra executes plugin modules without
# registering them in sys.modules.

from hydra.core.config_store import ConfigStore

from hydra_plugins.mfcl_sweeps._launcher_base import MfclLauncherBase
from mfcl_sweeps.config import PbsLauncherConf


class MfclPbsLauncher(MfclLauncherBase):
    backend_name = "pbs"


ConfigStore.instance().store(group="hydra/launcher", name="mfcl_pbs", node=PbsLauncherConf, provider="mfcl_sweeps")
