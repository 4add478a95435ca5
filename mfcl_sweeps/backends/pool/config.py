"""The pool launcher's options, declared once (name, type, default, meaning, checks).

Imported by the Hydra plugin at start-up: nothing here imports more than mfcl_sweeps.config.
No `from __future__ import annotations`: OmegaConf reads these annotations as types.
"""
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional

from mfcl_sweeps.config import PLUGINS, CommonLauncherConf
from mfcl_sweeps.options import above, at_least, between, one_of, opt

STRATEGIES = ("least_loaded", "round_robin", "weighted", "random")


def _some_sources(v: Any, _: Mapping[str, Any]) -> Optional[str]:
    return None if v else "no sources; give at least one, e.g. hydra.launcher.sources=[local:4,ssh:gpu1:8,slurm:32]"


@dataclass
class PoolLauncherConf(CommonLauncherConf):
    _target_: str = PLUGINS + "pool_launcher.MfclPoolLauncher"
    # each "KIND[:NAME][:SLOTS]" (local:4, ssh:gpu1:8, slurm:cluster:32) or a mapping: a launcher's
    # own options plus kind, name, slots (or max_jobs), weight, preset, gpus, nodes, partitions
    sources: List[Any] = opt(list, _some_sources)
    presets: Dict[str, Any] = opt(dict)  # name -> {kind, options...}; wins over a preset file of that name
    preset_dir: Optional[str] = "conf/hydra/launcher"  # <name>.yaml launcher presets (as `mfcl-sweeps init` writes)
    strategy: str = opt("least_loaded", one_of(*STRATEGIES))
    seed: Optional[int] = None  # for strategy=random
    # a run waiting in a scheduler queue this long is withdrawn and sent to a source with a free slot
    max_queue_wait_s: Optional[float] = opt(None, above(0, " seconds"))
    max_consecutive_failures: int = opt(3, at_least(0))  # 0: never disable a source for failed runs
    max_failure_rate: float = opt(0.4, above(0), between(0, 1))
    min_jobs_for_rate: int = opt(5, at_least(1))
    health_check_interval_s: float = opt(30.0, above(0, " seconds"))  # how often a disabled source is retried
    # errors in a row of a slurm/pbs source's controller (submit or status command) that make it unreachable
    max_controller_errors: int = opt(3, at_least(1))
    lost_after_s: float = opt(60.0, above(0, " seconds"))  # in-flight runs of an unreachable source: declared lost
    all_down_timeout_s: float = opt(120.0, above(0, " seconds"))  # every source disabled this long: stop
    utilization_interval_s: float = opt(10.0, above(0, " seconds"))  # logs/source_utilization.log period
