"""Sweep knobs from the file, `hydra.sweeper.*` and the command line: exclude, seeds, max_runs, shuffle."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Optional, Sequence

from mfcl_sweeps.errors import SweepSpecError
from mfcl_sweeps.spec import overrides as ov
from mfcl_sweeps.spec.fields import (
    Ctx,
    need_list,
    parse_seeds,
    positive_int,
    valid_key,
)
from mfcl_sweeps.spec.types import Axis, Setting

# ----------------------------------------------------------------------------- knobs


@dataclass(frozen=True)
class _Source:
    """A mapping that may set knobs (the file root, then hydra.sweeper: later sources win)."""

    raw: Mapping[str, Any]
    ctx: Ctx

    def get(self, name: str) -> Any:
        return self.raw.get(name)

    def error(self, name: str, message: str) -> SweepSpecError:
        return self.ctx.error(message, name, self.raw, name)


def _knob(name: str, sources: Sequence[_Source]) -> tuple[Any, Optional[_Source]]:
    """The value of knob `name` from the last source that sets it, and that source."""
    for source in reversed(sources):
        if source.get(name) is not None:
            return source.get(name), source
    return None, None


def _exclude(sources: Sequence[_Source], known_keys: set[str]) -> list[tuple[tuple[str, Any], ...]]:
    out = []
    for source in sources:
        raw, ctx = source.get("exclude"), source.ctx
        if raw is None or raw == []:
            continue
        items = need_list(raw, ctx, "exclude", source.raw, "exclude", "partial assignments key -> value")
        for i, entry in enumerate(items):
            here = f"exclude[{i}]"
            if not isinstance(entry, dict) or not entry:
                raise ctx.error(f"an exclude entry is a non-empty mapping key -> value, got {entry!r}",
                                here, items, i)
            assignment = tuple((ctx.match_key(k), v) for k, v in entry.items())
            missing = next((k for k, _ in assignment if k not in known_keys), None)
            if missing is not None:
                raise ctx.error(f"exclude key {missing!r} is not set by the sweep (keys: "
                                f"{', '.join(sorted(known_keys)) or 'none'})", here, items, i)
            out.append(assignment)
    return out


def _seed_axis(sources: Sequence[_Source]) -> Optional[tuple[Axis, _Source]]:
    """The `seeds` axis (each config repeated per seed), and the source that asked for it."""
    raw, source = _knob("seeds", sources)
    if source is None:
        return None
    seeds = parse_seeds(raw, source.ctx, "seeds", source.raw)
    seed_key, key_source = _knob("seed_key", sources)
    seed_key = "seed" if seed_key is None else seed_key
    if not isinstance(seed_key, str) or not valid_key(ov.canonical_key(seed_key)):
        raise key_source.error("seed_key", f"must be a config key, got {seed_key!r}")
    canon = ov.canonical_key(seed_key)
    return Axis(source="seeds", settings=tuple(
        Setting(overrides=(ov.format_override(seed_key, s),), keys=(canon,), values=((canon, s),))
        for s in seeds)), source


def _order_knobs(sources: Sequence[_Source]) -> dict:
    """max_runs, shuffle and seed, checked."""
    max_runs, source = _knob("max_runs", sources)
    if source is not None:
        positive_int(max_runs, source.ctx, "max_runs", source.raw, "max_runs")
    shuffle, source = _knob("shuffle", sources)
    if source is not None and not isinstance(shuffle, bool):
        raise source.error("shuffle", f"must be true or false, got {shuffle!r}")
    seed, source = _knob("seed", sources)
    if source is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise source.error("seed", f"must be an integer, got {seed!r}")
    return {"max_runs": max_runs, "shuffle": bool(shuffle), "seed": seed or 0}
