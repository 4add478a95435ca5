"""Bounds on what a sweep may ask for, so hostile or careless input gets one line naming the key
instead of a hang, a MemoryError or a traceback. Each bound is far above any real sweep: it only
refuses inputs that could not run anyway (a 300,000,000-seed axis, a 10 GB sweep file)."""
from __future__ import annotations

import math
from typing import Any, Optional

MAX_FILE_BYTES = 8 * 1024 * 1024  # a sweep file; the largest real ones are a few hundred KB
MAX_YAML_DEPTH = 64  # nesting of mappings/lists in a sweep file
MAX_YAML_NODES = 1_000_000  # nodes built, alias expansion included (a "billion laughs" file)
MAX_AXIS_VALUES = 100_000  # values of one key (a list, range(), seeds)
MAX_RUN_CAP = 1_000_000  # runs drawn for a W&B random sweep
MAX_SHUFFLED = 10_000_000  # runs put in random order without max_runs to bound them
MAX_COUNT_STEPS = 200_000  # inclusion-exclusion terms (or runs iterated) to count with excludes


def too_many(what: str, n: Any, limit: int, fix: str) -> str:
    return f"{what} ({n:,}) exceeds the limit of {limit:,}; {fix}" if isinstance(n, int) else \
        f"{what} exceeds the limit of {limit:,}; {fix}"


def sweep_problem(parsed: Any) -> Optional[str]:
    """Why a parsed Hydra sweep override cannot be listed (a zero step, too many values),
    decided without listing it; None when it can."""
    from hydra.core.override_parser.types import ChoiceSweep, RangeSweep

    value = parsed.value()
    if isinstance(value, RangeSweep):
        if not value.step:
            return "range() with a step of 0 never ends; give a step other than 0"
        return axis_values_message(max(0, math.ceil((value.stop - value.start) / value.step)))
    if isinstance(value, ChoiceSweep):
        return axis_values_message(len(value.list))
    return None


def axis_values_message(n: int) -> Optional[str]:
    if n > MAX_AXIS_VALUES:
        return too_many("a sweep of this many values", n, MAX_AXIS_VALUES,
                        "sample it (hydra.sweeper.max_runs with shuffle) or use a W&B random sweep")
    return None
