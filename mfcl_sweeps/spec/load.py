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
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional, Sequence

from mfcl_sweeps.spec import overrides as ov
from mfcl_sweeps.spec import sweepfile
from mfcl_sweeps.spec import wandb as wandb_sweep
from mfcl_sweeps.errors import SweepSpecError
from mfcl_sweeps.model import RunResources
from mfcl_sweeps.spec.fields import (FP32_NAMES, RESOURCE_KEYS, Ctx, need_list, need_mapping, parse_aliases, parse_budget,
                                     parse_resources, parse_seeds, positive_int, valid_key)
from mfcl_sweeps.spec.types import Axis, Block, Setting, SpecOptions, SweepSpec

__all__ = ["Axis", "Block", "Setting", "SpecOptions", "SweepSpec", "load_spec"]

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

# ----------------------------------------------------------------------------- values -> settings


def _value_setting(key: Any, value: Any, ctx: Ctx, path: str, container: Any, ckey: Any) -> Setting:
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


def _sweep_values(key: str, text: str, ctx: Ctx, path: str, container: Any, ckey: Any) -> Optional[list]:
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


def _axis_values(key: str, raw: Any, ctx: Ctx, path: str, container: Any, ckey: Any) -> Optional[list]:
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


def _axis(key: str, values: list, ctx: Ctx, path: str, container: Any, ckey: Any) -> Axis:
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


def _grid_part(raw: Any, ctx: Ctx, path: str, container: Any, key: Any) -> dict:
    grid = need_mapping(raw, ctx, path, container, key, "key -> list of values")
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


def _params_part(raw: Any, ctx: Ctx, path: str, container: Any, key: Any) -> tuple[dict, dict]:
    """A group entry's `params`: lists and sweep strings vary (grid), scalars are fixed (defaults)."""
    params = need_mapping(raw, ctx, path, container, key, "key -> value or list of values")
    grid, defaults = {}, {}
    for name, value, here, parent, pkey in _flat_items(params, path):
        values = _axis_values(name, value, ctx, here, parent, pkey)
        if values is None:
            defaults[ctx.match_key(name)] = _value_setting(name, value, ctx, here, parent, pkey)
        else:
            grid[ctx.match_key(name)] = _axis(name, values, ctx, here, parent, pkey)
    return grid, defaults


def _paired_part(raw: Any, ctx: Ctx, path: str, container: Any, key: Any) -> list:
    entries = need_list(raw, ctx, path, container, key, "groups of equal-length lists")
    axes = []
    for i, entry in enumerate(entries):
        here = f"{path}[{i}]"
        need_mapping(entry, ctx, here, entries, i, "key -> list, varied together")
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


def _entry_params(entry: dict, ctx: Ctx, path: str, reserved: Sequence[str]) -> tuple[dict, dict]:
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


def _run(entry: Any, ctx: Ctx, path: str, container: Any, index: int) -> _Run:
    need_mapping(entry, ctx, path, container, index, "one run: key -> value")
    params, metadata = _entry_params(entry, ctx, f"{path}.", RUN_RESERVED_KEYS)
    name = entry.get("name")
    if name is not None and (not isinstance(name, str) or not name):
        raise ctx.error(f"a run name must be a non-empty string, got {name!r}", f"{path}.name", entry, "name")
    budget = parse_budget(entry["budget"], ctx, f"{path}.budget", entry, "budget") if "budget" in entry else None
    return _Run(params=params, name=name, budget=budget, resources=parse_resources(entry, ctx, f"{path}."),
                metadata=metadata)


def _runs_part(raw: Any, ctx: Ctx, path: str, container: Any, key: Any) -> list:
    entries = need_list(raw, ctx, path, container, key, "one mapping per run")
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


def _part(raw: dict, ctx: Ctx, path: str, allowed: Sequence[str]) -> _Part:
    """Parse one source mapping (file root, group entry or hydra.sweeper inline keys)."""
    unknown = [k for k in raw if k not in allowed]
    if unknown:
        raise ctx.error(f"unknown key (known here: {', '.join(sorted(allowed))})",
                        f"{path}{unknown[0]}", raw, unknown[0])
    part = _Part(resources=parse_resources(raw, ctx, path))
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
        defaults = need_mapping(raw[defaults_key], ctx, here, raw, defaults_key, "key -> value")
        params, metadata = _entry_params(defaults, ctx, f"{here}.", RUN_RESERVED_KEYS)
        part.defaults.update(params)
        part.metadata.update(metadata)
        part.resources = parse_resources(defaults, ctx, f"{here}.").merged_over(part.resources)
        if "budget" in defaults:
            part.budget = parse_budget(defaults["budget"], ctx, f"{here}.budget", defaults, "budget")
    if "budget" in raw:
        part.budget = parse_budget(raw["budget"], ctx, f"{path}budget", raw, "budget")
    if "metadata" in raw:
        part.metadata.update(need_mapping(raw["metadata"], ctx, f"{path}metadata", raw, "metadata", "for reports"))
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


def _file_root(doc: dict, dialect: str, ctx: Ctx, seed: Optional[int]) -> tuple[dict, dict, str]:
    """(native root mapping, spec metadata, path prefix) of a sweep file."""
    allowed = _DIALECT_KEYS[dialect]
    unknown = [k for k in doc if k not in allowed]
    if unknown:
        raise ctx.error(f"unknown top-level key for the {dialect} sweep form "
                        f"(known: {', '.join(sorted(map(str, allowed)))})", str(unknown[0]), doc, unknown[0])
    if dialect == "hsm":
        body = need_mapping(doc["sweep"], ctx, "sweep", doc, "sweep", "grid/paired")
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


_INLINE_KEYS = ("grid", "paired", "runs", "run_defaults")


def _file_parts(path: str, doc: Any, dialect: str, aliases: dict, config_loader: Any,
                seed: Optional[int]) -> tuple[_Source, _Part, list, dict]:
    """(knob source, root part, [(group entry, its path)], spec metadata) of a sweep file."""
    ctx = Ctx(path, "", aliases, config_loader, dialect)
    root, metadata, prefix = _file_root(doc, dialect, ctx, seed)
    ctx = Ctx(path, prefix, aliases, config_loader, dialect)
    entries: list = []
    groups_key = "groups" if "groups" in root else "grid" if isinstance(root.get("grid"), list) else None
    if groups_key is not None:
        items = need_list(root[groups_key], ctx, groups_key, root, groups_key, "group entries")
        entries = [(entry, f"{groups_key}[{i}]", items, i) for i, entry in enumerate(items)]
    allowed = (*PARAM_FILE_KEYS, *NATIVE_KEYS) if dialect == "param-file" else NATIVE_KEYS
    # The root itself (not a filtered copy) so its keys keep their lines; `_part` leaves the knobs
    # and a `grid:`/`groups:` list of entries alone.
    root_part = _part(root, ctx, "", allowed)
    parts = []
    for entry, here, items, i in entries:
        need_mapping(entry, ctx, here, items, i, "a group entry: group, params, budget, ...")
        parts.append(_part(entry, ctx, f"{here}.", GROUP_ENTRY_KEYS))
    return _Source(root, ctx), root_part, parts, metadata


def _alias_table(doc: Any, dialect: str, path: Optional[str], inline: dict) -> dict:
    holder = doc.get("sweep") if dialect == "hsm" else doc
    holder = holder if isinstance(holder, dict) else {}
    file_ctx = Ctx(path, "sweep." if dialect == "hsm" else "", {}, None, dialect)
    opt_ctx = Ctx(None, "hydra.sweeper.", {}, None, "native")
    return parse_aliases([(holder.get("aliases"), file_ctx, "aliases", holder),
                          (inline.get("aliases"), opt_ctx, "aliases", inline)])


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


def load_spec(sweep_file: Optional[str], *, cli_overrides: Sequence[str] = (),
              params: Optional[Mapping[str, str]] = None, options: Optional[SpecOptions] = None,
              config_loader: Any = None) -> SweepSpec:
    """The normalized spec of a sweep file + hydra.sweeper options + command-line overrides.

    `config_loader` is needed only for `glob()` sweeps. Raises SweepSpecError for malformed input.
    """
    options = options or SpecOptions()
    inline = {f.name: _plain(getattr(options, f.name)) for f in dataclasses.fields(options)}
    inline = {k: v for k, v in inline.items() if v is not None}
    doc = sweepfile.read(sweep_file) if sweep_file is not None else None
    dialect = _detect(doc, sweep_file) if sweep_file is not None else "native"
    aliases = _alias_table(doc, dialect, sweep_file, inline)

    sources: list[_Source] = []
    base, entry_parts, metadata = _Part(), [], {}
    if sweep_file is not None:
        source, base, entry_parts, metadata = _file_parts(
            sweep_file, doc, dialect, aliases, config_loader, inline.get("seed"))
        sources.append(source)
    opt_ctx = Ctx(None, "hydra.sweeper.", aliases, config_loader, "native")
    sources.append(_Source(inline, opt_ctx))
    base = base.under(_part({k: v for k, v in inline.items() if k in _INLINE_KEYS}, opt_ctx, "", _INLINE_KEYS))
    blocks = [_block(base.under(p)) for p in entry_parts] or [_block(base)]

    cli = _cli_axes(_plain(params) or {}, cli_overrides, config_loader)
    seeds = _seed_axis(sources)
    blocks = [dataclasses.replace(b, axes=_final_axes(b, cli, seeds)) for b in blocks]
    known_keys = {k for b in blocks for a in b.axes for s in a.settings for k, _ in s.values}
    spec = SweepSpec(blocks=tuple(blocks), exclude=tuple(_exclude(sources, known_keys)),
                     dialect=dialect, source=sweep_file, metadata=metadata, **_order_knobs(sources))
    if spec.exclude:
        from mfcl_sweeps.expand import count

        if count(spec) == 0:
            source = next(s for s in sources if s.get("exclude"))
            raise source.error("exclude", "the exclude entries remove every run: nothing left to sweep")
    return spec
