"""What `mfcl-sweeps configure` edits, without any screen: the picked parameters and their values,
seeds, budget, excludes, max_runs; the sweep file text they make; and that text's run count and
first runs, computed by the same loader and `expand.count` as `mfcl-sweeps count`, from the very
text that saving writes, so the screen and the saved file cannot disagree.
"""
from __future__ import annotations

import fnmatch
import math
import os
import re
import tempfile
from dataclasses import dataclass, field
from typing import Any, Optional

import yaml

from mfcl_sweeps.errors import MfclError, SweepSpecError

_LOG = re.compile(r"log\(\s*([^,]+),\s*([^,]+),\s*(\d+)\s*\)\Z")
_GLOB = re.compile(r"glob\((.*)\)\Z")
_KEPT_SWEEPS = ("range(",)  # written as the Hydra sweep string itself: `mfcl-sweeps count` reads it
PREVIEW_RUNS = 5
BUDGET_MODES = ("iso_time", "iso_steps", "iso_samples", "iso_tokens")


class ValueSyntaxError(MfclError):
    """What the user typed for values cannot be read."""


@dataclass
class Param:
    key: str
    text: str  # as typed, shown again when edited
    values: Any  # a list, or a kept Hydra sweep string (`range(1,5)`)
    paired: bool = False


@dataclass
class Preview:
    count: Optional[int]
    runs: list[str]
    error: Optional[str] = None


@dataclass
class Builder:
    """The sweep being built. `leaves`: dotted key -> composed value; `groups`: group -> options."""
    leaves: dict[str, Any]
    groups: dict[str, list[str]]
    choices: dict[str, str] = field(default_factory=dict)
    params: dict[str, Param] = field(default_factory=dict)
    seeds: Optional[Any] = None
    budget: Optional[dict] = None
    exclude: list[dict] = field(default_factory=list)
    max_runs: Optional[int] = None

    def keys(self) -> list[tuple[str, str]]:
        """(key, current value as shown) for every group, then every leaf key."""
        shown = [(g, f"{self.choices.get(g, '?')}  (options: {', '.join(o)})") for g, o in self.groups.items()]
        return shown + [(k, yaml_flow(v)) for k, v in self.leaves.items()]

    def set_values(self, key: str, text: str) -> None:
        text = text.strip()
        if not text:
            self.params.pop(key, None)
            return
        old = self.params.get(key)
        self.params[key] = Param(key, text, parse_values(text, self.groups.get(key)), old.paired if old else False)

    def toggle_paired(self, key: str) -> None:
        if key in self.params:
            self.params[key].paired = not self.params[key].paired

    def set_seeds(self, text: str) -> None:
        text = text.strip()
        if not text:
            self.seeds = None
        elif text.isdigit():
            self.seeds = int(text)
        else:
            values = parse_values(text, None)
            if not isinstance(values, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
                raise ValueSyntaxError(f"seeds {text!r}: give a number of seeds (3) or a list of seeds (7,11)")
            self.seeds = values

    def set_budget(self, text: str) -> None:
        parts = text.split()
        if not parts:
            self.budget = None
            return
        if len(parts) != 2 or parts[0] not in BUDGET_MODES:
            raise ValueSyntaxError(f"budget {text!r}: give MODE LIMIT, MODE one of {', '.join(BUDGET_MODES)} "
                                   "(e.g. iso_time 2.5)")
        try:
            limit = float(parts[1])
        except ValueError:
            raise ValueSyntaxError(f"budget limit {parts[1]!r}: expected a number") from None
        self.budget = {"mode": parts[0], "limit": int(limit) if limit.is_integer() else limit}

    def add_exclude(self, text: str) -> None:
        entry = {}
        for item in text.split():
            key, eq, value = item.partition("=")
            if not eq or not key:
                raise ValueSyntaxError(f"exclude {item!r}: write key=value pairs separated by spaces")
            values = parse_values(value, self.groups.get(key))
            entry[key] = values[0] if isinstance(values, list) and len(values) == 1 else values
        if entry:
            self.exclude.append(entry)

    def set_max_runs(self, text: str) -> None:
        text = text.strip()
        if text and not text.isdigit():
            raise ValueSyntaxError(f"max_runs {text!r}: expected a whole number")
        self.max_runs = int(text) if text else None

    # -- the file ---------------------------------------------------------------------------
    def spec_dict(self) -> dict:
        doc: dict[str, Any] = {}
        grid = {k: p.values for k, p in self.params.items() if not p.paired}
        paired = {k: p.values for k, p in self.params.items() if p.paired}
        if grid:
            doc["grid"] = grid
        if paired:
            doc["paired"] = [paired]
        if not doc:
            doc["runs"] = [{"name": "baseline"}]
        for key in ("seeds", "budget", "max_runs"):
            if getattr(self, key) is not None:
                doc[key] = getattr(self, key)
        if self.exclude:
            doc["exclude"] = list(self.exclude)
        return doc

    def text(self, app: str) -> str:
        header = (f"# Sweep for {app}, written by `mfcl-sweeps configure` (docs/sweep-files.md).\n"
                  "# grid: every combination; paired: lists that vary together.\n")
        return header + yaml.safe_dump(self.spec_dict(), sort_keys=False, default_flow_style=None, width=100)

    def preview(self, app: str) -> Preview:
        """Count and first runs of exactly `text(app)`, read back as `mfcl-sweeps count` reads it."""
        from mfcl_sweeps.expand import count, iter_runs
        from mfcl_sweeps.spec import load_spec

        fd, path = tempfile.mkstemp(suffix=".yaml", prefix="mfcl-configure-")
        try:
            with os.fdopen(fd, "w") as fh:
                fh.write(self.text(app))
            spec = load_spec(path)
            total = count(spec)
            runs = []
            for run in iter_runs(spec):
                runs.append(" ".join(run.overrides) or "(no overrides)")
                if len(runs) == PREVIEW_RUNS:
                    break
            return Preview(total, runs)
        except SweepSpecError as err:
            return Preview(None, [], str(err).replace(path, "sweep file"))
        finally:
            os.unlink(path)


def yaml_flow(value: Any) -> str:
    return yaml.safe_dump(value, default_flow_style=True, width=10_000).strip().removesuffix("\n...").strip()


def log_values(lo: float, hi: float, n: int) -> list[float]:
    """n values evenly spaced in log space from lo to hi, to 4 significant digits."""
    if lo <= 0 or hi <= 0 or n < 2:
        raise ValueSyntaxError(f"log({lo},{hi},{n}): the bounds must be > 0 and the count at least 2")
    step = (math.log10(hi) - math.log10(lo)) / (n - 1)
    return [float(f"{10 ** (math.log10(lo) + i * step):.4g}") for i in range(n)]


def parse_values(text: str, options: Optional[list[str]]) -> Any:
    """Typed values -> a list of values or a kept sweep string.

    `a,b,c` (Hydra's own parsing: `1e-3` is a float, quotes keep strings), `range(1,5)`,
    `log(1e-4,1e-1,4)` (log-spaced), `*` or `glob(pat)` for a config group's options."""
    from mfcl_sweeps.spec.overrides import parse_override, plain_value

    text = text.strip()
    if options is not None and (text == "*" or _GLOB.match(text)):
        pattern = "*" if text == "*" else _GLOB.match(text).group(1).strip()
        found = [o for o in options if fnmatch.fnmatch(o, pattern)]
        if not found:
            raise ValueSyntaxError(f"{text}: matches none of the options ({', '.join(options)})")
        return found
    if match := _LOG.match(text):
        try:
            return log_values(float(match.group(1)), float(match.group(2)), int(match.group(3)))
        except ValueError:
            raise ValueSyntaxError(f"{text}: expected log(LOW, HIGH, COUNT) with numbers") from None
    try:
        parsed = parse_override(f"x={text}")
    except Exception as err:
        raise ValueSyntaxError(f"{text!r}: {str(err).splitlines()[0]}") from None
    if text.startswith(_KEPT_SWEEPS):
        return text
    if parsed.is_sweep_override():
        if not parsed.is_discrete_sweep():
            raise ValueSyntaxError(f"{text!r}: a search space, not values; use a list, range() or log()")
        return [plain_value(v) for v in parsed.sweep_iterator()]
    return [parsed.value()]
