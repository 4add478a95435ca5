"""`hydra/launcher=mfcl_ssh`: a pool of SSH hosts with sync checks, health, failover and result
collection. The work lives in `mfcl_sweeps.backends.ssh.backend`; see docs/ssh.md."""
# Options are declared (with their checks) in mfcl_sweeps.config; this module only registers them.
# No `from __future__ import annotations` here: Hydra executes plugin modules without
# registering them in sys.modules.

from hydra.core.config_store import ConfigStore

from hydra_plugins.mfcl_sweeps._launcher_base import MfclLauncherBase
from mfcl_sweeps.config import SshLauncherConf


class MfclSshLauncher(MfclLauncherBase):
    backend_name = "ssh"


ConfigStore.instance().store(group="hydra/launcher", name="mfcl_ssh", node=SshLauncherConf, provider="mfcl_sweeps")
