"""Parts -> blocks: settings combined, keys stripped where a later part sets them, slugs, final axes."""
from __future__ import annotations

import dataclasses
from typing import Optional, Sequence

from mfcl_sweeps.errors import SweepSpecError
from mfcl_sweeps.spec import overrides as ov
from mfcl_sweeps.spec.knobs import _Source
from mfcl_sweeps.spec.parts import _combine, _Part
from mfcl_sweeps.spec.types import Axis, Block

# ----------------------------------------------------------------------------- blocks


def _block(part: _Part) -> Block:
    owners: dict[str, str] = {}
    for axis in (*part.grid.values(), *part.paired):
        for key in axis.keys():
            if key in owners and owners[key] != axis.source:
                raise SweepSpecError(f"set by both {owners[key]} and {axis.source}; keep one", key=key)
            owners[key] = axis.source
    axes: list[Axis] = []
    if part.runs is not None:
        for run in part.runs:
            for key in run.params:
                if key in owners:
                    raise SweepSpecError(f"set by both {owners[key]} and a run; keep one", key=key)
        settings = []
        for run in part.runs:
            params = {k: v for k, v in part.defaults.items() if k not in owners}
            params.update(run.params)
            budget = run.budget or part.budget
            settings.append(_combine([*params.values(), *([budget] if budget else [])], name=run.name,
                                     resources=run.resources, metadata=tuple(run.metadata.items())))
        run_axis = Axis(source="runs", settings=tuple(settings))
    else:
        run_axis = None
        axes.extend(Axis(source=f"defaults.{k}", settings=(s,))
                    for k, s in part.defaults.items() if k not in owners)
    axes.extend(part.grid.values())
    axes.extend(part.paired)
    if run_axis is not None:
        axes.append(run_axis)
    elif part.budget is not None:
        axes.append(Axis(source="budget", settings=(part.budget,)))
    return Block(group=part.group or "default", axes=tuple(axes), resources=part.resources,
                 metadata=part.metadata)


def _strip(axis: Axis, keys: set[str]) -> Optional[Axis]:
    """`axis` without the overrides acting on `keys` (the command line sets them); None if nothing is left."""
    if not axis.keys() & keys:
        return axis
    settings = []
    for s in axis.settings:
        kept = [(o, k) for o, k in zip(s.overrides, s.keys) if k not in keys]
        settings.append(dataclasses.replace(
            s, overrides=tuple(o for o, _ in kept), keys=tuple(k for _, k in kept),
            values=tuple((k, v) for k, v in s.values if k not in keys)))
    if all(not s.overrides and not s.env and s.name is None for s in settings):
        return None
    return Axis(source=axis.source, settings=tuple(settings))


def _with_slugs(axis: Axis, keep: Optional[int] = None) -> Axis:
    """Each setting's slug: its run name, else the values that vary along this axis. With `keep`,
    only the first `keep` settings are kept (and slugged); which values vary is still judged on
    the whole axis, so a run's id does not depend on the cap."""
    if len(axis.settings) < 2:
        return axis
    seen: dict[str, set] = {}
    present: dict[str, int] = {}
    for s in axis.settings:
        for k, v in s.values:
            seen.setdefault(k, set()).add(repr(v))
            present[k] = present.get(k, 0) + 1
    n = len(axis.settings)
    varying = {k for k, v in seen.items() if len(v) > 1 or present[k] < n}
    settings = []
    for s in axis.settings[:keep]:
        if s.name is not None:
            text = ov.slug(s.name, 40)
        else:
            text = "_".join(ov.value_slug(k, v) for k, v in s.values if k in varying)
        settings.append(dataclasses.replace(s, slug=text))
    return Axis(source=axis.source, settings=tuple(settings))


def capped_sizes(sizes: Sequence[int], n: int) -> list[int]:
    """How many leading settings of each axis the first `n` runs of their product use (last axis
    fastest): axis j moves once per prod(sizes[j+1:]) runs. Only the outermost axis that moves is
    cut short; those before it stay at their first setting, those after it are whole, so the
    kept axes' first `n` runs are exactly the full product's."""
    out, period = [0] * len(sizes), 1
    for j in range(len(sizes) - 1, -1, -1):
        out[j] = min(sizes[j], (max(n, 1) - 1) // period + 1)
        period *= sizes[j]
    return out


def capped_blocks(blocks: Sequence[Block], max_runs: Optional[int]) -> list[Block]:
    """Blocks cut to what the first `max_runs` runs use, slugged (None: whole). Work after this
    (validation, the plan line, counting repeats) grows with max_runs, not with the values
    given: `a=range(0,100000) b=range(0,100000)` under max_runs=50 keeps 51 settings. A block
    past the cap keeps one run, so its group is still known (with 0 runs to do)."""
    out, left = [], max_runs
    for block in blocks:
        keep = [None] * len(block.axes) if left is None else capped_sizes([len(a.settings) for a in block.axes], left)
        out.append(dataclasses.replace(block, axes=tuple(_with_slugs(a, k) for a, k in zip(block.axes, keep))))
        if left is not None:
            left = max(0, left - block.size)
    return out


def _final_axes(block: Block, cli: list[Axis], seeds: Optional[tuple[Axis, _Source]]) -> tuple[Axis, ...]:
    """The block's axes with the command line's keys winning, then the command line, then seeds
    (not slugged yet: `capped_blocks` does it)."""
    cli_keys = {k for axis in cli for k in axis.keys()}
    axes = [a for a in (_strip(axis, cli_keys) for axis in block.axes) if a is not None] + cli
    if seeds is not None:
        seed_axis, source = seeds
        (canon,) = seed_axis.settings[0].keys
        owner = next((a.source for a in axes if canon in a.keys()), None)
        if owner is not None:
            raise source.error("seeds", f"the seed key {canon!r} is also set by {owner}; remove one")
        axes.append(seed_axis)
    return tuple(axes)
