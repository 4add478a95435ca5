"""`mfcl-sweeps status SWEEP_DIR [--json]`: the state of a sweep, from its journal.

Needs no GPU and no scheduler. A backend module that has `refresh_records(records)` may update
runs it started and that run detached (e.g. a Slurm job that died without journaling); the
refreshed state is shown, not journaled.
"""
from __future__ import annotations

import argparse
import json
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any, Optional

from mfcl_sweeps import model
from mfcl_sweeps.backends.pool.view import render_sources, sources_report
from mfcl_sweeps.errors import ManifestError
from mfcl_sweeps.liveness import mark_lost
from mfcl_sweeps.state.replay import spread_unseen

SHOWN_ROWS = 20


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("sweep_dir", help="the sweep dir (holds .mfcl/journal.jsonl)")
    parser.add_argument("--json", action="store_true", help="print the status as JSON (every running/failed run)")


def open_manifest(sweep_dir: str) -> Any:
    from mfcl_sweeps.state.manifest import SweepManifest

    manifest = SweepManifest(sweep_dir)
    if not manifest.store.exists():
        raise ManifestError(f"{sweep_dir}: no sweep journal ({manifest.store.describe()} is missing); "
                            "is it a sweep dir?")
    return manifest


def refresh_from_backends(records: list[Any]) -> None:
    """Apply what backends report about the active runs they started (`refresh_records`)."""
    from mfcl_sweeps import backends

    by_backend: dict[str, list] = defaultdict(list)
    for rec in records:
        if rec.backend:
            by_backend[rec.backend].append(rec)
    for backend, recs in by_backend.items():
        if backend not in backends.BACKENDS:
            continue
        by_hash = {r.config_hash: r for r in recs}
        for config_hash, fields in (backends.get(backend).refresh_records(recs) or {}).items():
            rec = by_hash.get(config_hash)
            for key, value in fields.items():
                if rec is not None and hasattr(rec, key):
                    setattr(rec, key, value)


def status_report(manifest: Any, now: Optional[float] = None) -> dict:
    """Plain data for the table and for --json. Only active and failed runs are unpacked: the
    rest is counted from the replay's summary columns (fast on a checkpointed 100,000-run sweep)."""
    from mfcl_sweeps.model import ACTIVE_STATES

    now = time.time() if now is None else now
    # records are live objects of the manifest's replay: refreshed states show in the counts too
    refresh_from_backends(manifest.records_with_status(*ACTIVE_STATES))
    # a run whose recorded process of this host is gone is lost, not running (no ETA counts it)
    mark_lost(manifest.records_with_status(model.RUNNING, model.CLAIMED))
    plans = manifest.plans()
    counts = manifest.counts()
    rows = manifest.summary()
    statuses, group_of, starts, ends = zip(*rows) if rows else ((), (), (), ())
    groups: dict[str, Counter] = defaultdict(Counter)
    for (group, status), n in Counter(zip(group_of, statuses)).items():
        groups[group][status] = n
    durations = [e - s for st, s, e in zip(statuses, starts, ends)
                 if st == model.COMPLETED and s is not None and e is not None]
    started = [s for s in starts if s is not None]
    ended = [e for e in ends if e is not None]
    # planned runs the journal has not seen yet are pending in their group
    spread_unseen(groups, plans[-1] if plans else None, counts["total"] - len(rows))
    active = sorted(manifest.records_with_status(model.RUNNING, model.CLAIMED), key=lambda r: r.index)
    failed = sorted(manifest.records_with_status(model.FAILED), key=lambda r: r.index)
    lost = sorted(manifest.records_with_status(model.LOST), key=lambda r: r.index)
    running = counts.get(model.RUNNING, 0)
    remaining = counts["total"] - sum(counts.get(s, 0) for s in (*model.FINAL_STATES, model.LOST))
    mean = max(0.0, sum(durations) / len(durations)) if durations else None
    elapsed = None
    if started:
        elapsed = (now if running else max(ended, default=now)) - min(started)
    eta = remaining * mean / running if (mean is not None and running and remaining > 0) else None
    return {
        "sweep_id": manifest.sweep_id, "sweep_dir": manifest.sweep_dir, "cluster": manifest.cluster,
        "counts": counts, "groups": {g: dict(c) for g, c in sorted(groups.items())},
        "running": [{"run_id": r.run_id, "status": r.status, "host": r.host, "backend": r.backend,
                     "backend_job_id": r.backend_job_id, "pid": r.pid, "start_time": r.start_time,
                     "elapsed_s": (now - r.start_time) if r.start_time else None} for r in active],
        "failed": [{"run_id": r.run_id, "exit_code": r.exit_code, "error": r.error, "job_dir": r.job_dir,
                    "attempts": r.attempts} for r in failed],
        "lost": [{"run_id": r.run_id, "host": r.host, "pid": r.pid, "owner": r.owner} for r in lost],
        "elapsed_s": elapsed, "mean_run_s": mean, "eta_s": eta,
        "sources": sources_report(manifest.sweep_dir, manifest.records().values()) if _pooled(manifest) else [],
    }


def _pooled(manifest: Any) -> bool:
    """Whether mfcl_pool ran this sweep (its logs are there): per-source rows cost a full read."""
    return (Path(manifest.sweep_dir) / "logs" / "task_assignments.log").exists()


def _duration(seconds: Optional[float]) -> str:
    from mfcl_sweeps.launch.progress import format_eta

    return "-" if seconds is None else format_eta(seconds)


def render(report: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    shown = [s for s in model.SHOWN_STATES if any(s in g for g in report["groups"].values())]
    table = Table(title=f"sweep {report['sweep_id']} ({report['sweep_dir']}, cluster {report['cluster']})")
    table.add_column("group")
    for s in shown:
        table.add_column(s, justify="right")
    table.add_column("total", justify="right")
    for group, counts in report["groups"].items():
        table.add_row(group, *(str(counts.get(s, 0)) for s in shown), str(sum(counts.values())))
    table.add_row("all", *(str(report["counts"].get(s, 0)) for s in shown), str(report["counts"]["total"]),
                  style="bold")
    console.print(table)
    if report["running"]:
        rt = Table(title=f"running ({len(report['running'])})")
        for col in ("run", "status", "host", "backend", "job id", "pid", "elapsed"):
            rt.add_column(col)
        for r in report["running"][:SHOWN_ROWS]:
            rt.add_row(r["run_id"], r["status"], r["host"] or "-", r["backend"] or "-", str(r["backend_job_id"] or "-"),
                       str(r["pid"] or "-"), _duration(r["elapsed_s"]))
        console.print(rt)
    if report["failed"]:
        ft = Table(title=f"failed ({len(report['failed'])})")
        for col in ("run", "exit", "error"):
            ft.add_column(col)
        for r in report["failed"][:SHOWN_ROWS]:
            ft.add_row(r["run_id"], str(r["exit_code"]), (r["error"] or "")[:200])
        console.print(ft)
    if len(report["running"]) > SHOWN_ROWS or len(report["failed"]) > SHOWN_ROWS:
        console.print(f"(first {SHOWN_ROWS} shown; --json lists all)")
    if report["lost"]:
        console.print(f"{len(report['lost'])} run(s) lost: the process that ran them is gone "
                      f"(first: {report['lost'][0]['run_id']}, pid {report['lost'][0]['pid']}); "
                      f"mfcl-sweeps resume {report['sweep_dir']} runs them again")
    if report.get("sources"):
        render_sources(console, report["sources"])
    console.print(f"elapsed {_duration(report['elapsed_s'])}  mean run {_duration(report['mean_run_s'])}  "
                  f"ETA {_duration(report['eta_s'])}")


def run(args: argparse.Namespace) -> int:
    manifest = open_manifest(str(Path(args.sweep_dir)))
    report = status_report(manifest)
    if args.json:
        print(json.dumps(report, indent=1, default=str))
    else:
        render(report)
    return 0
