"""Database store against the file journal: claims/s, transitions/s, and `status` time.

    MFCL_STORE=postgresql://USER:PW@HOST:PORT/DB python bench/bench_store.py [--runs 1000] [--big]

Claims are what a claim-mode worker does per run (first claim + its `claimed` op); transitions
one op each (a run starting). `--big` adds the 100,000-run case for claims and transitions (it
takes minutes). `status` is the whole `mfcl-sweeps status` process over a finished 100,000-run
sweep (bench_manifest.build: 200,000 ops), from a sweep dir pointing at the database and from a
file journal (with its replay checkpoint, as a driver leaves it).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_manifest import build, status_process  # noqa: E402

from mfcl_sweeps import model  # noqa: E402
from mfcl_sweeps.model import PlannedRun  # noqa: E402
from mfcl_sweeps.state.manifest import SweepManifest  # noqa: E402
from mfcl_sweeps.state.store import ENV_STORE, open_store, parse_url  # noqa: E402


def opened(sweep_dir: str, url: str | None) -> SweepManifest:
    """A fresh sweep: in the file journal (url None) or in the database under a new name."""
    if url is None:
        return SweepManifest(sweep_dir)
    store = open_store(sweep_dir, url=parse_url(url), name=f"bench-{uuid.uuid4().hex[:10]}", create=True)
    return SweepManifest(sweep_dir, store=store)


def rates(sweep_dir: str, url: str | None, n: int) -> tuple[float, float]:
    """(claims/s, transitions/s) of one process over n runs."""
    manifest = opened(sweep_dir, url)
    manifest.record_plan({}, "bench", n, cluster="bench")
    runs = [PlannedRun(overrides=(f"x={i}",), config_hash=f"{i:016x}", index=i, run_id=f"{i:06d}") for i in range(n)]
    t = time.perf_counter()
    assert all(manifest.claim(run, "bench-worker") for run in runs)
    claims = n / (time.perf_counter() - t)
    t = time.perf_counter()
    for run in runs:
        manifest.transition(run, model.RUNNING)
    return claims, n / (time.perf_counter() - t)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--big", action="store_true", help="also 100,000 runs of claims and transitions (minutes)")
    parser.add_argument("--status-runs", type=int, default=100_000)
    args = parser.parse_args()
    url = os.environ.get(ENV_STORE)
    if not url:
        print(f"set {ENV_STORE}=postgresql://... (scripts/postgres-test.sh start; see tests/services.py PG_URL)")
        return 2
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_DIR")) as tmp:
        print(f"load average {os.getloadavg()[0]:.1f}")
        for n in [args.runs, *([100_000] if args.big else [])]:
            (fc, ft), (pc, pt) = rates(f"{tmp}/file-{n}", None, n), rates(f"{tmp}/pg-{n}", url, n)
            print(f"{n:>7} runs  claims/s: file {fc:7.0f}  postgresql {pc:7.0f}  ratio {pc / fc:5.2f}x   "
                  f"transitions/s: file {ft:7.0f}  postgresql {pt:7.0f}  ratio {pt / ft:5.2f}x")
        n = args.status_runs
        for kind, sweep in (("file", f"{tmp}/status-file"), ("postgresql", f"{tmp}/status-pg")):
            if kind == "postgresql":
                opened(sweep, url)  # the pointer: build() then writes to the database
            build(sweep, n)
            SweepManifest(sweep).write_snapshot()  # as a driver leaves it (file: with its replay checkpoint)
            best = min(status_process(sweep, "--json") for _ in range(3))
            print(f"status of a {n}-run sweep ({kind}): {best[0]:6.2f} s wall {best[1]:6.2f} s cpu")
    return 0


if __name__ == "__main__":
    sys.exit(main())
