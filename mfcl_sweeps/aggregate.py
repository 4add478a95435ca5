"""Manifest + each run's telemetry -> one summary row per run (a pandas DataFrame).

Reads `<sweep_dir>/sweep_manifest.json` (schema in docs/internals.md) and, in each run's
`job_dir`, the artifacts `mfcl_sweeps.telemetry` wrote. Every run of the manifest gets a row:
a completed run that lacks an artifact its `telemetry.json` declared fails the aggregation,
naming run and file; a run without telemetry keeps its status, overrides and return value;
failed and cancelled runs are kept with `status=error`. Rendering lives in `report.py`.

Speed: the CSVs of one stream are read as bytes, concatenated under one header and parsed by
a single pyarrow-engine `read_csv`; per-run figures are then one groupby.
"""
from __future__ import annotations

import io
import json
import os
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np
import pandas as pd

from mfcl_sweeps.errors import MfclError
from mfcl_sweeps.model import CANCELLED, COMPLETED, FAILED

MANIFEST_FILE = "sweep_manifest.json"
SUMMARY_COLUMNS = (
    "run_id", "index", "group", "overrides", "status", "ips_mean", "step_time_ms", "bytes_per_step",
    "accuracy_value", "time_to_target_min", "budget_mode", "budget_limit", "budget_used",
    "energy_Wh", "fidelity_mean", "return_value", "target_metric", "target_value", "error", "job_dir",
)
ERROR_STATUS = "error"
# a target on these metrics is reached from above (value <= target); on others from below
LOWER_IS_BETTER_SUFFIXES = ("loss", "error", "perplexity", "ppl")


class AggregationError(MfclError):
    """The sweep dir cannot be summarized as it is (missing manifest or declared artifact)."""


def lower_is_better(metric: str) -> bool:
    return metric.lower().endswith(LOWER_IS_BETTER_SUFFIXES)


def load_manifest(sweep_dir: str) -> dict:
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


def _target_stats(runs: list[_Run], targets: list[tuple[str, Optional[float]]]) -> tuple[pd.Series, pd.Series]:
    """(last value of each run's target metric, minutes until its target value was first reached)."""
    ev = read_stream(_stream_paths(runs, "eval.csv"))
    if ev.empty or "metric" not in ev:
        return pd.Series(dtype=float), pd.Series(dtype=float)
    metric_of = np.array([t[0] for t in targets], dtype=object)
    target_of = np.array([np.nan if t[1] is None else float(t[1]) for t in targets], dtype=float)
    lower_of = np.array([lower_is_better(t[0]) for t in targets], dtype=bool)
    run = ev["_run"].to_numpy()
    ev = ev[ev["metric"].astype(str).to_numpy() == metric_of[run]]
    value, run = _numeric(ev, "value"), ev["_run"].to_numpy()
    last = value.groupby(ev["_run"]).last()
    goal = target_of[run]
    reached = np.where(lower_of[run], value.to_numpy() <= goal, value.to_numpy() >= goal)
    first = (_numeric(ev, "time_s")[reached] / 60.0).groupby(ev["_run"][reached]).first()
    return last, first


def _error_line(error: Any) -> Optional[str]:
    lines = [ln.strip() for ln in str(error).splitlines() if ln.strip()] if error else []
    return lines[-1] if lines else None


def summarize(sweep_dir: str, *, metric: str = "accuracy") -> pd.DataFrame:
    """One row per manifest run (columns `SUMMARY_COLUMNS`), in index order.

    A run's target metric and value come from its budget in the manifest (the sweep file's
    `budget:`), else from its budget.json (`runtime.budget.target_*`); the metric defaults to `metric`.
    """
    manifest = load_manifest(sweep_dir)
    records = sorted(manifest.get("runs", []), key=lambda r: (r.get("index", 0), r.get("run_id", "")))
    runs = [_scan(r, manifest, sweep_dir) for r in records]
    _check_declared(runs)

    budgets = [r.record.get("budget") or {} for r in runs]
    # the sweep's budget first, then what the task itself declared (runtime.budget.target_*)
    targets = [(b.get("target_metric") or r.budget.get("target_metric") or metric,
                b["target_value"] if b.get("target_value") is not None else r.budget.get("target_value"))
               for r, b in zip(runs, budgets)]
    timings = read_stream(_stream_paths(runs, "timings.csv"))
    accuracy, to_target = _target_stats(runs, targets)
    energy = read_stream(_stream_paths(runs, "energy.csv"))
    fidelity = read_stream(_stream_paths(runs, "fidelity.csv"))

    def per_run(series: pd.Series) -> np.ndarray:
        return series.reindex(range(len(runs))).to_numpy(dtype=float)

    status = [r.record.get("status") for r in runs]
    out = pd.DataFrame({
        "run_id": [r.record.get("run_id") for r in runs],
        "index": [r.record.get("index") for r in runs],
        "group": [r.record.get("group") for r in runs],
        "overrides": [" ".join(r.record.get("overrides") or []) for r in runs],
        "status": [ERROR_STATUS if s in (FAILED, CANCELLED) else s for s in status],
        "ips_mean": per_run(_numeric(timings, "ips").groupby(timings["_run"]).mean()),
        "step_time_ms": per_run(_numeric(timings, "step_time_ms").groupby(timings["_run"]).mean()),
        "bytes_per_step": per_run(_numeric(timings, "bytes_per_step").groupby(timings["_run"]).mean()),
        "accuracy_value": per_run(accuracy),
        "time_to_target_min": per_run(to_target),
        "budget_mode": [r.budget.get("mode") or b.get("mode") for r, b in zip(runs, budgets)],
        "budget_limit": [r.budget.get("limit") or b.get("limit") for r, b in zip(runs, budgets)],
        "budget_used": [r.budget.get("used") for r in runs],
        "energy_Wh": per_run(_numeric(energy, "energy_j").groupby(energy["_run"]).sum() / 3600.0),
        "fidelity_mean": per_run(_numeric(fidelity, "value").groupby(fidelity["_run"]).mean()),
        "return_value": [r.record.get("return_value") for r in runs],
        "target_metric": [t[0] for t in targets],
        "target_value": [t[1] for t in targets],
        "error": [_error_line(r.record.get("error")) for r in runs],
        "job_dir": [r.job_dir for r in runs],
    }, columns=list(SUMMARY_COLUMNS))
    out["budget_limit"] = pd.to_numeric(out["budget_limit"], errors="coerce")
    out["budget_used"] = pd.to_numeric(out["budget_used"], errors="coerce")
    return out


def aggregate(sweep_dir: str, **report_options: Any) -> Any:
    """Summarize and write the report (`report.write_report`); returns its `ReportFiles`."""
    from mfcl_sweeps.report import write_report

    return write_report(sweep_dir, **report_options)
