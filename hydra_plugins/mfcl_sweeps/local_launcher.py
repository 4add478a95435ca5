"""`hydra/launcher=mfcl_local`: every job in its own process on this machine."""
# Options are declared (with their checks) in mfcl_sweeps.config; this module only registers them.
# No `from __future__ import annotations` here: Hydra executes plugin modules without
# registering them in sys.modules.

from hydra.core.config_store import ConfigStore

from hydra_plugins.mfcl_sweeps._launcher_base import MfclLauncherBase
from mfcl_sweeps.config import LocalLauncherConf


class MfclLocalLauncher(MfclLauncherBase):
    backend_name = "local"


ConfigStore.instance().store(group="hydra/launcher", name="mfcl_local", node=LocalLauncherConf, provider="mfcl_sweeps")
