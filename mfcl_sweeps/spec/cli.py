"""Command-line sweeps (`a=1,2`, `range()`, `choice()`, `glob()`) with BasicSweeper's semantics."""
from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence

from mfcl_sweeps.errors import SweepSpecError
from mfcl_sweeps.spec import overrides as ov
from mfcl_sweeps.spec.limits import sweep_problem
from mfcl_sweeps.spec.types import Axis, Setting

# ----------------------------------------------------------------------------- command line


def _cli_axes(params: Mapping[str, str], cli_overrides: Sequence[str], config_loader: Any,
              max_runs: Optional[int] = None) -> list[Axis]:
    """Hydra's BasicSweeper semantics: `hydra.sweeper.params` first, then the command line; a
    later override of the same key replaces an earlier one; keys are kept exactly as written.
    With `max_runs` (no exclude, no shuffle) a sweep's settings are made only for the values the
    first max_runs runs can reach (`_reachable`); the command line's axes are the innermost."""
    from hydra.errors import HydraException

    lines = [f"{k}={v}" for k, v in (params or {}).items()] + list(cli_overrides)
    parsed_lines: dict[str, tuple[str, Any, Optional[list]]] = {}
    for line in lines:
        try:
            parsed = ov.parse_override(line, config_loader)
            if parsed.is_interval_sweep():
                raise SweepSpecError("interval() is a search space for an optimizing sweeper, "
                                     "not a list of values", key=line)
            key = parsed.get_key_element()
            elements = None
            if parsed.is_sweep_override():
                problem = sweep_problem(parsed)
                if problem:
                    raise SweepSpecError(problem, key=key)
                elements = list(parsed.sweep_iterator())
        except HydraException as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise SweepSpecError(f"cannot parse override: {first}", key=line) from None
        parsed_lines[key] = (line, parsed, elements)  # a later override of the key replaces it
    if max_runs is not None:
        _reachable(parsed_lines, max_runs)
    axes = []
    for key, (line, parsed, elements) in parsed_lines.items():
        try:
            axes.append(_cli_axis(key, line, parsed, elements))
        except HydraException as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise SweepSpecError(f"cannot parse override: {first}", key=line) from None
    return axes


def _reachable(parsed_lines: dict[str, tuple[str, Any, Optional[list]]], n: int) -> None:
    """Cut each sweep's values to those the first `n` runs can use (the axes after it in the
    product only make it move more slowly; spec.blocks.capped_blocks cuts exactly later). One
    value that differs is kept beyond the cut, so run ids still name an axis that varies."""
    period = 1
    for key in reversed(list(parsed_lines)):
        line, parsed, elements = parsed_lines[key]
        if elements is None:
            continue
        keep = min(len(elements), (max(n, 1) - 1) // period + 1)
        period *= len(elements)
        if keep < len(elements):
            first = repr(elements[0])
            other = next((i for i in range(keep, len(elements)) if repr(elements[i]) != first), None)
            kept = elements[:keep]
            if other is not None and all(repr(e) == first for e in kept):
                kept.append(elements[other])
            parsed_lines[key] = (line, parsed, kept)


def _cli_axis(key: str, line: str, parsed: Any, elements: Optional[list]) -> Axis:
    canon = ov.canonical_key(key)
    if elements is not None:
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
    return Axis(source=f"overrides:{key}", settings=settings)
