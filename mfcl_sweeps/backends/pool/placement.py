"""Where a run may go and where it goes next: pure functions over the sources' specs and loads.

Affinity: a run asking for more GPUs per node or more nodes than a source declares, or for a
partition a source does not have, never goes there. The strategies are the SSH launcher's
(one set of choosers for hosts and sources alike), applied to the sources that may take the run.
"""
from __future__ import annotations

import dataclasses
import random
from typing import Optional, Sequence

from mfcl_sweeps.backends.pool.sources import SCHEDULERS, SourceSpec
from mfcl_sweeps.backends.ssh.strategy import HostLoad, choose
from mfcl_sweeps.errors import MfclError
from mfcl_sweeps.model import PlannedRun


class NoSourceFits(MfclError):
    """A run asks for resources no source of the pool can give."""


def why_not(source: SourceSpec, run: PlannedRun) -> Optional[str]:
    """Why `source` cannot give `run` what it asks for, or None when it can."""
    res = run.resources
    gpus = res.gpus_per_node or 0
    if gpus and source.gpus is not None and gpus > source.gpus:
        return f"needs {gpus} GPU(s) per node, {source.name} declares {source.gpus}"
    if res.nnodes and res.nnodes > 1 and source.nodes is not None and res.nnodes > source.nodes:
        return f"needs {res.nnodes} nodes, {source.name} gives {source.nodes}"
    if res.partition:
        if source.kind not in SCHEDULERS:
            return f"asks for partition {res.partition!r}, {source.name} ({source.kind}) has none"
        if source.partitions and res.partition not in source.partitions:
            return f"asks for partition {res.partition!r}, {source.name} has {', '.join(source.partitions)}"
    return None


def fitting(sources: Sequence[SourceSpec], run: PlannedRun) -> list[bool]:
    return [why_not(s, run) is None for s in sources]


def check_fits(sources: Sequence[SourceSpec], run: PlannedRun) -> None:
    """NoSourceFits naming the run and each source's reason, when no source can take it."""
    reasons = [why_not(s, run) for s in sources]
    if all(reasons):
        raise NoSourceFits(f"run {run.run_id or run.index} ({' '.join(run.overrides) or 'no overrides'}) fits no "
                           f"source: {'; '.join(reasons)}; give it fewer resources or add a source that has them "
                           "(docs/pool.md#affinity)")


def pick(strategy: str, loads: Sequence[HostLoad], allowed: Sequence[bool], turn: int,
         rng: random.Random) -> Optional[int]:
    """The source for the next run among the allowed ones with a free slot, or None."""
    masked = [load if ok else dataclasses.replace(load, enabled=False) for load, ok in zip(loads, allowed)]
    return choose(strategy, masked, turn, rng)
