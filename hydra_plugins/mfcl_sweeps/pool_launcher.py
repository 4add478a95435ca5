"""`hydra/launcher=mfcl_pool`: one sweep over local slots, SSH hosts and Slurm/PBS allocations at
once, with affinity, health, failover and work stealing. The work lives in
`mfcl_sweeps.backends.pool`; see docs/pool.md."""
# Options are declared (with their checks) in mfcl_sweeps.backends.pool.config; this module only
# registers them. No `from __future__ import annotations` here: Hydra executes plugin modules
# without registering them in sys.modules.

from hydra.core.config_store import ConfigStore

from hydra_plugins.mfcl_sweeps._launcher_base import MfclLauncherBase
from mfcl_sweeps.backends.pool.config import PoolLauncherConf


class MfclPoolLauncher(MfclLauncherBase):
    backend_name = "pool"


ConfigStore.instance().store(group="hydra/launcher", name="mfcl_pool", node=PoolLauncherConf, provider="mfcl_sweeps")
