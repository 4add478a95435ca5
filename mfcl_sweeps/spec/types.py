"""The normalized sweep spec: blocks of axes of settings. Plain data, built by `spec.load_spec`,
read by `expand` and `validate`."""
from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional, Sequence, Union

from mfcl_sweeps.model import Budget, RunResources


@dataclass(frozen=True)
class Setting:
    """One position on an axis: the overrides (and env) one choice contributes to a run."""

    overrides: tuple[str, ...] = ()
    keys: tuple[str, ...] = ()  # config key each override acts on (no +/~ prefix)
    values: tuple[tuple[str, Any], ...] = ()  # (key as the user named it, value): exclude, slugs
    env: tuple[tuple[str, str], ...] = ()
    name: Optional[str] = None
    budget: Optional[Budget] = None
    resources: Optional[RunResources] = None
    metadata: tuple[tuple[str, Any], ...] = ()
    slug: str = ""

    def to_dict(self) -> dict:
        out: dict = {"overrides": list(self.overrides)}
        if self.env:
            out["env"] = dict(self.env)
        if self.name is not None:
            out["name"] = self.name
        if self.budget is not None:
            out["budget"] = dataclasses.asdict(self.budget)
        if self.resources is not None and self.resources.to_dict():
            out["resources"] = self.resources.to_dict()
        if self.metadata:
            out["metadata"] = dict(self.metadata)
        return out


@dataclass(frozen=True)
class Axis:
    source: str  # where it came from, e.g. "grid.lr", "paired[0]", "runs", "overrides:a"
    settings: tuple[Setting, ...]

    def keys(self) -> set[str]:
        return {k for s in self.settings for k, _ in s.values} | {k for s in self.settings for k in s.keys}


@dataclass(frozen=True)
class Block:
    group: str
    axes: tuple[Axis, ...]
    resources: RunResources = field(default_factory=RunResources)
    metadata: Mapping[str, Any] = field(default_factory=dict)

    @property
    def size(self) -> int:
        n = 1
        for axis in self.axes:
            n *= len(axis.settings)
        return n


@dataclass(frozen=True)
class SweepSpec:
    blocks: tuple[Block, ...]
    exclude: tuple[tuple[tuple[str, Any], ...], ...] = ()
    max_runs: Optional[int] = None
    shuffle: bool = False
    seed: int = 0
    dialect: str = "native"
    source: Optional[str] = None
    metadata: Mapping[str, Any] = field(default_factory=dict)
    # where the exclude entries were given, as SweepSpecError's (key, file, line); not hashed
    exclude_at: tuple = field(default=(None, None, None), compare=False)

    def to_dict(self) -> dict:
        return {
            "dialect": self.dialect, "source": self.source, "metadata": dict(self.metadata),
            "max_runs": self.max_runs, "shuffle": self.shuffle, "seed": self.seed,
            "exclude": [dict(entry) for entry in self.exclude],
            "blocks": [{
                "group": b.group, "resources": b.resources.to_dict(), "metadata": dict(b.metadata),
                "axes": [{"source": a.source, "settings": [s.to_dict() for s in a.settings]}
                         for a in b.axes],
            } for b in self.blocks],
        }

    def spec_hash(self) -> str:
        text = json.dumps(self.to_dict(), sort_keys=True, default=repr)
        return hashlib.sha1(text.encode()).hexdigest()[:16]


@dataclass
class SpecOptions:
    """The `hydra.sweeper.*` knobs that shape expansion. None means "not set here" (the sweep
    file's value, else the default). grid/paired/runs/run_defaults/exclude are inline equivalents
    of the sweep-file keys grid/paired/runs/defaults/exclude (`defaults` is reserved in a Hydra
    config node, hence `run_defaults`)."""

    aliases: Optional[Mapping[str, Any]] = None
    seeds: Union[int, Sequence[int], None] = None
    seed_key: Optional[str] = None
    max_runs: Optional[int] = None
    shuffle: Optional[bool] = None
    seed: Optional[int] = None
    exclude: Optional[Sequence[Mapping[str, Any]]] = None
    grid: Optional[Mapping[str, Any]] = None
    paired: Optional[Sequence[Any]] = None
    runs: Optional[Sequence[Mapping[str, Any]]] = None
    run_defaults: Optional[Mapping[str, Any]] = None


# ----------------------------------------------------------------------------- context
