"""`mfcl-sweeps store export|import`: move a sweep's state between its file journal and a
PostgreSQL database (docs/store.md).

    mfcl-sweeps store export SWEEP_DIR postgresql://me@db:5432/sweeps   # the sweep dir now uses the database
    mfcl-sweeps store export SWEEP_DIR BACKUP_DIR                        # a file-journal copy, SWEEP_DIR unchanged
    mfcl-sweeps store import SWEEP_DIR                                   # from its database back to its journal

The ops (plans and transitions) and the plan indices are copied; claims are not: move a sweep
while no worker runs it (its completed runs are never run again; claimed, unfinished ones can be
claimed anew). The destination must hold no sweep yet.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from mfcl_sweeps.errors import StoreError

CHUNK = 2000  # ops per append: one write (file) or one transaction (database) each


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    exp = sub.add_parser("export", help="copy a sweep's state to a database URL (the sweep dir then uses it) "
                                        "or to another directory's file journal")
    exp.add_argument("sweep_dir", help="the sweep dir whose state is copied")
    exp.add_argument("dest", help="postgresql://USER@HOST:PORT/DATABASE, or a directory")
    exp.add_argument("--name", help="the sweep's name in the database (default: its sweep id)")
    imp = sub.add_parser("import", help="copy a sweep's state from a database into the sweep dir's file journal")
    imp.add_argument("sweep_dir", help="the sweep dir that gets the state (and uses its file journal afterwards)")
    imp.add_argument("source", nargs="?", help="postgresql://... (default: the database the sweep dir points at)")
    imp.add_argument("--name", help="the sweep's name in the database (default: the sweep dir's pointer, else its id)")


def copy(source: Any, dest: Any) -> tuple[int, int]:
    """Copy every op and plan index of `source` into the empty store `dest`; (ops, plans)."""
    if dest.exists():
        raise StoreError(f"{dest.describe()} already holds a sweep; export to an empty place (or another --name)")
    ops = source.read_new()
    for start in range(0, len(ops), CHUNK):
        dest.append(ops[start:start + CHUNK])
    plans = source.plan_indices()
    for spec_hash, text in plans.items():
        dest.save_plan_index(spec_hash, text)
    return len(ops), len(plans)


def export(args: argparse.Namespace) -> int:
    from mfcl_sweeps.state import store as stores
    from mfcl_sweeps.state.manifest import SweepManifest
    from mfcl_sweeps.state.pg import PgStore

    source = stores.open_store(args.sweep_dir)
    if not source.exists():
        raise StoreError(f"{args.sweep_dir}: no sweep state to export ({source.describe()} is empty)")
    url = stores.parse_url(args.dest, "DEST") if "://" in args.dest else None
    if url is None:
        dest = stores.FileStore(args.dest)
        if stores.read_pointer(args.dest) is not None:
            raise StoreError(f"{args.dest} keeps its state in a database; export to an empty directory")
        ops, plans = copy(source, dest)
        print(f"exported {ops} ops and {plans} plan indices of {args.sweep_dir} to {dest.describe()}")
        return 0
    replay = SweepManifest(args.sweep_dir, store=stores.open_store(args.sweep_dir))
    name, cluster = args.name or replay.sweep_id, replay.cluster
    dest = PgStore(stores.with_env_password(url), name, create=True)
    ops, plans = copy(source, dest)
    moved = ""
    if source.kind == stores.FILE:  # the sweep moves: later runs, workers and `status` use the database
        stores.write_pointer(args.sweep_dir, url, name, cluster)
        aside = source.journal.path.with_name(f"{source.journal.path.name}.exported-{int(time.time())}")
        source.journal.path.rename(aside)
        Path(source.layout.checkpoint).unlink(missing_ok=True)
        moved = f"; {args.sweep_dir} now keeps its state there (its journal kept as {aside.name})"
    print(f"exported {ops} ops and {plans} plan indices of {args.sweep_dir} to {dest.describe()}{moved}")
    return 0


def import_(args: argparse.Namespace) -> int:
    from mfcl_sweeps.layout import sweep_id_of
    from mfcl_sweeps.state import store as stores
    from mfcl_sweeps.state.pg import PgStore

    pointer = stores.read_pointer(args.sweep_dir)
    if args.source:
        url = stores.parse_url(args.source, "SOURCE")
        if url is None:
            raise StoreError(f"SOURCE={args.source}: import reads a database; give postgresql://... "
                             f"(to copy a sweep dir, use `mfcl-sweeps store export DIR OTHER_DIR`)")
        name = args.name or (pointer or {}).get("sweep") or sweep_id_of(args.sweep_dir)
    elif pointer is not None:
        url, name = stores.parse_url(pointer["store"], "the store pointer"), args.name or pointer["sweep"]
    else:
        raise StoreError(f"{args.sweep_dir} keeps its state in its file journal already; give the database "
                         "to import from (mfcl-sweeps store import SWEEP_DIR postgresql://...)")
    source = PgStore(stores.with_env_password(url), name)
    if not source.exists():
        raise StoreError(f"{source.describe()}: no such sweep in the database (check --name)")
    ops, plans = copy(source, stores.FileStore(args.sweep_dir))
    stores.write_pointer(args.sweep_dir, None, name)
    print(f"imported {ops} ops and {plans} plan indices from {source.describe()} into "
          f"{stores.FileStore(args.sweep_dir).describe()}; {args.sweep_dir} now keeps its state there")
    return 0


def run(args: argparse.Namespace) -> int:
    return export(args) if args.action == "export" else import_(args)
