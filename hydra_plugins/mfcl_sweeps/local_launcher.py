"""`hydra/launcher=mfcl_local`: every job in its own process on this machine."""

from dataclasses import dataclass
from typing import Any, List, Optional

from hydra.core.config_store import ConfigStore

from hydra_plugins.mfcl_sweeps._launcher_base import CommonLauncherConf, MfclLauncherBase


@dataclass
class LocalLauncherConf(CommonLauncherConf):
    _target_: str = "hydra_plugins.mfcl_sweeps.local_launcher.MfclLocalLauncher"
    max_concurrent: Optional[int] = None  # default: CPU count
    timeout: Optional[float] = None  # seconds per job
    idle_timeout: Optional[float] = None  # seconds without output
    start_method: str = "auto"  # auto | fork | spawn
    gpus: Optional[List[Any]] = None  # GPU ids to pack jobs onto; default: visible GPUs
    gpus_per_job: int = 0
    python: Optional[str] = None  # interpreter for spawned jobs; default: the driver's
    kill_grace_s: float = 5.0  # SIGTERM, then SIGKILL after this long (cancel)


class MfclLocalLauncher(MfclLauncherBase):
    backend_name = "local"


ConfigStore.instance().store(group="hydra/launcher", name="mfcl_local", node=LocalLauncherConf, provider="mfcl_sweeps")
