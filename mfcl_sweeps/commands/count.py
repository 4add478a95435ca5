"""`mfcl-sweeps count FILE [OVERRIDE...]`: how many runs a sweep expands to (nothing is expanded
for plain grids, so a million-run grid counts instantly)."""
from __future__ import annotations

import argparse

from mfcl_sweeps.commands._spec_args import add_spec_arguments, load_from_args


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_spec_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from mfcl_sweeps.expand import count

    print(count(load_from_args(args)))
    return 0
