"""`mfcl-sweeps aggregate SWEEP_DIR [--html]`: the report, for detached, partial or failed sweeps
(Hydra skips `on_multirun_end` when a sweep raises)."""
from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("sweep_dir", help="sweep dir holding sweep_manifest.json")
    parser.add_argument("--html", action="store_true", help="also write reports/summary.html")
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    parser.add_argument("--metric", default="accuracy",
                        help="target metric for runs whose budget names none (default: accuracy)")
    parser.add_argument("--max-rows", type=int, default=200,
                        help="rows per group table in summary.md; the CSV has all (default: 200)")


def run(args: argparse.Namespace) -> int:
    import os

    from mfcl_sweeps.state.journal import state_dir
    from mfcl_sweeps.state.manifest import SweepManifest
    from mfcl_sweeps.report import write_report

    if (state_dir(os.path.abspath(args.sweep_dir)) / "journal.jsonl").exists():
        SweepManifest(args.sweep_dir).write_snapshot()  # the journal is newer than any snapshot
    files = write_report(args.sweep_dir, html=args.html, plots=not args.no_plots, metric=args.metric,
                         max_rows=args.max_rows)
    for path in [files.csv, files.markdown, files.html, *files.plots]:
        if path:
            print(path)
    return 0
