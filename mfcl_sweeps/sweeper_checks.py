"""`hydra.sweeper.*` options the spec does not read (spec/knobs.py checks max_runs, seeds,
shuffle...), range-checked before anything is written or launched, in the launcher options' one
wording: `hydra.sweeper.X=V: why; what to change`."""
from __future__ import annotations

from typing import Any, Callable

from mfcl_sweeps.errors import MfclError
from mfcl_sweeps.options import above, at_least, matches

_NUMBERS = {"claim_timeout": (float, above(0, " seconds")), "max_batch_size": (int, at_least(1))}
_NAMES = {"cluster": matches(r"[\w.@-]+", "must be a plain name (letters, digits, _.@-); rename it")}


def check_sweeper_options(opt: Callable[[str], Any]) -> None:
    """Raise MfclError (one line) for the first bad option; `opt(key)` reads hydra.sweeper.<key>
    (None: not set)."""
    from mfcl_sweeps.state.storeurl import parse_url

    for key, (kind, check) in _NUMBERS.items():
        value = opt(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and value != int(value)):
            what = "an integer" if kind is int else "a number"
            raise MfclError(f"hydra.sweeper.{key}={value!r}: must be {what}; write it as digits")
        why = check(value, {})
        if why:
            raise MfclError(f"hydra.sweeper.{key}={value!r}: {why}")
    for key, check in _NAMES.items():
        value = opt(key)
        why = None if value is None else check(str(value), {})
        if why:
            raise MfclError(f"hydra.sweeper.{key}={value!r}: {why}")
    if opt("store"):
        parse_url(str(opt("store")))  # a store URL that cannot be one fails before the sweep dir exists
