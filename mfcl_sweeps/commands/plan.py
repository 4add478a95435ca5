"""`mfcl-sweeps plan FILE [OVERRIDE...] [--limit N] [--json]`: the numbered runs of a sweep (run id,
config hash, overrides), as a dry run would print them. Numbers here are expansion positions; in
a sweep dir the manifest keeps each config's first index."""
from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
from typing import Any

from mfcl_sweeps.commands._spec_args import add_spec_arguments, load_from_args


def _options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--limit", type=int, default=None, metavar="N", help="show only the first N runs")
    parser.add_argument("--json", action="store_true", help="print {count, dialect, runs: [...]} as JSON")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_spec_arguments(parser, _options)


def run_line(run: Any, run_id: str) -> str:
    extra = "".join(f" [env {k}={v}]" for k, v in run.env.items())
    return f"{run.position:>6}  {run_id}  {run.config_hash}  {' '.join(run.overrides)}{extra}"


def run_dict(run: Any, run_id: str) -> dict:
    return {
        "position": run.position, "run_id": run_id, "config_hash": run.config_hash, "group": run.group,
        "name": run.name, "overrides": list(run.overrides), "env": dict(run.env),
        "resources": run.resources.to_dict(), "metadata": dict(run.metadata),
        "budget": dataclasses.asdict(run.budget) if run.budget else None,
    }


def run(args: argparse.Namespace) -> int:
    from mfcl_sweeps.expand import count, iter_runs, make_run_id

    spec = load_from_args(args)
    total = count(spec)
    shown = itertools.islice(iter_runs(spec), args.limit if args.limit is not None and args.limit >= 0 else None)
    if args.json:
        runs = [run_dict(r, make_run_id(r.position, r.group, r.combo)) for r in shown]
        print(json.dumps({"count": total, "dialect": spec.dialect, "runs": runs}, indent=2, default=repr))
        return 0
    print(f"{total} run(s) ({spec.dialect} sweep form)")
    listed = 0
    for r in shown:
        print(run_line(r, make_run_id(r.position, r.group, r.combo)))
        listed += 1
    if listed < total:
        print(f"... {total - listed} more (--limit)")
    return 0
