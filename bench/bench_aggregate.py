"""Aggregation and report speed on synthetic sweep dirs: N runs (3 lrs x 2 optimizers x seeds),
each with a 100-row timings.csv, a 10-row eval.csv, budget.json and telemetry.json; one run in
50 failed. Times `summarize` and the full report (CSVs, summary.md, PNG + SVG figures,
index.html). Targets on 2 cores: summarize <= 15 s and the report < 20 s at 10,000 runs.

    python bench/bench_aggregate.py [--runs 1000,10000] [--rows 100] [--keep DIR]
"""
from __future__ import annotations

import argparse
import json
import os
import random
import tempfile
import time

from mfcl_sweeps.aggregate import summarize
from mfcl_sweeps.telemetry import STREAMS

SUMMARIZE_TARGET_S = 15.0
REPORT_TARGET_S = 20.0


def make_sweep(root: str, runs: int, rows: int) -> None:
    rng = random.Random(0)
    records = []
    timing_header = ",".join(STREAMS["timings"][1]) + "\n"
    eval_header = ",".join(STREAMS["eval"][1]) + "\n"
    for i in range(runs):
        job_dir = os.path.join(root, str(i))
        os.makedirs(job_dir)
        lr, opt, seed = (0.001, 0.01, 0.1)[i % 3], ("sgd", "adam")[i // 3 % 2], i // 6
        with open(os.path.join(job_dir, "timings.csv"), "w") as fh:
            fh.write(timing_header + "".join(
                f"{s},{s * 0.01},{10 + rng.random()},64,4096,{6400 + rng.random()},1024\n" for s in range(1, rows + 1)))
        with open(os.path.join(job_dir, "eval.csv"), "w") as fh:
            fh.write(eval_header + "".join(f"{s},{s * 0.01},accuracy,{s / rows * (1 - lr)}\n"
                                           for s in range(10, rows + 1, 10)))
        with open(os.path.join(job_dir, "budget.json"), "w") as fh:
            json.dump({"mode": "iso_steps", "limit": rows, "used": rows, "exhausted": True}, fh)
        with open(os.path.join(job_dir, "telemetry.json"), "w") as fh:
            json.dump({"artifacts": ["timings.csv", "eval.csv", "budget.json"]}, fh)
        failed = i % 50 == 49
        records.append({"run_id": f"{i:05d}_default_lr-{lr}", "index": i, "group": "default",
                        "overrides": [f"lr={lr}", f"opt={opt}", f"seed={seed}"], "job_dir": job_dir,
                        "status": "failed" if failed else "completed", "return_value": None if failed else "1.0",
                        "error": "RuntimeError: diverged" if failed else None,
                        "start_time": 1000.0 + i, "end_time": 1060.0 + i, "host": f"node{i % 4}",
                        "budget": {"mode": "iso_steps", "limit": rows, "target_metric": "accuracy",
                                   "target_value": 0.5}})
    with open(os.path.join(root, "sweep_manifest.json"), "w") as fh:
        json.dump({"version": 1, "sweep_id": "bench", "sweep_dir": root, "runs": records}, fh)


def bench(runs: int, rows: int, root: str) -> tuple[float, float]:
    from mfcl_sweeps.report import write_report

    start = time.perf_counter()
    make_sweep(root, runs, rows)
    print(f"generated {runs} runs x {rows} timing rows in {time.perf_counter() - start:.1f} s")
    os.system("sync")
    start = time.perf_counter()
    frame = summarize(root)
    took = time.perf_counter() - start
    assert len(frame) == runs and frame["accuracy"].notna().all()
    start = time.perf_counter()
    files = write_report(root)
    report = time.perf_counter() - start
    assert files.html and len(files.plots) >= 4
    size = os.path.getsize(files.html) / 1e6
    print(f"{runs} runs: summarize {took:.2f} s ({took / SUMMARIZE_TARGET_S:.2f} of the {SUMMARIZE_TARGET_S:.0f} s "
          f"target); full report {report:.2f} s ({report / REPORT_TARGET_S:.2f} of the {REPORT_TARGET_S:.0f} s "
          f"target); index.html {size:.1f} MB, {len(files.plots)} figures")
    return took, report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", default="1000,10000", help="comma-separated sweep sizes")
    parser.add_argument("--rows", type=int, default=100)
    parser.add_argument("--keep", help="build the sweeps under this dir and keep them (e.g. to open index.html)")
    args = parser.parse_args()
    import matplotlib.pyplot  # noqa: F401  (imported once, not charged to the first size)

    for runs in (int(n) for n in args.runs.split(",")):
        if args.keep:
            root = os.path.join(args.keep, f"sweep-{runs}")
            bench(runs, args.rows, root)
        else:
            with tempfile.TemporaryDirectory() as root:
                bench(runs, args.rows, root)


if __name__ == "__main__":
    main()
