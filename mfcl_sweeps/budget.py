"""The budget tracker: "should this run stop now?" for iso-time/steps/samples/tokens comparisons.

Built from a task's `runtime.budget` node, which the mfcl sweeper fills from a sweep's `budget:`
(`{mode: iso_time, limit: 2.5}` -> `runtime.budget.enabled=true runtime.budget.max_minutes=2.5`).
The mode is inferred from the one `max_*` key that is set. Usage survives restarts through
`state_dict()`/`load_state_dict()`, so a preempted run does not get a fresh budget.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Optional

from mfcl_sweeps.errors import MfclError
from mfcl_sweeps.fsio import atomic_write

# mode -> (runtime.budget key, unit of `limit` and `used`)
MODES = {
    "iso_time": ("max_minutes", "minutes"),
    "iso_steps": ("max_steps", "steps"),
    "iso_samples": ("max_samples", "samples"),
    "iso_tokens": ("max_tokens", "tokens"),
}


class BudgetConfigError(MfclError):
    """`runtime.budget` cannot be turned into a tracker."""


@dataclass
class BudgetUsage:
    steps: int = 0
    samples: int = 0
    tokens: int = 0
    elapsed_s: float = 0.0  # wall time of earlier attempts, up to their last checkpoint


class BudgetTracker:
    """Counts steps, samples, tokens and wall time; `should_stop()` once the limit is reached.

    A tracker without a mode (budget disabled) counts but never asks to stop. `clock` returns
    seconds; pass a deterministic one to simulate time. `target_metric`/`target_value` are only
    recorded (budget.json) for the report's time_to_target_min.
    """

    def __init__(self, mode: Optional[str] = None, limit: Optional[float] = None, *,
                 target_metric: Optional[str] = None, target_value: Optional[float] = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if mode is not None and mode not in MODES:
            raise BudgetConfigError(f"budget mode '{mode}' is not one of {', '.join(MODES)}")
        if mode is not None and (limit is None or not float(limit) > 0):
            raise BudgetConfigError(f"budget limit for {mode} must be > 0, got {limit!r}")
        self.mode = mode
        self.limit = float(limit) if mode is not None else None
        self.target_metric = target_metric
        self.target_value = None if target_value is None else float(target_value)
        self._clock = clock
        self._start = clock()
        self._usage = BudgetUsage()

    @classmethod
    def from_config(cls, budget_cfg: Optional[Mapping[str, Any]], *,
                    clock: Callable[[], float] = time.monotonic) -> "BudgetTracker":
        """`budget_cfg` is `cfg.runtime.budget` (or None): `enabled` plus exactly one `max_*` set,
        optionally `target_metric` and `target_value`."""
        if not budget_cfg:
            return cls(clock=clock)
        target = {"target_metric": budget_cfg.get("target_metric"), "target_value": budget_cfg.get("target_value")}
        if not budget_cfg.get("enabled", False):
            return cls(clock=clock, **target)
        chosen = {mode: budget_cfg.get(key) for mode, (key, _) in MODES.items()
                  if budget_cfg.get(key) is not None}
        keys = [f"runtime.budget.{MODES[m][0]}" for m in chosen]
        if not chosen:
            raise BudgetConfigError(
                "runtime.budget.enabled=true but none of "
                + ", ".join(f"runtime.budget.{k}" for k, _ in MODES.values()) + " is set")
        if len(chosen) > 1:
            raise BudgetConfigError(f"set only one budget limit, got {', '.join(keys)}")
        (mode, limit), = chosen.items()
        try:
            value = float(limit)
        except (TypeError, ValueError):
            raise BudgetConfigError(f"{keys[0]}={limit!r} is not a number") from None
        if not value > 0:
            raise BudgetConfigError(f"{keys[0]}={limit!r} must be > 0")
        return cls(mode, value, clock=clock, **target)

    def advance(self, *, steps: int = 1, samples: int = 0, tokens: int = 0) -> None:
        self._usage.steps += steps
        self._usage.samples += samples
        self._usage.tokens += tokens

    @property
    def elapsed_s(self) -> float:
        return self._usage.elapsed_s + (self._clock() - self._start)

    @property
    def usage(self) -> BudgetUsage:
        return BudgetUsage(self._usage.steps, self._usage.samples, self._usage.tokens, self.elapsed_s)

    def used(self) -> Optional[float]:
        """Usage in the unit of `limit` (minutes for iso_time); None without a mode."""
        if self.mode is None:
            return None
        if self.mode == "iso_time":
            return self.elapsed_s / 60.0
        return float(getattr(self._usage, MODES[self.mode][1]))

    def exhausted(self) -> bool:
        used = self.used()
        return used is not None and used >= self.limit

    should_stop = exhausted

    def state_dict(self) -> dict:
        u = self.usage
        return {"steps": u.steps, "samples": u.samples, "tokens": u.tokens, "elapsed_s": u.elapsed_s}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self._usage = BudgetUsage(int(state["steps"]), int(state["samples"]), int(state["tokens"]),
                                  float(state["elapsed_s"]))
        self._start = self._clock()

    def to_dict(self) -> dict:
        u = self.usage
        return {
            "mode": self.mode, "limit": self.limit, "unit": MODES[self.mode][1] if self.mode else None,
            "used": self.used(), "exhausted": self.exhausted(),
            "steps": u.steps, "samples": u.samples, "tokens": u.tokens,
            "elapsed_min": u.elapsed_s / 60.0,
            "target_metric": self.target_metric, "target_value": self.target_value,
        }

    def write(self, path: str) -> None:
        """budget.json, replaced atomically so a reader never sees half of it."""
        write_json_atomic(path, self.to_dict())


def write_json_atomic(path: str, data: Any) -> None:
    atomic_write(path, json.dumps(data, indent=1, sort_keys=True) + "\n", fsync=False)
