"""Command-line sweeps (`a=1,2`, `range()`, `choice()`, `glob()`) with BasicSweeper's semantics."""
from __future__ import annotations

from typing import Any, Mapping, Sequence

from mfcl_sweeps.errors import SweepSpecError
from mfcl_sweeps.spec import overrides as ov
from mfcl_sweeps.spec.limits import sweep_problem
from mfcl_sweeps.spec.types import Axis, Setting

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
                problem = sweep_problem(parsed)
                if problem:
                    raise SweepSpecError(problem, key=key)
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
