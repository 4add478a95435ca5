"""The small typed fields of a sweep spec (budget, launcher resources, aliases, seeds) and the
context every parser reports errors through (file, line, key path)."""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Optional, Sequence

from mfcl_sweeps.errors import SweepSpecError
from mfcl_sweeps.model import Budget, RunResources
from mfcl_sweeps.spec import overrides as ov
from mfcl_sweeps.spec import sweepfile
from mfcl_sweeps.spec.limits import axis_values_message
from mfcl_sweeps.spec.types import Setting

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
INT_RESOURCES = ("nnodes", "node_rank", "nproc_per_node", "gpus_per_node", "cpus_per_task")
RESOURCE_KEYS = (*INT_RESOURCES, "timeout_min", "timeout", "ttl", "mem_gb", "partition", "rendezvous")
RENDEZVOUS_KEYS = ("backend", "endpoint", "id", "conf")
DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhd])")
DURATION_MINUTES = {"s": 1 / 60, "m": 1.0, "h": 60.0, "d": 1440.0}


@dataclass(frozen=True)
class Alias:
    kind: str
    target: str
    env: Optional[str] = None


class Ctx:
    """Where values come from (file or `hydra.sweeper`), for error messages; plus the alias table."""

    def __init__(self, file: Optional[str], prefix: str, aliases: dict[str, Alias],
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


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def positive_int(value: Any, ctx: Ctx, path: str, container: Any, key: Any, *, zero_ok=False) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < (0 if zero_ok else 1):
        what = "a non-negative" if zero_ok else "a positive"
        raise ctx.error(f"must be {what} integer, got {value!r}", path, container, key)
    return value


def duration_minutes(value: Any, ctx: Ctx, path: str, container: Any, key: Any) -> float:
    """`30m`, `2h`, `4h30m`, `90s`, `1d`, or a number of minutes."""
    if is_number(value) and value > 0:
        return float(value)
    if isinstance(value, str):
        text = value.strip().lower()
        parts = DURATION.findall(text)
        if parts and "".join(n + u for n, u in parts) == text:
            minutes = sum(float(n) * DURATION_MINUTES[u] for n, u in parts)
            if minutes > 0:
                return minutes
    raise ctx.error(f"expected a positive duration like '30m', '2h', '4h30m' or minutes, got {value!r}",
                    path, container, key)


def parse_budget(raw: Any, ctx: Ctx, path: str, container: Any, key: Any) -> Setting:
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
    if not is_number(limit) or not limit > 0:
        raise ctx.error(f"budget limit must be a number > 0, got {limit!r}", f"{path}.limit", raw,
                        "limit" if "limit" in raw else None)
    metric = raw.get("target_metric")
    if metric is not None and not isinstance(metric, str):
        raise ctx.error(f"must be a metric name, got {metric!r}", f"{path}.target_metric", raw, "target_metric")
    target = raw.get("target_value")
    if target is not None and not is_number(target):
        raise ctx.error(f"must be a number, got {target!r}", f"{path}.target_value", raw, "target_value")
    limit_key = f"{BUDGET_PREFIX}.{BUDGET_LIMIT_KEYS[mode]}"
    return Setting(
        overrides=(f"{BUDGET_PREFIX}.enabled=true", ov.format_override(limit_key, limit)),
        keys=(f"{BUDGET_PREFIX}.enabled", limit_key),
        budget=Budget(mode=mode, limit=limit, target_metric=metric, target_value=target),
    )


def parse_resources(entry: dict, ctx: Ctx, path: str) -> RunResources:
    """The RunResources named in `entry` (a mapping that may hold other keys too)."""
    found: dict[str, Any] = {}
    for key in RESOURCE_KEYS:
        if key not in entry:
            continue
        value, here = entry[key], f"{path}{key}"
        if key in INT_RESOURCES:
            found[key] = positive_int(value, ctx, here, entry, key, zero_ok=(key == "node_rank"))
        elif key in ("timeout_min", "timeout", "ttl"):
            found["timeout_min"] = duration_minutes(value, ctx, here, entry, key)
        elif key == "mem_gb":
            if not is_number(value) or value <= 0:
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


def kind_of(raw: Any) -> str:
    return "a mapping" if isinstance(raw, dict) else "a list" if isinstance(raw, list) else type(raw).__name__


def need_mapping(raw: Any, ctx: Ctx, path: str, container: Any, key: Any, what: str) -> dict:
    if not isinstance(raw, dict):
        raise ctx.error(f"must be a mapping ({what}), got {kind_of(raw)} {raw!r}", path, container, key)
    return raw


def need_list(raw: Any, ctx: Ctx, path: str, container: Any, key: Any, what: str) -> list:
    if not isinstance(raw, list):
        raise ctx.error(f"must be a list ({what}), got {kind_of(raw)} {raw!r}", path, container, key)
    if not raw:
        raise ctx.error(f"empty list ({what}): nothing to sweep", path, container, key)
    return raw


def parse_aliases(tables: Sequence[tuple[Any, Ctx, str, Any]]) -> dict[str, Alias]:
    """DEFAULT_ALIASES, then each table in turn (a null target removes an alias)."""
    merged: dict[str, tuple[Any, Ctx, str, Any]] = {k: (v, None, "", None) for k, v in DEFAULT_ALIASES.items()}
    for table, ctx, path, container in tables:
        if table is None:
            continue
        need_mapping(table, ctx, path, container, "aliases", "alias -> target key or {kind, target, env}")
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
        elif not isinstance(target, str) or not valid_key(target):
            problem = f"unknown alias target {target!r}: expected a config key like 'data.batch_size'"
        elif env is not None and (not isinstance(env, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", env)):
            problem = f"alias env must be an environment variable name, got {env!r}"
        if problem:
            raise ctx.error(problem, path, container, name)
        out[name] = Alias(kind=kind, target=target, env=env)
    return out


def valid_key(key: str) -> bool:
    from hydra.errors import HydraException

    try:
        parsed = ov.parse_override(f"{key}=0")
    except HydraException:
        return False
    return parsed.get_key_element() == key and not key.startswith(("+", "~"))


def parse_seeds(raw: Any, ctx: Ctx, path: str, container: Any) -> Optional[list[int]]:
    if raw is None:
        return None
    if isinstance(raw, list):
        if not raw or not all(isinstance(s, int) and not isinstance(s, bool) for s in raw):
            raise ctx.error(f"must be a positive count or a non-empty list of integers, got {raw!r}",
                            path, container, "seeds")
        seeds = list(raw)
    else:
        n = positive_int(raw, ctx, path, container, "seeds")
        problem = axis_values_message(n)
        if problem:
            raise ctx.error(problem, path, container, "seeds")
        seeds = list(range(n))
    problem = axis_values_message(len(seeds))
    if problem:
        raise ctx.error(problem, path, container, "seeds")
    return seeds
