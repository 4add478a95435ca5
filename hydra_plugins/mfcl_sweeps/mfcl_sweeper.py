"""`hydra/sweeper=mfcl`: grids, paired sweeps, explicit runs, groups, budgets, resume, claims.

Thin: config + registration + the `${mfcl:...}` resolver; the work is in `mfcl_sweeps.sweeper`.
"""

import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore
from hydra.plugins.sweeper import Sweeper
from omegaconf import OmegaConf

from hydra_plugins.mfcl_sweeps._notify_conf import NotifyConf


@dataclass
class MfclSweeperConf:
    _target_: str = "hydra_plugins.mfcl_sweeps.mfcl_sweeper.MfclSweeper"
    # What to sweep (all optional; combined with command-line sweeps like a=1,2)
    sweep_file: Optional[str] = None  # YAML/JSON sweep file, any supported dialect
    # Empty containers rather than None, so `hydra.sweeper.grid={lr:[1,2]}` can be merged in
    # from the command line; empty means "not given".
    params: Dict[str, str] = field(default_factory=dict)  # like BasicSweeper: key -> sweep string
    grid: Dict[str, Any] = field(default_factory=dict)
    paired: List[Any] = field(default_factory=list)
    runs: List[Any] = field(default_factory=list)
    run_defaults: Dict[str, Any] = field(default_factory=dict)  # merged under each of `runs`
    aliases: Dict[str, Any] = field(default_factory=dict)  # added to (or replacing) the default aliases
    exclude: List[Any] = field(default_factory=list)
    max_runs: Optional[int] = None
    shuffle: Optional[bool] = None
    seed: Optional[int] = None
    seeds: Optional[Any] = None  # N or a list: every config repeated per seed
    seed_key: Optional[str] = None  # where each seed is written (default: seed)
    # How to run it
    max_batch_size: Optional[int] = None  # jobs per launch() call; None: all (mfcl launchers stream)
    dry_run: bool = False  # print the runs (and what would be submitted) and exit
    validate: bool = True  # check every distinct value against one composed run per group first
    name: Optional[str] = None  # stable sweep dir multirun/NAME (or $MFCL_STORAGE_ROOT/NAME)
    resume: Optional[str] = None  # none | skip_completed | rerun_failed_only (default: see docs)
    only_runs: List[str] = field(default_factory=list)  # run ids/config hashes to run whatever their state
    claim: bool = False  # worker mode: several invocations split the runs
    claim_timeout: float = 600.0  # seconds without heartbeat before a claim is taken over
    cluster: Optional[str] = None  # default: $MFCL_CLUSTER, else "local"
    store: Optional[str] = None  # the sweep dir's journal (default) or postgresql://USER@HOST:PORT/DB; $MFCL_STORE
    fail_on_error: bool = True  # exit non-zero when runs failed (after running all of them)
    allow_behind: bool = False  # launch even if the project's git branch is behind its upstream
    notify: NotifyConf = field(default_factory=NotifyConf)  # webhook/email at the end and first failure
    require_up_to_date: bool = False  # refuse when behind upstream (always so with claim or a cluster name)
    secret_keys: List[str] = field(default_factory=list)  # more secret key names (docs/manifest.md#secrets)


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
