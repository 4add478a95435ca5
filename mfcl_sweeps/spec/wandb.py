"""A W&B sweep YAML (`method`, `parameters`) turned into the native sweep form.

`grid` becomes a grid; `random` draws `run_cap` runs with a seeded generator, so the same file
and seed always give the same runs; `bayes` needs an optimizing sweeper and is refused.
"""
from __future__ import annotations

import math
import random
from typing import Any, Callable, Optional

from mfcl_sweeps.errors import SweepSpecError
from mfcl_sweeps.spec.limits import MAX_RUN_CAP, too_many

WANDB_KEYS = {"method", "parameters", "run_cap", "metric", "name", "description", "program",
              "command", "project", "entity", "early_terminate"}
# Keys kept for reporting only.
_INFO_KEYS = ("metric", "name", "description", "program", "command", "project", "entity",
              "early_terminate")


def _number(spec: dict, field: str, where: Callable[..., SweepSpecError]) -> float:
    value = spec.get(field)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise where(f"'{field}' must be a number, got {value!r}", field)
    return value


def _draw_uniform(spec, where, rng):
    return rng.uniform(_number(spec, "min", where), _number(spec, "max", where))


def _draw_int_uniform(spec, where, rng):
    low, high = _number(spec, "min", where), _number(spec, "max", where)
    if int(low) != low or int(high) != high:
        raise where(f"int_uniform needs integer min/max, got {low!r}/{high!r}", "min")
    if low > high:
        raise where(f"int_uniform needs min <= max, got {low!r}/{high!r}", "min")
    return rng.randint(int(low), int(high))


def _draw_log_uniform_values(spec, where, rng):
    low, high = _number(spec, "min", where), _number(spec, "max", where)
    if low <= 0 or high <= 0:
        raise where(f"log_uniform_values needs min and max > 0, got {low!r}/{high!r}", "min")
    return math.exp(rng.uniform(math.log(low), math.log(high)))


def _draw_log_uniform(spec, where, rng):
    # W&B's log_uniform takes min/max as exponents of e.
    return math.exp(rng.uniform(_number(spec, "min", where), _number(spec, "max", where)))


_DISTRIBUTIONS = {
    "uniform": _draw_uniform,
    "int_uniform": _draw_int_uniform,
    "log_uniform_values": _draw_log_uniform_values,
    "log_uniform": _draw_log_uniform,
}


def _flatten(parameters: Any, prefix: str, path: str, fail) -> list[tuple[str, dict, str, Any, Any]]:
    """(key, parameter spec, path, container, container key) for every leaf parameter."""
    if not isinstance(parameters, dict) or not parameters:
        raise fail(f"'{path}' must be a non-empty mapping of parameter -> {{values|value|distribution}}",
                   path, None, None)
    out = []
    for name, spec in parameters.items():
        key, here = f"{prefix}{name}", f"{path}.{name}"
        if not isinstance(spec, dict):
            raise fail(f"expected a mapping like {{values: [...]}} or {{value: v}}, got {spec!r}",
                       here, parameters, name)
        if "parameters" in spec:
            out.extend(_flatten(spec["parameters"], f"{key}.", f"{here}.parameters", fail))
        else:
            out.append((key, spec, here, parameters, name))
    return out


def to_native(doc: dict, *, seed: Optional[int], fail) -> dict:
    """The native form of a W&B sweep. `fail(message, path, container, key)` builds the error."""
    method = doc.get("method")
    if method == "bayes":
        raise fail("method 'bayes' needs an optimizing sweeper; use hydra/sweeper=optuna "
                   "(hydra-optuna-sweeper) for Bayesian search", "method", doc, "method")
    if method not in ("grid", "random"):
        raise fail(f"unknown W&B method {method!r} (supported: grid, random)", "method", doc, "method")
    leaves = _flatten(doc.get("parameters"), "", "parameters", fail)
    run_cap = doc.get("run_cap")
    if run_cap is not None and (isinstance(run_cap, bool) or not isinstance(run_cap, int) or run_cap <= 0):
        raise fail(f"run_cap must be a positive integer, got {run_cap!r}", "run_cap", doc, "run_cap")
    if run_cap is not None and run_cap > MAX_RUN_CAP:
        raise fail(too_many("run_cap", run_cap, MAX_RUN_CAP, "draw fewer runs"), "run_cap", doc, "run_cap")
    native: dict = {"metadata": {"wandb": {k: doc[k] for k in _INFO_KEYS if k in doc}}}
    if method == "grid":
        grid, defaults = {}, {}
        for key, spec, here, parent, name in leaves:
            if "values" in spec:
                grid[key] = spec["values"]
                if not isinstance(spec["values"], list) or not spec["values"]:
                    raise fail(f"'values' must be a non-empty list, got {spec['values']!r}",
                               f"{here}.values", spec, "values")
            elif "value" in spec:
                defaults[key] = spec["value"]
            else:
                raise fail("grid search needs 'values' or 'value' for every parameter "
                           f"(got {sorted(spec)})", here, parent, name)
        native.update(grid=grid, defaults=defaults)
        if run_cap is not None:
            native["max_runs"] = run_cap
        return native
    if run_cap is None:
        raise fail("method 'random' needs run_cap (the number of runs to draw)", "method", doc, "method")
    rng = random.Random(0 if seed is None else seed)
    runs = []
    for _ in range(run_cap):
        run = {}
        for key, spec, here, parent, name in leaves:
            run[key] = _draw(spec, here, parent, name, rng, fail)
        runs.append(run)
    native["runs"] = runs
    return native


def _draw(spec: dict, here: str, parent: Any, name: str, rng: random.Random, fail) -> Any:
    def where(message: str, field: str) -> SweepSpecError:
        return fail(message, f"{here}.{field}", spec, field)

    if "value" in spec:
        return spec["value"]
    if "values" in spec:
        values = spec["values"]
        if not isinstance(values, list) or not values:
            raise where(f"'values' must be a non-empty list, got {values!r}", "values")
        return rng.choice(values)
    distribution = spec.get("distribution", "uniform")
    draw = _DISTRIBUTIONS.get(distribution)
    if draw is None:
        raise fail(f"unsupported distribution {distribution!r} (supported: categorical values, "
                   f"{', '.join(_DISTRIBUTIONS)})", f"{here}.distribution", spec, "distribution")
    return draw(spec, where, rng)
