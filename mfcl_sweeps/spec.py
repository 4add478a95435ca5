"""Sweep specs: a sweep file (any supported dialect), the `hydra.sweeper.*` options and the
command-line overrides, normalized into one `SweepSpec`.

A spec is a list of blocks (one per group entry); a block is a list of axes; the block's runs
are the Cartesian product of its axes, each axis contributing one `Setting` (a few overrides,
maybe job env, a run name, a budget, resources). Every value is turned into its Hydra
override string here, once, so expansion only concatenates. All errors are `SweepSpecError`
naming the key (and the file line when the value came from a file).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional, Sequence, Union

from mfcl_sweeps import overrides as ov
from mfcl_sweeps import sweepfile, wandb_sweep
from mfcl_sweeps.errors import SweepSpecError
from mfcl_sweeps.model import Budget, RunResources

DEFAULT_ALIASES: dict[str, Any] = {
    "model": {"kind": "group", "target": "model"},
    "method": {"kind": "group", "target": "method"},
    "batch_size": "data.batch_size",
    "amp_dtype": {"kind": "amp_dtype", "target": "train.loss_fp32", "env": "MFCL_AMP_DTYPE"},
}
ALIAS_KINDS = ("key", "group", "amp_dtype")
FP32_NAMES = ("fp32", "float32")

BUDGET_PREFIX = "runtime.budget"
BUDGET_LIMIT_KEYS = {"iso_time": "max_minutes", "iso_steps": "max_steps",
                     "iso_samples": "max_samples", "iso_tokens": "max_tokens"}
BUDGET_FIELDS = ("mode", "limit", "target_metric", "target_value")

# Per-run launcher parameters (RunResources), accepted at the root, in a group entry or a run.
_INT_RESOURCES = ("nnodes", "node_rank", "nproc_per_node", "gpus_per_node", "cpus_per_task")
RESOURCE_KEYS = (*_INT_RESOURCES, "timeout_min", "timeout", "ttl", "mem_gb", "partition", "rendezvous")
RENDEZVOUS_KEYS = ("backend", "endpoint", "id", "conf")
# Infrastructure keys of the `{defaults, params}` dialect: kept as run metadata, never given to Hydra.
INFRA_KEYS = ("instance_type", "region", "ami", "key_name", "iam_role", "spot", "idle_timeout",
              "user_data", "security_groups", "security_group", "subnet_id", "availability_zone",
              "tags")

KNOB_KEYS = ("aliases", "exclude", "max_runs", "shuffle", "seed", "seeds", "seed_key")
NATIVE_KEYS = ("grid", "paired", "runs", "defaults", "groups", "budget", "metadata",
               *KNOB_KEYS, *RESOURCE_KEYS)
GROUP_ENTRY_KEYS = ("group", "params", "grid", "paired", "runs", "defaults", "budget", "metadata",
                    *RESOURCE_KEYS)
RUN_RESERVED_KEYS = ("name", "budget", "metadata", *RESOURCE_KEYS)
PARAM_FILE_KEYS = ("defaults", "params", "comment", "description", "date", "metadata", *KNOB_KEYS)
HSM_KEYS = ("sweep", "metadata", "defaults")

_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhd])")
_DURATION_MINUTES = {"s": 1 / 60, "m": 1.0, "h": 60.0, "d": 1440.0}


# ----------------------------------------------------------------------------- data


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


@dataclass(frozen=True)
class _Alias:
    kind: str
    target: str
    env: Optional[str] = None


class _Ctx:
    """Where values come from (file or `hydra.sweeper`), for error messages; plus the alias table."""

    def __init__(self, file: Optional[str], prefix: str, aliases: dict[str, _Alias],
                 config_loader: Any, dialect: str) -> None:
        self.file, self.prefix, self.aliases = file, prefix, aliases
        self.config_loader, self.dialect = config_loader, dialect

    def error(self, message: str, path: str, container: Any = None, key: Any = None) -> SweepSpecError:
        line = sweepfile.line_of(container, key) if self.file else None
        return SweepSpecError(message, key=f"{self.prefix}{path}", file=self.file, line=line)

    def match_key(self, key: str) -> str:
        """The name a key is known by for exclude and slugs: its alias target, or itself."""
        alias = self.aliases.get(ov.canonical_key(key))
        if alias is None or alias.kind == "amp_dtype":
            return ov.canonical_key(key)
        return alias.target


# ----------------------------------------------------------------------------- scalars


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _positive_int(value: Any, ctx: _Ctx, path: str, container: Any, key: Any, *, zero_ok=False) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < (0 if zero_ok else 1):
        what = "a non-negative" if zero_ok else "a positive"
        raise ctx.error(f"must be {what} integer, got {value!r}", path, container, key)
    return value


def _duration_minutes(value: Any, ctx: _Ctx, path: str, container: Any, key: Any) -> float:
    """`30m`, `2h`, `4h30m`, `90s`, `1d`, or a number of minutes."""
    if _is_number(value) and value > 0:
        return float(value)
    if isinstance(value, str):
        text = value.strip().lower()
        parts = _DURATION.findall(text)
        if parts and "".join(n + u for n, u in parts) == text:
            minutes = sum(float(n) * _DURATION_MINUTES[u] for n, u in parts)
            if minutes > 0:
                return minutes
    raise ctx.error(f"expected a positive duration like '30m', '2h', '4h30m' or minutes, got {value!r}",
                    path, container, key)


def _budget(raw: Any, ctx: _Ctx, path: str, container: Any, key: Any) -> Setting:
    if not isinstance(raw, dict):
        raise ctx.error(f"must be a mapping like {{mode: iso_time, limit: 2.5}}, got {raw!r}",
                        path, container, key)
    unknown = sorted(set(raw) - set(BUDGET_FIELDS), key=str)
    if unknown:
        raise ctx.error(f"unknown budget field {unknown[0]!r} (known: {', '.join(BUDGET_FIELDS)})",
                        f"{path}.{unknown[0]}", raw, unknown[0])
    mode = raw.get("mode")
    if mode not in BUDGET_LIMIT_KEYS:
        raise ctx.error(f"unknown budget mode {mode!r} (known: {', '.join(BUDGET_LIMIT_KEYS)})",
                        f"{path}.mode", raw, "mode" if "mode" in raw else None)
    limit = raw.get("limit")
    if not _is_number(limit) or not limit > 0:
        raise ctx.error(f"budget limit must be a number > 0, got {limit!r}", f"{path}.limit", raw,
                        "limit" if "limit" in raw else None)
    metric = raw.get("target_metric")
    if metric is not None and not isinstance(metric, str):
        raise ctx.error(f"must be a metric name, got {metric!r}", f"{path}.target_metric", raw, "target_metric")
    target = raw.get("target_value")
    if target is not None and not _is_number(target):
        raise ctx.error(f"must be a number, got {target!r}", f"{path}.target_value", raw, "target_value")
    limit_key = f"{BUDGET_PREFIX}.{BUDGET_LIMIT_KEYS[mode]}"
    return Setting(
        overrides=(f"{BUDGET_PREFIX}.enabled=true", ov.format_override(limit_key, limit)),
        keys=(f"{BUDGET_PREFIX}.enabled", limit_key),
        budget=Budget(mode=mode, limit=limit, target_metric=metric, target_value=target),
    )


def _resources(entry: dict, ctx: _Ctx, path: str) -> RunResources:
    """The RunResources named in `entry` (a mapping that may hold other keys too)."""
    found: dict[str, Any] = {}
    for key in RESOURCE_KEYS:
        if key not in entry:
            continue
        value, here = entry[key], f"{path}{key}"
        if key in _INT_RESOURCES:
            found[key] = _positive_int(value, ctx, here, entry, key, zero_ok=(key == "node_rank"))
        elif key in ("timeout_min", "timeout", "ttl"):
            found["timeout_min"] = _duration_minutes(value, ctx, here, entry, key)
        elif key == "mem_gb":
            if not _is_number(value) or value <= 0:
                raise ctx.error(f"must be a number of GB > 0, got {value!r}", here, entry, key)
            found[key] = value
        elif key == "partition":
            if not isinstance(value, str) or not value:
                raise ctx.error(f"must be a partition name, got {value!r}", here, entry, key)
            found[key] = value
        else:  # rendezvous
            if not isinstance(value, dict) or set(value) - set(RENDEZVOUS_KEYS):
                raise ctx.error(f"must be a mapping with keys {', '.join(RENDEZVOUS_KEYS)}, got {value!r}",
                                here, entry, key)
            found[key] = dict(value)
    return RunResources(**found)


# ----------------------------------------------------------------------------- values -> settings


def _value_setting(key: Any, value: Any, ctx: _Ctx, path: str, container: Any, ckey: Any) -> Setting:
    """The setting for `key: value`, through the alias table."""
    if not isinstance(key, str) or not key:
        raise ctx.error(f"a key must be a non-empty string, got {key!r}", path, container, ckey)
    prefix = key[: len(key) - len(key.lstrip("~+"))]
    alias = ctx.aliases.get(ov.canonical_key(key))
    if alias is None:
        target = key
    elif alias.kind == "amp_dtype":
        if not isinstance(value, str) or not value:
            raise ctx.error(f"must be a dtype name such as bf16, fp16 or fp32, got {value!r}",
                            path, container, ckey)
        loss_fp32 = value.lower() not in FP32_NAMES
        return Setting(overrides=(ov.format_override(prefix + alias.target, loss_fp32),),
                       keys=(alias.target,), values=((ov.canonical_key(key), value),),
                       env=((alias.env or "MFCL_AMP_DTYPE", value),))
    else:
        target = prefix + alias.target
        if alias.kind == "group" and value is not None and ov.is_group_option_name(value) is None:
            raise ctx.error(f"{value!r} is not a config group option name (alias {key!r} selects "
                            f"config group {alias.target!r})", path, container, ckey)
    try:
        text = ov.format_override(target, value)
    except ov.FormatError as err:
        raise ctx.error(str(err), path, container, ckey) from None
    return Setting(overrides=(text,), keys=(ov.canonical_key(target),),
                   values=((ov.canonical_key(target), value),))


def _sweep_values(key: str, text: str, ctx: _Ctx, path: str, container: Any, ckey: Any) -> Optional[list]:
    """The values of a Hydra sweep string (`a,b`, `range(1,4)`, `choice(x,y)`, `glob(*)`), or
    None if `text` is not a sweep."""
    from hydra.core.override_parser.types import ValueType
    from hydra.errors import HydraException

    target = ctx.match_key(key)
    try:
        parsed = ov.parse_override(f"{target}={text}", ctx.config_loader)
    except HydraException:
        return None
    if parsed.value_type == ValueType.INTERVAL_SWEEP:
        raise ctx.error("interval() is a search space for an optimizing sweeper, not a list of values",
                        path, container, ckey)
    if not parsed.is_discrete_sweep():
        return None
    if parsed.value_type == ValueType.GLOB_CHOICE_SWEEP and ctx.config_loader is None:
        raise ctx.error("glob() needs the app's config groups; use it in a Hydra run, not here",
                        path, container, ckey)
    return [ov.plain_value(v) for v in parsed.sweep_iterator()]


def _axis_values(key: str, raw: Any, ctx: _Ctx, path: str, container: Any, ckey: Any) -> Optional[list]:
    """A grid value as a list of values: a list, or a Hydra sweep string. None for a scalar."""
    if isinstance(raw, list):
        values = list(raw)
    elif isinstance(raw, str):
        values = _sweep_values(key, raw, ctx, path, container, ckey)
        if values is None:
            return None
    else:
        return None
    if not values:
        raise ctx.error("empty list of values: nothing to sweep", path, container, ckey)
    return values


def _axis(key: str, values: list, ctx: _Ctx, path: str, container: Any, ckey: Any) -> Axis:
    items = container.get(ckey) if isinstance(container, dict) else None
    if isinstance(items, list):  # point errors at the item's own line
        settings = [_value_setting(key, v, ctx, f"{path}[{i}]", items, i) for i, v in enumerate(values)]
    else:
        settings = [_value_setting(key, v, ctx, path, container, ckey) for v in values]
    return Axis(source=f"{ctx.prefix}{path}", settings=tuple(settings))


def _flat_items(raw: dict, path: str):
    """(dotted key, value, path, container, container key), descending into nested mappings (002 form)."""
    for key, value in raw.items():
        here = f"{path}.{key}" if path else str(key)
        if isinstance(value, dict) and value and isinstance(key, str):
            for sub_key, sub_value, sub_path, sub_container, sub_ckey in _flat_items(value, here):
                yield f"{key}.{sub_key}", sub_value, sub_path, sub_container, sub_ckey
        else:
            yield key, value, here, raw, key


def _kind(raw: Any) -> str:
    return "a mapping" if isinstance(raw, dict) else "a list" if isinstance(raw, list) else type(raw).__name__


def _mapping(raw: Any, ctx: _Ctx, path: str, container: Any, key: Any, what: str) -> dict:
    if not isinstance(raw, dict):
        raise ctx.error(f"must be a mapping ({what}), got {_kind(raw)} {raw!r}", path, container, key)
    return raw


def _list(raw: Any, ctx: _Ctx, path: str, container: Any, key: Any, what: str) -> list:
    if not isinstance(raw, list):
        raise ctx.error(f"must be a list ({what}), got {_kind(raw)} {raw!r}", path, container, key)
    if not raw:
        raise ctx.error(f"empty list ({what}): nothing to sweep", path, container, key)
    return raw


# ----------------------------------------------------------------------------- parts


@dataclass
class _Run:
    params: dict  # match key -> Setting
    name: Optional[str]
    budget: Optional[Setting]
    resources: RunResources
    metadata: dict


@dataclass
class _Part:
    """What one source (file root, a group entry, hydra.sweeper inline keys) contributes to a block."""

    group: Optional[str] = None
    grid: dict = field(default_factory=dict)  # match key -> Axis
    paired: list = field(default_factory=list)  # Axis
    runs: Optional[list] = None  # _Run
    defaults: dict = field(default_factory=dict)  # match key -> Setting
    budget: Optional[Setting] = None
    resources: RunResources = field(default_factory=RunResources)
    metadata: dict = field(default_factory=dict)

    def under(self, higher: "_Part") -> "_Part":
        """This part with `higher`'s values winning."""
        return _Part(
            group=higher.group or self.group,
            grid={**self.grid, **higher.grid},
            paired=self.paired + higher.paired,
            runs=higher.runs if higher.runs is not None else self.runs,
            defaults={**self.defaults, **higher.defaults},
            budget=higher.budget or self.budget,
            resources=higher.resources.merged_over(self.resources),
            metadata={**self.metadata, **higher.metadata},
        )


def _grid_part(raw: Any, ctx: _Ctx, path: str, container: Any, key: Any) -> dict:
    grid = _mapping(raw, ctx, path, container, key, "key -> list of values")
    if not grid:
        raise ctx.error("empty grid: nothing to sweep", path, container, key)
    out = {}
    for name, value, here, parent, pkey in _flat_items(grid, path):
        values = _axis_values(name, value, ctx, here, parent, pkey)
        if values is None:
            raise ctx.error(f"expected a list of values (or a Hydra sweep like 'range(1,4)'), got {value!r}",
                            here, parent, pkey)
        out[ctx.match_key(name)] = _axis(name, values, ctx, here, parent, pkey)
    return out


def _params_part(raw: Any, ctx: _Ctx, path: str, container: Any, key: Any) -> tuple[dict, dict]:
    """A group entry's `params`: lists and sweep strings vary (grid), scalars are fixed (defaults)."""
    params = _mapping(raw, ctx, path, container, key, "key -> value or list of values")
    grid, defaults = {}, {}
    for name, value, here, parent, pkey in _flat_items(params, path):
        values = _axis_values(name, value, ctx, here, parent, pkey)
        if values is None:
            defaults[ctx.match_key(name)] = _value_setting(name, value, ctx, here, parent, pkey)
        else:
            grid[ctx.match_key(name)] = _axis(name, values, ctx, here, parent, pkey)
    return grid, defaults


def _paired_part(raw: Any, ctx: _Ctx, path: str, container: Any, key: Any) -> list:
    entries = _list(raw, ctx, path, container, key, "groups of equal-length lists")
    axes = []
    for i, entry in enumerate(entries):
        here = f"{path}[{i}]"
        _mapping(entry, ctx, here, entries, i, "key -> list, varied together")
        label = here
        if len(entry) == 1 and isinstance(next(iter(entry.values())), dict):  # named group (002 form)
            name = next(iter(entry))
            label = here = f"{here}.{name}"
            entry = entry[name]
        columns = []
        for name, value, vpath, parent, pkey in _flat_items(entry, here):
            values = _axis_values(name, value, ctx, vpath, parent, pkey)
            if values is None:
                raise ctx.error(f"expected a list of values, got {value!r}", vpath, parent, pkey)
            columns.append((name, values, vpath, parent, pkey))
        if not columns:
            raise ctx.error("empty paired group: nothing to sweep", here, entries, i)
        lengths = {name: len(values) for name, values, *_ in columns}
        if len(set(lengths.values())) > 1:
            shown = ", ".join(f"{k}={n}" for k, n in lengths.items())
            raise ctx.error(f"paired lists must have equal lengths, got {shown}", label, entries, i)
        settings = []
        for row in range(len(columns[0][1])):
            parts = [_value_setting(name, values[row], ctx, f"{vpath}[{row}]", parent, pkey)
                     for name, values, vpath, parent, pkey in columns]
            settings.append(_combine(parts))
        axes.append(Axis(source=f"{ctx.prefix}{label}", settings=tuple(settings)))
    return axes


def _entry_params(entry: dict, ctx: _Ctx, path: str, reserved: Sequence[str]) -> tuple[dict, dict]:
    """(params: match key -> Setting, metadata) of a run entry or a `defaults` mapping."""
    params, metadata = {}, dict(entry.get("metadata") or {})
    for key, value in entry.items():
        if key in reserved:
            continue
        if ctx.dialect == "param-file" and key in INFRA_KEYS:
            metadata[key] = value
            continue
        params[ctx.match_key(key) if isinstance(key, str) else key] = _value_setting(
            key, value, ctx, f"{path}{key}", entry, key)
    return params, metadata


def _run(entry: Any, ctx: _Ctx, path: str, container: Any, index: int) -> _Run:
    _mapping(entry, ctx, path, container, index, "one run: key -> value")
    params, metadata = _entry_params(entry, ctx, f"{path}.", RUN_RESERVED_KEYS)
    name = entry.get("name")
    if name is not None and (not isinstance(name, str) or not name):
        raise ctx.error(f"a run name must be a non-empty string, got {name!r}", f"{path}.name", entry, "name")
    budget = _budget(entry["budget"], ctx, f"{path}.budget", entry, "budget") if "budget" in entry else None
    return _Run(params=params, name=name, budget=budget, resources=_resources(entry, ctx, f"{path}."),
                metadata=metadata)


def _runs_part(raw: Any, ctx: _Ctx, path: str, container: Any, key: Any) -> list:
    entries = _list(raw, ctx, path, container, key, "one mapping per run")
    runs, seen = [], {}
    for i, entry in enumerate(entries):
        run = _run(entry, ctx, f"{path}[{i}]", entries, i)
        if run.name is not None:
            if run.name in seen:
                raise ctx.error(f"duplicate run name {run.name!r} (also {path}[{seen[run.name]}])",
                                f"{path}[{i}].name", entry, "name")
            seen[run.name] = i
        runs.append(run)
    return runs


def _part(raw: dict, ctx: _Ctx, path: str, allowed: Sequence[str]) -> _Part:
    """Parse one source mapping (file root, group entry or hydra.sweeper inline keys)."""
    unknown = [k for k in raw if k not in allowed]
    if unknown:
        raise ctx.error(f"unknown key (known here: {', '.join(sorted(allowed))})",
                        f"{path}{unknown[0]}", raw, unknown[0])
    part = _Part(resources=_resources(raw, ctx, path))
    if "group" in raw:
        group = raw["group"]
        if not isinstance(group, str) or not group:
            raise ctx.error(f"a group name must be a non-empty string, got {group!r}", f"{path}group", raw, "group")
        part.group = group
    if "grid" in raw and not isinstance(raw["grid"], list):
        part.grid = _grid_part(raw["grid"], ctx, f"{path}grid", raw, "grid")
    if "params" in raw and not isinstance(raw["params"], list):
        grid, defaults = _params_part(raw["params"], ctx, f"{path}params", raw, "params")
        part.grid.update(grid)
        part.defaults.update(defaults)
    if "paired" in raw:
        part.paired = _paired_part(raw["paired"], ctx, f"{path}paired", raw, "paired")
    for runs_key in ("runs", "params"):
        if runs_key in raw and (runs_key == "runs" or isinstance(raw[runs_key], list)):
            part.runs = _runs_part(raw[runs_key], ctx, f"{path}{runs_key}", raw, runs_key)
    for defaults_key in ("defaults", "run_defaults"):  # run_defaults: the hydra.sweeper spelling
        if defaults_key not in raw:
            continue
        here = f"{path}{defaults_key}"
        defaults = _mapping(raw[defaults_key], ctx, here, raw, defaults_key, "key -> value")
        params, metadata = _entry_params(defaults, ctx, f"{here}.", RUN_RESERVED_KEYS)
        part.defaults.update(params)
        part.metadata.update(metadata)
        part.resources = _resources(defaults, ctx, f"{here}.").merged_over(part.resources)
        if "budget" in defaults:
            part.budget = _budget(defaults["budget"], ctx, f"{here}.budget", defaults, "budget")
    if "budget" in raw:
        part.budget = _budget(raw["budget"], ctx, f"{path}budget", raw, "budget")
    if "metadata" in raw:
        part.metadata.update(_mapping(raw["metadata"], ctx, f"{path}metadata", raw, "metadata", "for reports"))
    return part


# ----------------------------------------------------------------------------- blocks


def _combine(parts: Sequence[Setting], **extra: Any) -> Setting:
    return Setting(
        overrides=tuple(o for p in parts for o in p.overrides),
        keys=tuple(k for p in parts for k in p.keys),
        values=tuple(v for p in parts for v in p.values),
        env=tuple(e for p in parts for e in p.env),
        budget=next((p.budget for p in reversed(parts) if p.budget is not None), None),
        **extra,
    )


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


# ----------------------------------------------------------------------------- command line


def _cli_axes(params: Mapping[str, str], cli_overrides: Sequence[str], config_loader: Any) -> list[Axis]:
    """Hydra's BasicSweeper semantics: `hydra.sweeper.params` first, then the command line; a
    later override of the same key replaces an earlier one; keys are kept exactly as written."""
    from hydra.errors import HydraException

    lines = [f"{k}={v}" for k, v in (params or {}).items()] + list(cli_overrides)
    found: dict[str, Axis] = {}
    for line in lines:
        try:
            parsed = ov.parse_override(line, config_loader)
            if parsed.is_interval_sweep():
                raise SweepSpecError("interval() is a search space for an optimizing sweeper, "
                                     "not a list of values", key=line)
            key = parsed.get_key_element()
            canon = ov.canonical_key(key)
            if parsed.is_sweep_override():
                elements = list(parsed.sweep_iterator())
                settings = tuple(Setting(
                    overrides=(f"{key}={parsed._get_value_element_as_str(e)}",), keys=(canon,),
                    values=((canon, ov.plain_value(e)),)) for e in elements)
                if not settings:
                    raise SweepSpecError("the sweep has no values", key=line)
            elif parsed.is_delete() and "=" not in line:
                settings = (Setting(overrides=(key,), keys=(canon,)),)
            else:
                settings = (Setting(overrides=(f"{key}={parsed.get_value_element_as_str()}",),
                                    keys=(canon,), values=((canon, parsed.value()),)),)
        except HydraException as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise SweepSpecError(f"cannot parse override: {first}", key=line) from None
        found[key] = Axis(source=f"overrides:{key}", settings=settings)
    return list(found.values())


# ----------------------------------------------------------------------------- knobs


def _aliases(tables: Sequence[tuple[Any, _Ctx, str, Any]]) -> dict[str, _Alias]:
    """DEFAULT_ALIASES, then each table in turn (a null target removes an alias)."""
    merged: dict[str, tuple[Any, _Ctx, str, Any]] = {k: (v, None, "", None) for k, v in DEFAULT_ALIASES.items()}
    for table, ctx, path, container in tables:
        if table is None:
            continue
        _mapping(table, ctx, path, container, "aliases", "alias -> target key or {kind, target, env}")
        for name, target in table.items():
            if target is None:
                merged.pop(name, None)
            else:
                merged[name] = (target, ctx, f"{path}.{name}", table)
    out = {}
    for name, (raw, ctx, path, container) in merged.items():
        spec = {"kind": "key", "target": raw} if isinstance(raw, str) else raw
        kind = spec.get("kind", "key") if isinstance(spec, dict) else None
        target = spec.get("target") if isinstance(spec, dict) else None
        env = spec.get("env") if isinstance(spec, dict) else None
        problem = None
        if not isinstance(spec, dict) or set(spec) - {"kind", "target", "env"}:
            problem = f"an alias is a target key or {{kind, target, env}}, got {raw!r}"
        elif kind not in ALIAS_KINDS:
            problem = f"unknown alias kind {kind!r} (known: {', '.join(ALIAS_KINDS)})"
        elif not isinstance(target, str) or not _valid_key(target):
            problem = f"unknown alias target {target!r}: expected a config key like 'data.batch_size'"
        elif env is not None and (not isinstance(env, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", env)):
            problem = f"alias env must be an environment variable name, got {env!r}"
        if problem:
            raise ctx.error(problem, path, container, name)
        out[name] = _Alias(kind=kind, target=target, env=env)
    return out


def _valid_key(key: str) -> bool:
    from hydra.errors import HydraException

    try:
        parsed = ov.parse_override(f"{key}=0")
    except HydraException:
        return False
    return parsed.get_key_element() == key and not key.startswith(("+", "~"))


def _seeds(raw: Any, ctx: _Ctx, path: str, container: Any) -> Optional[list[int]]:
    if raw is None:
        return None
    if isinstance(raw, list):
        if not raw or not all(isinstance(s, int) and not isinstance(s, bool) for s in raw):
            raise ctx.error(f"must be a positive count or a non-empty list of integers, got {raw!r}",
                            path, container, "seeds")
        return list(raw)
    return list(range(_positive_int(raw, ctx, path, container, "seeds")))


def _knob(name: str, sources: Sequence[tuple[Any, _Ctx, str, Any]]) -> tuple[Any, _Ctx, str, Any]:
    """The last source that sets knob `name`: (value, ctx, path, container)."""
    chosen = (None, sources[0][1], name, None)
    for raw, ctx, path, container in sources:
        if isinstance(raw, dict) and raw.get(name) is not None:
            chosen = (raw[name], ctx, f"{path}{name}", raw)
    return chosen


def _exclude(entries: Sequence[tuple[Any, _Ctx, str, Any]]) -> list[tuple[tuple[str, Any], ...]]:
    out = []
    for raw, ctx, path, container in entries:
        if raw is None or raw == []:
            continue
        items = _list(raw, ctx, path, container, "exclude", "partial assignments key -> value")
        for i, entry in enumerate(items):
            here = f"{path}[{i}]"
            if not isinstance(entry, dict) or not entry:
                raise ctx.error(f"an exclude entry is a non-empty mapping key -> value, got {entry!r}",
                                here, items, i)
            out.append((tuple((ctx.match_key(k), v) for k, v in entry.items()), ctx, here, entry))
    return out


# ----------------------------------------------------------------------------- dialects


def _detect(doc: Any, file: str) -> str:
    if doc is None:
        raise SweepSpecError("the sweep file is empty: nothing to sweep", file=file, line=1)
    if not isinstance(doc, dict):
        raise SweepSpecError(f"a sweep file must be a mapping, got {type(doc).__name__}", file=file,
                             line=sweepfile.line_of(doc))
    if "method" in doc or "parameters" in doc:
        return "wandb"
    if "sweep" in doc:
        return "hsm"
    if isinstance(doc.get("params"), list):
        return "param-file"
    if isinstance(doc.get("grid"), list):
        return "entries"
    return "native"


_DIALECT_KEYS = {"native": NATIVE_KEYS, "entries": NATIVE_KEYS, "param-file": PARAM_FILE_KEYS,
                 "hsm": HSM_KEYS, "wandb": (*wandb_sweep.WANDB_KEYS, *KNOB_KEYS)}


def _file_root(doc: dict, dialect: str, ctx: _Ctx, seed: Optional[int]) -> tuple[dict, dict, str]:
    """(native root mapping, spec metadata, path prefix) of a sweep file."""
    allowed = _DIALECT_KEYS[dialect]
    unknown = [k for k in doc if k not in allowed]
    if unknown:
        raise ctx.error(f"unknown top-level key for the {dialect} sweep form "
                        f"(known: {', '.join(sorted(map(str, allowed)))})", str(unknown[0]), doc, unknown[0])
    if dialect == "hsm":
        body = _mapping(doc["sweep"], ctx, "sweep", doc, "sweep", "grid/paired")
        meta = dict(doc.get("metadata") or {})
        if "defaults" in doc:  # a Hydra defaults list for the hsm tool's own launcher choice
            meta["hydra_defaults"] = doc["defaults"]
        return body, meta, "sweep."
    if dialect == "wandb":
        def fail(message, path, container, key):
            return ctx.error(message, path, container, key)

        native = wandb_sweep.to_native(doc, seed=seed if seed is not None else doc.get("seed"), fail=fail)
        native.update({k: doc[k] for k in KNOB_KEYS if k in doc})
        return native, native.pop("metadata"), ""
    if dialect == "param-file":
        meta = {k: doc[k] for k in ("comment", "description", "date") if k in doc}
        return {k: v for k, v in doc.items() if k not in meta}, meta, ""
    return doc, {}, ""


# ----------------------------------------------------------------------------- entry point


def _plain(value: Any) -> Any:
    """OmegaConf containers (hydra.sweeper.* values) as plain Python."""
    if type(value).__module__.startswith("omegaconf"):
        from omegaconf import OmegaConf

        return OmegaConf.to_container(value, resolve=True)
    return value


def load_spec(sweep_file: Optional[str], *, cli_overrides: Sequence[str] = (),
              params: Optional[Mapping[str, str]] = None, options: Optional[SpecOptions] = None,
              config_loader: Any = None) -> SweepSpec:
    """The normalized spec of a sweep file + hydra.sweeper options + command-line overrides.

    `config_loader` is needed only for `glob()` sweeps. Raises SweepSpecError for malformed input.
    """
    options = options or SpecOptions()
    inline = {f.name: _plain(getattr(options, f.name)) for f in dataclasses.fields(options)}
    inline = {k: v for k, v in inline.items() if v is not None}
    params = _plain(params) or {}
    doc = sweepfile.read(sweep_file) if sweep_file is not None else None
    dialect = _detect(doc, sweep_file) if sweep_file is not None else "native"
    probe = _Ctx(sweep_file, "", {}, config_loader, dialect)
    opt_ctx_probe = _Ctx(None, "hydra.sweeper.", {}, config_loader, "native")
    holder = doc.get("sweep") if dialect == "hsm" else doc
    holder = holder if isinstance(holder, dict) else {}
    probe.prefix = "sweep." if dialect == "hsm" else ""
    aliases = _aliases([(holder.get("aliases"), probe, "aliases", holder),
                        (inline.get("aliases"), opt_ctx_probe, "aliases", inline)])
    file_ctx = _Ctx(sweep_file, "", aliases, config_loader, dialect)
    opt_ctx = _Ctx(None, "hydra.sweeper.", aliases, config_loader, "native")

    sources: list[tuple[Any, _Ctx, str, Any]] = []
    spec_meta: dict = {}
    root_part = _Part()
    entries: list = []
    if doc is not None:
        root, spec_meta, prefix = _file_root(doc, dialect, file_ctx, inline.get("seed"))
        file_ctx = _Ctx(sweep_file, prefix, aliases, config_loader, dialect)
        groups_key = "groups" if "groups" in root else "grid" if isinstance(root.get("grid"), list) else None
        if groups_key:
            entries = _list(root[groups_key], file_ctx, groups_key, root, groups_key, "group entries")
        root_keys = NATIVE_KEYS if dialect != "param-file" else (*PARAM_FILE_KEYS, *NATIVE_KEYS)
        # The root itself (not a filtered copy), so its keys keep their file lines; `_part`
        # leaves the knobs and a `grid:`/`groups:` list of entries alone.
        root_part = _part(root, file_ctx, "", (*root_keys, *KNOB_KEYS))
        sources.append((root, file_ctx, "", root))
    inline_keys = ("grid", "paired", "runs", "run_defaults")
    inline_part = _part({k: v for k, v in inline.items() if k in inline_keys}, opt_ctx, "", inline_keys)
    sources.append((inline, opt_ctx, "", inline))
    base = root_part.under(inline_part)

    parts = []
    for i, entry in enumerate(entries):
        here = f"{groups_key}[{i}]"
        _mapping(entry, file_ctx, here, entries, i, "a group entry: group, params, budget, ...")
        parts.append(base.under(_part(entry, file_ctx, f"{here}.", GROUP_ENTRY_KEYS)))
    blocks = [_block(p) for p in (parts or [base])]

    cli = _cli_axes(params, cli_overrides, config_loader)
    cli_keys = {k for axis in cli for k in axis.keys()}
    seeds_raw, seeds_ctx, seeds_path, seeds_container = _knob("seeds", sources)
    seeds = _seeds(seeds_raw, seeds_ctx, seeds_path, seeds_container)
    seed_key_raw, sk_ctx, sk_path, sk_container = _knob("seed_key", sources)
    seed_key = "seed" if seed_key_raw is None else seed_key_raw
    if not isinstance(seed_key, str) or not _valid_key(ov.canonical_key(seed_key)):
        raise sk_ctx.error(f"must be a config key, got {seed_key!r}", sk_path, sk_container, "seed_key")

    final = []
    for block in blocks:
        axes = [a for a in (_strip(axis, cli_keys) for axis in block.axes) if a is not None] + cli
        if seeds is not None:
            canon = ov.canonical_key(seed_key)
            owner = next((a.source for a in axes if canon in a.keys()), None)
            if owner is not None:
                raise seeds_ctx.error(f"the seed key {canon!r} is also set by {owner}; remove one",
                                      seeds_path, seeds_container, "seeds")
            axes.append(Axis(source="seeds", settings=tuple(
                Setting(overrides=(ov.format_override(seed_key, s),), keys=(canon,), values=((canon, s),))
                for s in seeds)))
        final.append(dataclasses.replace(block, axes=tuple(_with_slugs(a) for a in axes)))

    known_keys = {k for block in final for axis in block.axes for s in axis.settings for k, _ in s.values}
    exclude = []
    for entry, ctx, path, container in _exclude([_knob_raw("exclude", s) for s in sources]):
        missing = next((k for k, _ in entry if k not in known_keys), None)
        if missing is not None:
            raise ctx.error(f"exclude key {missing!r} is not set by the sweep (keys: "
                            f"{', '.join(sorted(known_keys)) or 'none'})", path, container, None)
        exclude.append(entry)

    max_runs_raw, mr_ctx, mr_path, mr_container = _knob("max_runs", sources)
    max_runs = None if max_runs_raw is None else _positive_int(max_runs_raw, mr_ctx, mr_path, mr_container, "max_runs")
    shuffle_raw, sh_ctx, sh_path, sh_container = _knob("shuffle", sources)
    if shuffle_raw is not None and not isinstance(shuffle_raw, bool):
        raise sh_ctx.error(f"must be true or false, got {shuffle_raw!r}", sh_path, sh_container, "shuffle")
    seed_raw, sd_ctx, sd_path, sd_container = _knob("seed", sources)
    if seed_raw is not None and (isinstance(seed_raw, bool) or not isinstance(seed_raw, int)):
        raise sd_ctx.error(f"must be an integer, got {seed_raw!r}", sd_path, sd_container, "seed")

    spec = SweepSpec(blocks=tuple(final), exclude=tuple(exclude), max_runs=max_runs,
                     shuffle=bool(shuffle_raw), seed=seed_raw or 0, dialect=dialect,
                     source=sweep_file, metadata=spec_meta)
    if exclude:
        from mfcl_sweeps.expand import count

        if count(spec) == 0:
            _, ctx, path, container = next(_knob_raw("exclude", s) for s in sources
                                           if isinstance(s[0], dict) and s[0].get("exclude"))
            raise ctx.error("the exclude entries remove every run: nothing left to sweep",
                            path, container, "exclude")
    return spec


def _knob_raw(name: str, source: tuple[Any, _Ctx, str, Any]) -> tuple[Any, _Ctx, str, Any]:
    raw, ctx, path, container = source
    value = raw.get(name) if isinstance(raw, dict) else None
    return value, ctx, f"{path}{name}", raw
