"""Manifest speed: status over a 100,000-run journal, locked+fsync'd append rate, replay time.

    python bench/bench_manifest.py [--runs 100000] [--appends 2000]

The synthetic sweep is what a finished 100,000-run sweep leaves: one plan line, then per run a
`running` line (with the run's identity) and a `completed` line; 1% failed, 200 still running.
It is written in batches (one write per 10,000 ops) because the lines, not the write pattern,
are what status and replay pay for.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

from mfcl_sweeps import model
from mfcl_sweeps.expand import count, iter_runs
from mfcl_sweeps.liveness import HOST
from mfcl_sweeps.spec import load_spec
from mfcl_sweeps.state.manifest import SweepManifest, identity_of, transition_op


def build(sweep_dir: str, n_runs: int) -> None:
    spec = load_spec(None, cli_overrides=[f"model.lr=range(0,{n_runs // 100})", "seed=range(0,100)",
                                          "optimizer=adamw"])
    manifest = SweepManifest(sweep_dir)
    manifest.record_plan(spec.to_dict(), spec.spec_hash(), count(spec), cluster="bench")
    ops: list[dict] = []
    t0 = time.time() - 3600
    for i, run in enumerate(manifest.assign(iter_runs(spec))):
        start = t0 + i * 0.01
        ops.append(transition_op(run.config_hash, model.RUNNING, {
            "host": HOST, "pid": 10000 + i % 50000, "backend": "local", "attempt": 1, "start_time": start,
            "job_dir": f"{sweep_dir}/{run.index}"}, identity_of(run)))
        if i >= n_runs - 200:
            pass  # still running
        elif i % 100 == 7:
            ops.append(transition_op(run.config_hash, model.FAILED, {
                "exit_code": 1, "error": "RuntimeError: CUDA out of memory", "end_time": start + 30}))
        else:
            ops.append(transition_op(run.config_hash, model.COMPLETED, {
                "exit_code": 0, "return_value": "0.9312", "end_time": start + 30}))
        if len(ops) >= 10_000:
            manifest.store.append(ops)
            ops = []
    if ops:
        manifest.store.append(ops)


def timed(fn, repeat: int = 3) -> float:
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def status_process(sweep: str, *extra: str) -> tuple[float, float]:
    """(wall, cpu) seconds of a whole `mfcl-sweeps status` process, interpreter start included."""
    before = os.times()
    t = time.perf_counter()
    subprocess.run(["mfcl-sweeps", "status", sweep, *extra], check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - t
    after = os.times()
    return wall, (after.children_user - before.children_user) + (after.children_system - before.children_system)


def bare_append_ms(path: str, n: int) -> float:
    """The floor: an O_APPEND write + fsync with no lock at all."""
    t = time.perf_counter()
    for _ in range(n):
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        os.write(fd, b'{"op":"t","h":"0123456789abcdef","s":"running","t":1.0}\n')
        os.fsync(fd)
        os.close(fd)
    return (time.perf_counter() - t) / n * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=100_000)
    parser.add_argument("--appends", type=int, default=1000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_DIR")) as tmp:
        sweep = os.path.join(tmp, "sweep")
        build(sweep, args.runs)
        size = os.path.getsize(os.path.join(sweep, ".mfcl", "journal.jsonl"))
        print(f"synthetic journal: {args.runs} runs, {size / 1e6:.1f} MB, load average {os.getloadavg()[0]:.1f}")

        full = SweepManifest(sweep)
        t, c = time.perf_counter(), time.process_time()
        full.journal.read_new()  # parse only: no checkpoint is written on this path
        print(f"journal parse, all lines:                 {(time.perf_counter() - t) * 1000:8.0f} ms wall "
              f"{(time.process_time() - c) * 1000:6.0f} ms cpu")
        wall, cpu = status_process(sweep, "--json")
        print(f"status, no checkpoint yet (replays, saves one): {wall * 1000:6.0f} ms wall {cpu * 1000:6.0f} ms cpu")
        for extra in (("--json",), ()):
            runs = [status_process(sweep, *extra) for _ in range(3)]
            wall, cpu = min(r[0] for r in runs), min(r[1] for r in runs)
            print(f"status {' '.join(extra) or 'table':6s} from checkpoint (whole process): {wall * 1000:6.0f} ms wall "
                  f"{cpu * 1000:6.0f} ms cpu  (target < 1000)")
        warm = SweepManifest(sweep)
        some_hash = next(iter(warm.records()))
        costs = []
        for _ in range(5):
            warm.transition(some_hash, model.RUNNING)
            t = time.perf_counter()
            assert warm.refresh() == 1
            costs.append(time.perf_counter() - t)
        print(f"incremental replay, 1 new op:             {sorted(costs)[2] * 1000:8.2f} ms (median of 5)")
        snap = timed(lambda: SweepManifest(sweep).write_snapshot(), repeat=1)
        print(f"write_snapshot ({args.runs} runs, from checkpoint): {snap * 1000:8.0f} ms")

        fresh = SweepManifest(os.path.join(tmp, "appends"))
        fresh.record_plan({}, "bench", args.appends)
        run = next(iter_runs(load_spec(None, cli_overrides=["a=1"])))
        t = time.perf_counter()
        for _ in range(args.appends):
            fresh.transition(run, model.RUNNING)
        ours = (time.perf_counter() - t) / args.appends * 1000
        floor = bare_append_ms(os.path.join(tmp, "bare.jsonl"), args.appends)
        print(f"transition append (link lock + write + fsync): {ours:6.2f} ms = {1000 / ours:6.0f}/s; "
              f"bare append+fsync {floor:.2f} ms; ratio {ours / floor:.2f}x")


if __name__ == "__main__":
    sys.exit(main())
