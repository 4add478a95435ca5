"""What every mfcl launcher plugin shares. Kept out of Hydra's start-up scan (leading `_`) and
free of heavy imports: the work starts in `mfcl_sweeps.launch.core` at `setup()`."""

from abc import abstractmethod
from typing import Any, Sequence

from hydra.plugins.launcher import Launcher


class MfclLauncherBase(Launcher):
    @property
    @abstractmethod
    def backend_name(self) -> str:
        """Set by each launcher (a class attribute). Abstract so that Hydra's plugin scan, which
        lists every concrete Launcher subclass it meets in a plugin module, skips this base."""

    def __init__(self, **options: Any) -> None:
        self.options = options
        self.core: Any = None

    def setup(self, *, hydra_context: Any, task_function: Any, config: Any) -> None:
        from omegaconf import OmegaConf

        from mfcl_sweeps.launch.core import LaunchCore

        options = {k: (OmegaConf.to_container(v, resolve=True) if OmegaConf.is_config(v) else v)
                   for k, v in self.options.items() if k != "_target_"}
        self.core = LaunchCore(self.backend_name, options)
        self.core.setup(hydra_context=hydra_context, task_function=task_function, config=config)
        self.core.check_options()  # a bad option fails before the sweep writes anything

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[Any]:
        return self.core.launch(job_overrides, initial_job_idx)

    def launch_planned(self, runs: Sequence[Any], **kwargs: Any) -> Sequence[Any]:
        return self.core.launch_planned(runs, **kwargs)

    def driver_part(self) -> Any:
        return self.core.driver_part()

    def describe(self, runs: Sequence[Any], **kwargs: Any) -> str:
        return self.core.describe(runs, **kwargs)
