"""`mfcl-sweeps` command line. Each subcommand lives in `mfcl_sweeps.commands.<name>` and is
imported only when used, so `mfcl-sweeps status` stays fast."""
from __future__ import annotations

import argparse
import importlib
import sys
from typing import Optional, Sequence

from mfcl_sweeps.errors import MfclError
from mfcl_sweeps.fsio import writable

# name -> one-line help; module mfcl_sweeps.commands.<name> has add_arguments(parser) and run(args) -> int
COMMANDS = {
    "count": "print how many runs a sweep file expands to",
    "plan": "print the numbered runs of a sweep file (run id, config hash, overrides)",
    "status": "show the state of a sweep dir (table, or --json)",
    "cancel": "cancel the running runs of a sweep dir through the backend that started them",
    "resume": "re-run a sweep's recorded command on its sweep dir; only missing runs run",
    "store": "move a sweep's state between its file journal and a PostgreSQL database (export/import)",
    "complete": "finish a sweep with other sources (mfcl_pool): only unfinished runs run, held jobs re-attached",
    "aggregate": "write the report of a sweep dir: reports/index.html, summary.md, CSVs and figures",
    "watch": "live terminal view of a sweep (progress, running runs, failures, ETA) until it ends",
    "init": "detect the project's Hydra app, schedulers and GPUs; write sweeps/example.yaml and launcher presets",
    "configure": "build a sweep file in a keyboard-driven terminal UI, with a live run count",
}


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="mfcl-sweeps", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    argv = list(sys.argv[1:] if argv is None else argv)
    chosen = next((a for a in argv if not a.startswith("-")), None)
    for name, help_text in COMMANDS.items():
        sp = sub.add_parser(name, help=help_text, description=help_text)
        if name == chosen:  # only the chosen command's module is imported
            importlib.import_module(f"mfcl_sweeps.commands.{name}").add_arguments(sp)
    args = parser.parse_args(argv)
    module = importlib.import_module(f"mfcl_sweeps.commands.{args.command}")
    try:
        with writable():  # a full or read-only disk met outside fsio/journal: one line too
            return int(module.run(args) or 0)
    except MfclError as err:
        print(f"mfcl-sweeps {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
