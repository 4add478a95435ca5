"""The tables people read (summary.md, index.html): the user's columns only, cleaned.

A table drops columns that are empty or zero in every row, and columns that repeat an earlier
one (a return value equal to the metric); times are shown in human units (`850 ms`, `4 min 05 s`)
and the budget as `used / limit unit`. Cells keep their raw value (for sorting); `cell()`
formats one for display.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Optional, Sequence

import numpy as np
import pandas as pd

from mfcl_sweeps.aggregate import Sweep
from mfcl_sweeps.report.params import Params, user_overrides
from mfcl_sweeps.report.stats import CONFIG

BUDGET_UNITS = {"iso_time": "min", "iso_steps": "steps", "iso_samples": "samples", "iso_tokens": "tokens"}


def human_duration(seconds: Any) -> str:
    if not _present(seconds):
        return ""
    s = float(seconds)
    if abs(s) < 1:
        return f"{s * 1000:.3g} ms"
    if abs(s) < 60:
        return f"{s:.3g} s"
    if abs(s) < 3600:
        return f"{int(s // 60)} min {int(round(s % 60)):02d} s"
    return f"{int(s // 3600)} h {int(round(s % 3600 / 60)):02d} min"


def _present(value: Any) -> bool:
    return value is not None and value != "" and not (isinstance(value, float) and math.isnan(value))


def number(value: Any) -> str:
    if not _present(value):
        return ""
    if isinstance(value, (float, np.floating)):
        return f"{value:.4g}"
    return str(value)


# column -> (header, formatter of the raw value)
FORMATS: dict[str, tuple[str, Callable[[Any], str]]] = {
    "time_to_target_min": ("time to target", lambda v: human_duration(v * 60 if _present(v) else v)),
    "step_time_ms": ("step time", lambda v: human_duration(v / 1000 if _present(v) else v)),
    "duration_s": ("duration", human_duration),
    "ips_mean": ("samples/s", number),
    "energy_Wh": ("energy (Wh)", number),
    "fidelity_mean": ("fidelity", number),
}


def header(column: str) -> str:
    return FORMATS[column][0] if column in FORMATS else column


def cell(column: str, value: Any) -> str:
    return FORMATS[column][1](value) if column in FORMATS else number(value)


def _budget(runs: pd.DataFrame) -> pd.Series:
    def one(mode: Any, used: Any, limit: Any) -> Optional[str]:
        if not _present(limit):
            return None
        unit = BUDGET_UNITS.get(mode, "")
        return f"{number(used) or '?'} / {number(limit)} {unit}".rstrip()

    return pd.Series([one(*row) for row in zip(runs["budget_mode"], runs["budget_used"], runs["budget_limit"])],
                     index=runs.index, dtype=object)


def _present_mask(series: pd.Series) -> pd.Series:
    return series.notna() & series.astype(object).ne("")


def _normalized(series: pd.Series) -> tuple:
    numbers = pd.to_numeric(series, errors="coerce")
    if numbers.notna().sum() == _present_mask(series).sum():
        return tuple(np.round(numbers.to_numpy(dtype=float), 9).tolist())
    return tuple(series.map(lambda v: str(v) if _present(v) else "").tolist())


def clean(frame: pd.DataFrame, keep: Sequence[str] = ()) -> pd.DataFrame:
    """Without all-empty, all-zero and duplicate columns, nor a `group` column with one group
    (columns in `keep` always stay)."""
    kept, seen = [], set()
    for column in frame.columns:
        values = frame[column]
        present = _present_mask(values)
        if column == "group" and values.nunique(dropna=False) <= 1:
            continue
        if column not in keep:
            if not present.any():
                continue
            numbers = pd.to_numeric(values[present], errors="coerce")
            if numbers.notna().all() and (numbers == 0).all():
                continue
        key = _normalized(values)
        if key in seen and column not in keep:
            continue
        seen.add(key)
        kept.append(column)
    return frame[kept]


def run_table(sweep: Sweep, params: Params) -> pd.DataFrame:
    """One row per run: id, group, status, swept values, metrics, performance, budget, error.
    The return value is shown only where it is not already a metric column (not a number or dict)."""
    from mfcl_sweeps.aggregate import parse_return_value

    runs = sweep.runs
    swept = params.values.rename(columns=lambda k: f"{k} (param)" if k in runs.columns else k)
    table = pd.concat([runs[["run_id", "group", "status"]], swept], axis=1)
    for column in sweep.metrics:
        table[column] = runs[column]
    for column in ("time_to_target_min", "ips_mean", "step_time_ms", "bytes_per_step", "energy_Wh",
                   "fidelity_mean"):
        table[column] = runs[column]
    table["budget"] = _budget(runs)
    table["duration_s"] = runs["duration_s"]
    table["host"] = runs["host"]
    if "return_value" not in sweep.metrics:  # else it is a metric column already
        table["return_value"] = [None if parse_return_value(v) is not None else v for v in runs["return_value"]]
    table["overrides"] = [user_overrides(o) for o in sweep.overrides]
    table["error"] = runs["error"]
    return clean(table, keep=("run_id", "status"))


def config_table(configs: pd.DataFrame, metric: Optional[str]) -> pd.DataFrame:
    """The per-config frame for reading: rank, the config's values ("(default)" where unset),
    `<metric> mean`, std, n and the 95% interval as text, then the run counts."""
    from mfcl_sweeps.report.params import labels

    keys = [c for c in configs.columns if c not in (CONFIG, "group", "rank", "n_runs", "n_failed")
            and not (metric and c.startswith(f"{metric}_"))]
    table = pd.DataFrame(index=configs.index)
    if "rank" in configs:
        table["rank"] = configs["rank"]
    table["group"] = configs["group"]
    for key in keys:
        table[key] = [v if isinstance(v, (int, float)) and not isinstance(v, bool) and v == v else lab
                      for v, lab in zip(configs[key], labels(configs[key]))]
    if metric and f"{metric}_mean" in configs:
        table[f"{metric} mean"] = configs[f"{metric}_mean"]
        table[f"{metric} std"] = configs[f"{metric}_std"]
        table["n"] = configs[f"{metric}_n"]
        table["95% interval"] = [f"[{number(lo)}, {number(hi)}]" if _present(lo) else ""
                                 for lo, hi in zip(configs[f"{metric}_ci95_low"], configs[f"{metric}_ci95_high"])]
    table["runs"] = configs["n_runs"]
    table["failed"] = configs["n_failed"]
    if "n" in table and (table["runs"] == table["n"]).all():
        table = table.drop(columns=["runs"])
    return clean(table)


def markdown(frame: pd.DataFrame, *, links: Optional[dict] = None) -> str:
    """A GitHub-flavoured table; `links` maps a run id to [(label, href)]: its id links to its log,
    else its job dir."""
    columns = list(frame.columns)
    lines = ["| " + " | ".join(header(c) for c in columns) + " |", "|" + "---|" * len(columns)]
    for row in frame.itertuples(index=False):
        cells = []
        for column, value in zip(columns, row):
            text = cell(column, value).replace("|", "\\|").replace("\n", " ")
            if column == "run_id" and links and value in links:
                text = f"[{text}]({dict(links[value]).get('log') or links[value][-1][1]})"
            cells.append(text)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
