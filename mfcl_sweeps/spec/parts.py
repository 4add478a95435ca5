"""Values -> settings, and the parts of a sweep (grid, params, paired, runs) as settings and axes."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

from mfcl_sweeps.model import RunResources
from mfcl_sweeps.spec import overrides as ov
from mfcl_sweeps.spec import sweepfile
from mfcl_sweeps.spec.dialects import INFRA_KEYS, RUN_RESERVED_KEYS
from mfcl_sweeps.spec.fields import (
    FP32_NAMES,
    Ctx,
    need_list,
    need_mapping,
    parse_budget,
    parse_resources,
)
from mfcl_sweeps.spec.limits import axis_values_message, sweep_problem
from mfcl_sweeps.spec.types import Axis, Setting

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
    problem = sweep_problem(parsed)
    if problem:
        raise ctx.error(problem, path, container, ckey)
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
    problem = axis_values_message(len(values))
    if problem:
        raise ctx.error(problem, path, container, ckey)
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


def _put_once(out: dict, seen: dict, name: Any, value: Any, ctx: Ctx, here: str, parent: Any, pkey: Any) -> None:
    """out[match key of `name`] = value, refusing a second spelling of one key in one mapping
    (`lr`, `+lr`, `++lr`; `model.hidden` and `model: {hidden}`; an alias and its target), which
    would otherwise drop one of them without a word. `seen`: match key -> path, shared by the
    dicts filled from one mapping."""
    key = ctx.match_key(name) if isinstance(name, str) else name
    if key in seen:
        raise ctx.error(f"sets {key!r} again (also set as {seen[key]}); keep one of them", here, parent, pkey)
    line = sweepfile.line_of(parent, pkey) if ctx.file else None
    seen[key] = f"{name!r}" + (f" on line {line}" if line else "")
    out[key] = value


def _combine(parts: Sequence[Setting], **extra: Any) -> Setting:
    return Setting(
        overrides=tuple(o for p in parts for o in p.overrides),
        keys=tuple(k for p in parts for k in p.keys),
        values=tuple(v for p in parts for v in p.values),
        env=tuple(e for p in parts for e in p.env),
        budget=next((p.budget for p in reversed(parts) if p.budget is not None), None),
        **extra,
    )


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
    out: dict = {}
    seen: dict = {}
    for name, value, here, parent, pkey in _flat_items(grid, path):
        values = _axis_values(name, value, ctx, here, parent, pkey)
        if values is None:
            raise ctx.error(f"expected a list of values (or a Hydra sweep like 'range(1,4)'), got {value!r}",
                            here, parent, pkey)
        _put_once(out, seen, name, _axis(name, values, ctx, here, parent, pkey), ctx, here, parent, pkey)
    return out


def _params_part(raw: Any, ctx: Ctx, path: str, container: Any, key: Any) -> tuple[dict, dict]:
    """A group entry's `params`: lists and sweep strings vary (grid), scalars are fixed (defaults)."""
    params = need_mapping(raw, ctx, path, container, key, "key -> value or list of values")
    if not params:  # as `grid: {}`: an entry that says it sweeps and sweeps nothing
        raise ctx.error("empty params: nothing to sweep (drop the key to run the entry's config once)",
                        path, container, key)
    grid: dict = {}
    defaults: dict = {}
    seen: dict = {}
    for name, value, here, parent, pkey in _flat_items(params, path):
        values = _axis_values(name, value, ctx, here, parent, pkey)
        if values is None:
            into, made = defaults, _value_setting(name, value, ctx, here, parent, pkey)
        else:
            into, made = grid, _axis(name, values, ctx, here, parent, pkey)
        _put_once(into, seen, name, made, ctx, here, parent, pkey)
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
        seen: dict = {}
        for name, value, vpath, parent, pkey in _flat_items(entry, here):
            values = _axis_values(name, value, ctx, vpath, parent, pkey)
            if values is None:
                raise ctx.error(f"expected a list of values, got {value!r}", vpath, parent, pkey)
            _put_once({}, seen, name, None, ctx, vpath, parent, pkey)
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
    params: dict = {}
    seen: dict = {}
    metadata = dict(entry.get("metadata") or {})
    for key, value in entry.items():
        if key in reserved:
            continue
        if ctx.dialect == "param-file" and key in INFRA_KEYS:
            metadata[key] = value
            continue
        here = f"{path}{key}"
        _put_once(params, seen, key, _value_setting(key, value, ctx, here, entry, key), ctx, here, entry, key)
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
