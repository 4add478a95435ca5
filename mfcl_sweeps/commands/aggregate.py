"""`mfcl-sweeps aggregate SWEEP_DIR`: the report, for detached, partial or failed sweeps
(Hydra skips `on_multirun_end` when a sweep raises), or to rank by another metric."""
from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("sweep_dir", help="sweep dir holding .mfcl/journal.jsonl or sweep_manifest.json")
    parser.add_argument("--no-html", action="store_true", help="skip reports/index.html")
    parser.add_argument("--no-plots", action="store_true", help="skip the figures")
    parser.add_argument("--metric", default=None,
                        help="metric to rank configs by (an eval.csv metric, a key of the returned dict, or "
                             "return_value); default: the sweep's budget target_metric, else found in the runs")
    parser.add_argument("--mode", choices=("min", "max"), default=None,
                        help="whether lower (min) or higher (max) is better; default: min for names ending "
                             "in loss/error/perplexity/ppl, else max")
    parser.add_argument("--max-rows", type=int, default=200,
                        help="rows per table in summary.md; the CSV and index.html have all (default: 200)")


def run(args: argparse.Namespace) -> int:
    from mfcl_sweeps.report import write_final_report
    from mfcl_sweeps.state.manifest import SweepManifest
    from mfcl_sweeps.state.store import keeps_state

    if keeps_state(args.sweep_dir):
        SweepManifest(args.sweep_dir).write_snapshot()  # the journal is newer than any snapshot
    files = write_final_report(args.sweep_dir, html=not args.no_html, plots=not args.no_plots,
                               metric=args.metric, mode=args.mode, max_rows=args.max_rows)
    for path in [files.html, files.markdown, files.csv, files.configs_csv, *files.plots]:
        if path:
            print(path)
    return 0
