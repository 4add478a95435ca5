"""Parts -> blocks: settings combined, keys stripped where a later part sets them, slugs, final axes."""
from __future__ import annotations

import dataclasses
from typing import Optional

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


def _with_slugs(axis: Axis) -> Axis:
    """Each setting's slug: its run name, else the values that vary along this axis."""
    if len(axis.settings) < 2:
        return axis
    seen: dict[str, set] = {}
    for s in axis.settings:
        for k, v in s.values:
            seen.setdefault(k, set()).add(repr(v))
    counts = {k: len(v) for k, v in seen.items()}
    n = len(axis.settings)
    varying = {k for k, c in counts.items() if c > 1 or sum(1 for s in axis.settings if k in dict(s.values)) < n}
    settings = []
    for s in axis.settings:
        if s.name is not None:
            text = ov.slug(s.name, 40)
        else:
            text = "_".join(ov.value_slug(k, v) for k, v in s.values if k in varying)
        settings.append(dataclasses.replace(s, slug=text))
    return Axis(source=axis.source, settings=tuple(settings))

def _final_axes(block: Block, cli: list[Axis], seeds: Optional[tuple[Axis, _Source]]) -> tuple[Axis, ...]:
    """The block's axes with the command line's keys winning, then the command line, then seeds."""
    cli_keys = {k for axis in cli for k in axis.keys()}
    axes = [a for a in (_strip(axis, cli_keys) for axis in block.axes) if a is not None] + cli
    if seeds is not None:
        seed_axis, source = seeds
        (canon,) = seed_axis.settings[0].keys
        owner = next((a.source for a in axes if canon in a.keys()), None)
        if owner is not None:
            raise source.error("seeds", f"the seed key {canon!r} is also set by {owner}; remove one")
        axes.append(seed_axis)
    return tuple(_with_slugs(a) for a in axes)
