"""`hydra/sweeper=mfcl`: grids, paired sweeps, explicit runs, groups, budgets, resume, claims.

Thin: registration of its config (declared, with its checks, in mfcl_sweeps.config) + the
`${mfcl:...}` resolver; the work is in `mfcl_sweeps.sweeper`.
"""

import os
from typing import Any, List

from hydra.core.config_store import ConfigStore
from hydra.plugins.sweeper import Sweeper
from omegaconf import OmegaConf

from mfcl_sweeps.config import MfclSweeperConf

_IDENTITY = {
    "sweep_id": "MFCL_SWEEP_ID",
    "sweep_dir": "MFCL_SWEEP_DIR",
    "run_id": "MFCL_SWEEP_RUN_ID",
    "index": "MFCL_SWEEP_INDEX",
    "group": "MFCL_SWEEP_GROUP",
    "config_hash": "MFCL_SWEEP_CONFIG_HASH",
}


def _identity(key: str, *, _root_: Any) -> Any:
    """`${mfcl:run_id}` and friends, read from the job's own config (env_set is exported only
    after the job dir is resolved, so the environment cannot be used here)."""
    if key not in _IDENTITY:
        raise ValueError(f"${{mfcl:{key}}}: unknown key; use one of {', '.join(_IDENTITY)}")
    value = OmegaConf.select(_root_, f"hydra.job.env_set.{_IDENTITY[key]}", default=None)
    if value is None:
        value = os.environ.get(_IDENTITY[key])
    if value is None:
        raise ValueError(f"${{mfcl:{key}}} is only defined in jobs of hydra/sweeper=mfcl or an mfcl launcher")
    return value


if not OmegaConf.has_resolver("mfcl"):
    OmegaConf.register_new_resolver("mfcl", _identity)


class MfclSweeper(Sweeper):
    def __init__(self, **options: Any) -> None:
        self.options = options
        self.core: Any = None

    def setup(self, *, hydra_context: Any, task_function: Any, config: Any) -> None:
        from mfcl_sweeps.sweeper import SweepCore

        self.core = SweepCore(self.options)
        self.core.setup(hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: List[str]) -> Any:
        return self.core.sweep(arguments)


ConfigStore.instance().store(group="hydra/sweeper", name="mfcl", node=MfclSweeperConf, provider="mfcl_sweeps")
