"""`mfcl-sweeps cancel SWEEP_DIR`: stop a sweep's active runs through the backend that started
each, and journal them `cancelled` (a later resume runs them again).

Each backend module `mfcl_sweeps.backends.<name>` offers `cancel_records(records)`, returning
the config hashes it stopped (None: all of them). Stop the driver first (Ctrl-C), or it goes
on launching the runs that are still pending.
"""
from __future__ import annotations

import argparse
from collections import defaultdict
from typing import Any

from mfcl_sweeps import model

CANCEL_ERROR = "cancelled by mfcl-sweeps cancel"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("sweep_dir", help="the sweep dir (holds .mfcl/journal.jsonl)")
    parser.add_argument("--dry-run", action="store_true", help="list what would be cancelled; change nothing")


def cancellable(records: dict[str, Any]) -> list[Any]:
    """Claimed or running runs, and pending ones a scheduler holds (they have a job id)."""
    return sorted((r for r in records.values()
                   if r.status in (model.CLAIMED, model.RUNNING) or (r.status == model.PENDING and r.backend_job_id)),
                  key=lambda r: r.index)


def run(args: argparse.Namespace) -> int:
    from mfcl_sweeps import backends
    from mfcl_sweeps.commands.status import open_manifest

    manifest = open_manifest(args.sweep_dir)
    targets = cancellable(manifest.records())
    if not targets:
        print(f"{args.sweep_dir}: nothing to cancel")
        return 0
    by_backend: dict[str, list] = defaultdict(list)
    for rec in targets:
        by_backend[rec.backend or ""].append(rec)
    if args.dry_run:
        for rec in targets:
            print(f"would cancel {rec.run_id} ({rec.status}, backend {rec.backend or '-'}, host {rec.host or '-'}, "
                  f"pid {rec.pid or '-'}, job id {rec.backend_job_id or '-'})")
        return 0
    stopped: list[str] = []
    left = 0
    for backend, recs in by_backend.items():
        if not backend:  # claimed, never started: nothing runs
            stopped.extend(r.config_hash for r in recs)
            continue
        if backend not in backends.BACKENDS:
            print(f"cannot cancel {len(recs)} run(s) of backend {backend!r}: no such backend in this install")
            left += len(recs)
            continue
        done = backends.get(backend).cancel_records(recs)
        done = [r.config_hash for r in recs] if done is None else list(done)
        stopped.extend(done)
        if len(done) < len(recs):
            left += len(recs) - len(done)
            print(f"{len(recs) - len(done)} run(s) of backend {backend!r} were not stopped "
                  "(another host's processes: run cancel there)")
    for config_hash in stopped:
        manifest.transition(config_hash, model.CANCELLED, error=CANCEL_ERROR)
    manifest.write_snapshot()
    print(f"cancelled {len(stopped)} run(s); `mfcl-sweeps resume {args.sweep_dir}` runs them again")
    return 1 if left else 0
