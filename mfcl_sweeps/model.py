"""Plain data passed between layers: spec -> expand -> manifest -> launcher -> backend.

Nothing here imports Hydra; every other module may import this one.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional

# Run states as journaled; the manifest replays them.
PENDING = "pending"
CLAIMED = "claimed"
RUNNING = "running"
COMPLETED = "completed"
FAILED = "failed"
CANCELLED = "cancelled"
PREEMPTED = "preempted"
INTERRUPTED = "interrupted"  # stopped with its driver (Ctrl-C, SIGTERM, SIGHUP); resume reruns it
RUN_STATES = (PENDING, CLAIMED, RUNNING, COMPLETED, FAILED, CANCELLED, PREEMPTED, INTERRUPTED)
FINAL_STATES = (COMPLETED, FAILED, CANCELLED, INTERRUPTED)
ACTIVE_STATES = (PENDING, CLAIMED, RUNNING)  # a run some process or scheduler job may still be working on
# Shown, never journaled: a claimed/running run of this host whose recorded process is gone
# (its driver or job was killed); resume and claim workers run it again.
LOST = "lost"
SHOWN_STATES = RUN_STATES + (LOST,)
# hydra.sweeper.resume: which recorded runs a sweep started again skips (docs/sweeper.md)
RESUME_MODES = ("none", "skip_completed", "rerun_failed_only", "skip_finished")

# Environment a job sees, whatever launched it.
ENV_SWEEP_ID = "MFCL_SWEEP_ID"
ENV_SWEEP_DIR = "MFCL_SWEEP_DIR"
ENV_RUN_ID = "MFCL_SWEEP_RUN_ID"
ENV_INDEX = "MFCL_SWEEP_INDEX"
ENV_GROUP = "MFCL_SWEEP_GROUP"
ENV_CONFIG_HASH = "MFCL_SWEEP_CONFIG_HASH"
ENV_RUN_DIR = "MFCL_SWEEP_RUN_DIR"  # the job dir, where a task keeps its checkpoints
ENV_ATTEMPT = "MFCL_SWEEP_ATTEMPT"  # 1 on the first start, +1 per restart (preemption, retry)


@dataclass(frozen=True)
class RunResources:
    """Per-run launcher parameters from the sweep (a group or run entry).

    They reach mfcl launchers through `PlannedRun.resources`, never through task
    overrides, so they are not part of the config hash. Unset fields mean "the
    launcher's own setting".
    """

    timeout_min: Optional[float] = None
    nnodes: Optional[int] = None
    node_rank: Optional[int] = None
    nproc_per_node: Optional[int] = None
    rendezvous: Optional[Mapping[str, Any]] = None  # {backend, endpoint, id, conf}
    gpus_per_node: Optional[int] = None
    cpus_per_task: Optional[int] = None
    mem_gb: Optional[float] = None
    partition: Optional[str] = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    def merged_over(self, base: "RunResources") -> "RunResources":
        """These values where set, `base`'s elsewhere."""
        mine = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out = {k: (v if v not in (None, {}) else getattr(base, k)) for k, v in mine.items()}
        return RunResources(**out)

    def to_dict(self) -> dict:
        return {k: v for k, v in dataclasses.asdict(self).items() if v not in (None, {})}


@dataclass(frozen=True)
class Budget:
    mode: str  # iso_time | iso_steps | iso_samples | iso_tokens
    limit: float
    target_metric: Optional[str] = None
    target_value: Optional[float] = None


@dataclass(frozen=True)
class PlannedRun:
    """One run of a sweep, as the expansion produces it.

    `overrides` are the final task overrides in Hydra syntax (`key=value`), exactly
    what the job's `hydra.overrides.task` will hold. `index` and `run_id` are -1/""
    until the manifest assigns them (an index is given once per config hash).
    """

    overrides: tuple[str, ...]
    config_hash: str
    group: str = "default"
    combo: str = ""  # filesystem-safe slug of the varying values
    name: Optional[str] = None
    env: Mapping[str, str] = field(default_factory=dict)  # extra job env, e.g. MFCL_AMP_DTYPE
    resources: RunResources = field(default_factory=RunResources)
    budget: Optional[Budget] = None
    metadata: Mapping[str, Any] = field(default_factory=dict)  # kept for reporting, never passed to Hydra
    position: int = -1  # position in the expansion order
    index: int = -1
    run_id: str = ""

    def with_identity(self, index: int, run_id: str) -> "PlannedRun":
        return dataclasses.replace(self, index=index, run_id=run_id)
