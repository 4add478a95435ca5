"""Manifest + each run's telemetry and return value -> one summary row per run (pandas).

Reads the sweep's state (the journal `.mfcl/journal.jsonl` when `live=True`, else
`<sweep_dir>/sweep_manifest.json`; schema in docs/internals.md) and, in each run's `job_dir`,
the artifacts `mfcl_sweeps.telemetry` wrote. Every run of the manifest gets a row: a completed
run that lacks an artifact its `telemetry.json` declared fails the aggregation, naming run and
file; a run without telemetry keeps its status, overrides and return value; failed and
cancelled runs are kept with `status=error`. Rendering lives in the `report` package.

Metrics: a run's value of metric M is the last `M` row of its `eval.csv`, else key M of the
dict its task returned, else the number its task returned (any app that returns its metric,
as Hydra users do for Optuna, gets a ranked report).

Speed: the CSVs of one stream are read as bytes, concatenated under one header and parsed by
a single pyarrow-engine `read_csv`; per-run figures are then one groupby.
"""
from __future__ import annotations

import ast
import io
import json
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Optional, Union

import numpy as np
import pandas as pd

from mfcl_sweeps.errors import MfclError
from mfcl_sweeps.model import CANCELLED, COMPLETED, FAILED

MANIFEST_FILE = "sweep_manifest.json"
# the metric columns (one per metric name, see `Sweep.metrics`) follow "status"
BASE_COLUMNS = ("run_id", "index", "group", "overrides", "status")
TAIL_COLUMNS = (
    "time_to_target_min", "ips_mean", "step_time_ms", "bytes_per_step", "budget_mode", "budget_limit",
    "budget_used", "energy_Wh", "fidelity_mean", "duration_s", "host", "backend", "return_value",
    "target_metric", "target_value", "error", "job_dir",
)
RETURN_METRIC = "return_value"  # the metric's name when the task returns a bare number
ERROR_STATUS = "error"
# a target on these metrics is reached from above (value <= target); on others from below
LOWER_IS_BETTER_SUFFIXES = ("loss", "error", "perplexity", "ppl")


class AggregationError(MfclError):
    """The sweep dir cannot be summarized as it is (missing manifest or declared artifact)."""


def lower_is_better(metric: str) -> bool:
    return metric.lower().endswith(LOWER_IS_BETTER_SUFFIXES)


def load_manifest(sweep_dir: str, *, live: bool = False) -> dict:
    """The sweep's snapshot; with `live`, replayed from the journal (nothing written), so a
    report during a sweep, or from another machine, sees the runs as they are now."""
    from mfcl_sweeps.state.store import keeps_state

    if live and keeps_state(sweep_dir):  # its journal, or the database it points at
        from mfcl_sweeps.state.manifest import SweepManifest

        return SweepManifest(sweep_dir).snapshot()
    path = os.path.join(sweep_dir, MANIFEST_FILE)
    try:
        with open(path) as fh:
            return json.load(fh)
    except FileNotFoundError:
        raise AggregationError(f"no {MANIFEST_FILE} in {sweep_dir} (is it a sweep dir? "
                               "a sweep run with hydra/sweeper=mfcl or hydra/callbacks=mfcl writes one)") from None
    except json.JSONDecodeError as err:
        raise AggregationError(f"{path} is not valid JSON: {err}") from None


@dataclass
class _Run:
    record: dict
    job_dir: Optional[str]
    files: set = field(default_factory=set)
    declared: list = field(default_factory=list)
    budget: dict = field(default_factory=dict)


def _locate(job_dir: Optional[str], manifest: dict, sweep_dir: str) -> Optional[str]:
    """The job dir as recorded, or under this sweep dir when the sweep was moved or copied."""
    if not job_dir:
        return None
    if not os.path.isabs(job_dir):
        job_dir = os.path.join(manifest.get("command", {}).get("cwd") or sweep_dir, job_dir)
    recorded = manifest.get("sweep_dir") or ""
    if not os.path.isdir(job_dir) and recorded and job_dir.startswith(recorded.rstrip("/") + "/"):
        job_dir = os.path.join(sweep_dir, job_dir[len(recorded.rstrip("/")) + 1:])
    return job_dir


def _read_json(path: str) -> dict:
    with open(path) as fh:
        return json.load(fh)


def _scan(record: dict, manifest: dict, sweep_dir: str) -> _Run:
    run = _Run(record, _locate(record.get("job_dir"), manifest, sweep_dir))
    if run.job_dir and os.path.isdir(run.job_dir):
        run.files = set(os.listdir(run.job_dir))
        if "telemetry.json" in run.files:
            run.declared = list(_read_json(os.path.join(run.job_dir, "telemetry.json")).get("artifacts", []))
        if "budget.json" in run.files:
            run.budget = _read_json(os.path.join(run.job_dir, "budget.json"))
    return run


def _check_declared(runs: list[_Run]) -> None:
    missing = [(r.record.get("run_id"), f, r.job_dir) for r in runs if r.record.get("status") == COMPLETED
               for f in r.declared if f not in r.files]
    if missing:
        run_id, file, job_dir = missing[0]
        more = f" (and {len(missing) - 1} more missing artifact(s))" if len(missing) > 1 else ""
        raise AggregationError(f"completed run {run_id} is missing {file} in {job_dir}, "
                               f"which its telemetry.json declared{more}")


def read_stream(paths: list[tuple[int, str]]) -> pd.DataFrame:
    """All rows of the CSVs `[(run position, path)]` in one frame with a `_run` column.

    One parse for all files sharing a header. An unterminated last line is a torn row (telemetry
    writes whole lines) and is dropped.
    """
    by_header: dict[bytes, tuple[list, list, list]] = {}
    for pos, path in paths:
        with open(path, "rb") as fh:
            data = fh.read()
        cut = data.find(b"\n")
        if cut < 0:
            continue
        body = data[cut + 1:data.rfind(b"\n") + 1]
        runs, bodies, counts = by_header.setdefault(data[:cut], ([], [], []))
        runs.append(pos)
        bodies.append(body)
        counts.append(body.count(b"\n"))
    frames = []
    for header, (runs, bodies, counts) in by_header.items():
        frame = pd.read_csv(io.BytesIO(header + b"\n" + b"".join(bodies)), engine="pyarrow")
        if len(frame) != sum(counts):  # blank lines or quoted newlines: count per file instead
            parts = [pd.read_csv(io.BytesIO(header + b"\n" + b), engine="pyarrow") for b in bodies]
            counts = [len(p) for p in parts]
            frame = pd.concat(parts, ignore_index=True)
        frame["_run"] = np.repeat(np.asarray(runs, dtype=np.int64), counts)
        frames.append(frame)
    if not frames:
        return pd.DataFrame({"_run": pd.Series(dtype=np.int64)})
    return pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]


def _numeric(frame: pd.DataFrame, column: str) -> pd.Series:
    if column not in frame:
        return pd.Series(np.nan, index=frame.index)
    return pd.to_numeric(frame[column], errors="coerce")


def _stream_paths(runs: list[_Run], file: str) -> list[tuple[int, str]]:
    return [(i, os.path.join(r.job_dir, file)) for i, r in enumerate(runs) if file in r.files]


def _time_to_target(ev: pd.DataFrame, targets: list[tuple[str, Optional[float]]]) -> pd.Series:
    """Minutes until each run's target value was first reached by its target metric."""
    if ev.empty or "metric" not in ev:
        return pd.Series(dtype=float)
    metric_of = np.array([t[0] for t in targets], dtype=object)
    target_of = np.array([np.nan if t[1] is None else float(t[1]) for t in targets], dtype=float)
    lower_of = np.array([lower_is_better(t[0] or "") for t in targets], dtype=bool)
    ev = ev[ev["metric"].astype(str).to_numpy() == metric_of[ev["_run"].to_numpy()]]
    value, run = _numeric(ev, "value").to_numpy(), ev["_run"].to_numpy()
    goal = target_of[run]
    reached = np.where(lower_of[run], value <= goal, value >= goal)
    return (_numeric(ev, "time_s")[reached] / 60.0).groupby(ev["_run"][reached]).first()


def _eval_last(ev: pd.DataFrame) -> pd.DataFrame:
    """Run position x metric name -> the last value logged (columns in first-seen order)."""
    if ev.empty or "metric" not in ev:
        return pd.DataFrame()
    frame = pd.DataFrame({"_run": ev["_run"], "metric": ev["metric"].astype(str), "value": _numeric(ev, "value")})
    last = frame.groupby(["_run", "metric"], sort=False)["value"].last().unstack("metric")
    return last[list(dict.fromkeys(frame["metric"]))]


def _error_line(error: Any) -> Optional[str]:
    lines = [ln.strip() for ln in str(error).splitlines() if ln.strip()] if error else []
    return lines[-1] if lines else None


# numpy and torch scalars in a return value's repr: `np.float64(0.9)`, `tensor(0.9)`, `tensor(0.9, dtype=...)`
_SCALAR_WRAPPER = re.compile(r"\b(?:np|numpy)\.\w+\(([^()]*)\)|\btensor\(([^(),]*)(?:,[^()]*)?\)")


def parse_return_value(text: Any) -> Union[float, dict, None]:
    """The metrics in a journaled return value (the task's `repr`, at most 1,000 characters):
    a number, a {name: number} dict of its numeric entries, or None."""
    if text is None or (isinstance(text, float) and np.isnan(text)):
        return None
    try:
        number = float(text)  # the common case, without compiling an expression
        return number if np.isfinite(number) else None  # nan/inf (a diverged run): no value
    except (TypeError, ValueError):
        pass
    try:
        value = ast.literal_eval(_SCALAR_WRAPPER.sub(lambda m: m.group(1) or m.group(2), str(text)))
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, dict):
        numbers = {str(k): float(v) for k, v in value.items()
                   if isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v)}
        return numbers or None
    return None


@dataclass
class Sweep:
    """A summarized sweep: `runs` has one row per run (BASE_COLUMNS, one column per name in
    `metrics`, TAIL_COLUMNS); `metric` is the one runs are ranked by (None: nothing to rank),
    `lower_is_better` its direction; `evals`/`timings` hold every eval.csv/timings.csv row with
    the run's row position in `_run` (for learning curves)."""
    runs: pd.DataFrame
    manifest: dict
    metric: Optional[str]
    lower_is_better: bool
    metrics: list
    overrides: list  # per run: its override strings, as journaled
    evals: pd.DataFrame
    timings: pd.DataFrame


def _declared_metric(manifest: dict) -> tuple[Optional[str], Optional[bool]]:
    """A W&B sweep file's `metric: {name, goal}` (the spec keeps it in its metadata)."""
    info = ((manifest.get("spec") or {}).get("metadata") or {}).get("wandb", {}).get("metric") or {}
    if not isinstance(info, dict) or not info.get("name"):
        return None, None
    goal = str(info.get("goal") or "")
    return str(info["name"]), (goal == "minimize" if goal else None)


def choose_metric(explicit: Optional[str], mode: Optional[str], targets: list, declared: tuple,
                  eval_names: list, returns: list) -> tuple[Optional[str], bool]:
    """(metric, lower is better). The metric: `explicit` (callback `metric`, `--metric`), else the
    sweep's most common budget `target_metric` (or a W&B `metric.name`), else `accuracy` or the
    first metric of eval.csv, else of the returned dicts, else `return_value` when runs returned
    numbers. The direction: `mode` (`min`/`max`), else a W&B goal, else lower for names ending in
    loss/error/perplexity/ppl."""
    named = Counter(t for t in targets if t).most_common(1)
    dict_names = list(dict.fromkeys(k for r in returns if isinstance(r, dict) for k in r))
    found = list(dict.fromkeys(eval_names + dict_names))
    metric = explicit or (named[0][0] if named else None) or declared[0]
    if metric is None:
        if "accuracy" in found or not found:
            metric = "accuracy" if found else (RETURN_METRIC if any(isinstance(r, float) for r in returns) else None)
        else:
            metric = found[0]
    if mode is not None:
        if mode not in ("min", "max"):
            raise AggregationError(f"mode must be 'min' or 'max', got {mode!r}")
        return metric, mode == "min"
    if declared[1] is not None and metric == declared[0]:
        return metric, declared[1]
    return metric, lower_is_better(metric or "")


def _metric_columns(metric: Optional[str], eval_last: pd.DataFrame, returns: list, n: int) -> dict:
    """name -> per-run values: eval.csv's last value wins, then the returned dict's entry, then
    (for the ranked metric only) a returned bare number."""
    names = list(dict.fromkeys(([metric] if metric else []) + list(eval_last.columns)
                               + [k for r in returns if isinstance(r, dict) for k in r]))
    out = {}
    for name in names:
        values = np.full(n, np.nan)
        for i, r in enumerate(returns):
            if isinstance(r, dict) and name in r:
                values[i] = r[name]
            elif isinstance(r, float) and name == metric:
                values[i] = r
        if name in eval_last:
            logged = eval_last[name].reindex(range(n)).to_numpy(dtype=float)
            values = np.where(np.isnan(logged), values, logged)
        # a metric named like a fixed column gets a prefix rather than hiding that column
        out[f"metric:{name}" if name in BASE_COLUMNS + TAIL_COLUMNS and name != RETURN_METRIC else name] = values
    return out


def load_sweep(sweep_dir: str, *, metric: Optional[str] = None, mode: Optional[str] = None,
               live: bool = False) -> Sweep:
    """Read a sweep dir into a `Sweep` (see `choose_metric` for `metric` and `mode`).

    A run's target metric and value (for `time_to_target_min`) come from its budget in the
    manifest (the sweep file's `budget:`), else from its budget.json (`runtime.budget.target_*`).
    """
    manifest = load_manifest(sweep_dir, live=live)
    records = sorted(manifest.get("runs", []), key=lambda r: (r.get("index", 0), r.get("run_id", "")))
    runs = [_scan(r, manifest, sweep_dir) for r in records]
    _check_declared(runs)

    budgets = [r.record.get("budget") or {} for r in runs]
    targets = [(b.get("target_metric") or r.budget.get("target_metric"),
                b["target_value"] if b.get("target_value") is not None else r.budget.get("target_value"))
               for r, b in zip(runs, budgets)]
    timings = read_stream(_stream_paths(runs, "timings.csv"))
    evals = read_stream(_stream_paths(runs, "eval.csv"))
    energy = read_stream(_stream_paths(runs, "energy.csv"))
    fidelity = read_stream(_stream_paths(runs, "fidelity.csv"))
    returns = [parse_return_value(r.record.get("return_value")) for r in runs]
    eval_last = _eval_last(evals)
    name, lower = choose_metric(metric, mode, [t[0] for t in targets], _declared_metric(manifest),
                                list(eval_last.columns), returns)
    targets = [(t[0] or name, t[1]) for t in targets]

    def per_run(series: pd.Series) -> np.ndarray:
        return series.reindex(range(len(runs))).to_numpy(dtype=float)

    def mean_of(frame: pd.DataFrame, column: str) -> np.ndarray:
        return per_run(_numeric(frame, column).groupby(frame["_run"]).mean())

    def started_ended(rec: dict) -> Optional[float]:
        start, end = rec.get("start_time"), rec.get("end_time")
        return end - start if isinstance(start, (int, float)) and isinstance(end, (int, float)) else None

    status = [r.record.get("status") for r in runs]
    metric_columns = _metric_columns(name, eval_last, returns, len(runs))
    metric_names = list(metric_columns)
    columns = {
        "run_id": [r.record.get("run_id") for r in runs],
        "index": [r.record.get("index") for r in runs],
        "group": [r.record.get("group") for r in runs],
        "overrides": [" ".join(r.record.get("overrides") or []) for r in runs],
        "status": [ERROR_STATUS if s in (FAILED, CANCELLED) else s for s in status],
        **{k: v for k, v in metric_columns.items() if k != RETURN_METRIC},
        "time_to_target_min": per_run(_time_to_target(evals, targets)),
        "ips_mean": mean_of(timings, "ips"),
        "step_time_ms": mean_of(timings, "step_time_ms"),
        "bytes_per_step": mean_of(timings, "bytes_per_step"),
        "budget_mode": [r.budget.get("mode") or b.get("mode") for r, b in zip(runs, budgets)],
        "budget_limit": [r.budget.get("limit") or b.get("limit") for r, b in zip(runs, budgets)],
        "budget_used": [r.budget.get("used") for r in runs],
        "energy_Wh": per_run(_numeric(energy, "energy_j").groupby(energy["_run"]).sum() / 3600.0),
        "fidelity_mean": per_run(_numeric(fidelity, "value").groupby(fidelity["_run"]).mean()),
        "duration_s": [started_ended(r.record) for r in runs],
        "host": [r.record.get("host") for r in runs],
        "backend": [r.record.get("backend") for r in runs],
        # as journaled (a repr), or its number when that is a metric
        "return_value": metric_columns.get(RETURN_METRIC, [r.record.get("return_value") for r in runs]),
        "target_metric": [t[0] for t in targets],
        "target_value": [t[1] for t in targets],
        "error": [_error_line(r.record.get("error")) for r in runs],
        "job_dir": [r.job_dir for r in runs],
    }
    out = pd.DataFrame(columns)
    for column in ("budget_limit", "budget_used", "duration_s"):
        out[column] = pd.to_numeric(out[column], errors="coerce")
    metric_col = None if name is None else (f"metric:{name}" if f"metric:{name}" in columns else name)
    return Sweep(runs=out, manifest=manifest, metric=metric_col, lower_is_better=lower, metrics=metric_names,
                 overrides=[list(r.record.get("overrides") or []) for r in runs], evals=evals, timings=timings)


def summarize(sweep_dir: str, *, metric: Optional[str] = None, mode: Optional[str] = None,
              live: bool = False) -> pd.DataFrame:
    """One row per manifest run, in index order (`load_sweep(...).runs`)."""
    return load_sweep(sweep_dir, metric=metric, mode=mode, live=live).runs

