"""Aggregation speed: 10,000 runs, each with a 100-row timings.csv (plus eval.csv, budget.json,
telemetry.json), summarized from a synthetic sweep dir. Target: <= 15 s on 2 cores.

    python bench/bench_aggregate.py [--runs 10000] [--rows 100] [--report]
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


def make_sweep(root: str, runs: int, rows: int) -> None:
    rng = random.Random(0)
    records = []
    timing_header = ",".join(STREAMS["timings"][1]) + "\n"
    eval_header = ",".join(STREAMS["eval"][1]) + "\n"
    for i in range(runs):
        job_dir = os.path.join(root, str(i))
        os.makedirs(job_dir)
        lr = rng.choice([0.001, 0.01, 0.1])
        with open(os.path.join(job_dir, "timings.csv"), "w") as fh:
            fh.write(timing_header + "".join(
                f"{s},{s * 0.01},{10 + rng.random()},64,4096,{6400 + rng.random()},1024\n" for s in range(1, rows + 1)))
        with open(os.path.join(job_dir, "eval.csv"), "w") as fh:
            fh.write(eval_header + "".join(f"{s},{s * 0.01},accuracy,{s / rows}\n" for s in range(10, rows + 1, 10)))
        with open(os.path.join(job_dir, "budget.json"), "w") as fh:
            json.dump({"mode": "iso_steps", "limit": rows, "used": rows, "exhausted": True}, fh)
        with open(os.path.join(job_dir, "telemetry.json"), "w") as fh:
            json.dump({"artifacts": ["timings.csv", "eval.csv", "budget.json"]}, fh)
        records.append({"run_id": f"{i:05d}_default_lr-{lr}", "index": i, "group": "default",
                        "overrides": [f"lr={lr}", f"seed={i}"], "job_dir": job_dir, "status": "completed",
                        "return_value": "1.0",
                        "budget": {"mode": "iso_steps", "limit": rows, "target_metric": "accuracy",
                                   "target_value": 0.5}})
    with open(os.path.join(root, "sweep_manifest.json"), "w") as fh:
        json.dump({"version": 1, "sweep_id": "bench", "sweep_dir": root, "runs": records}, fh)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--rows", type=int, default=100)
    parser.add_argument("--report", action="store_true", help="also time the full report (CSV, markdown, plots)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as root:
        start = time.perf_counter()
        make_sweep(root, args.runs, args.rows)
        print(f"generated {args.runs} runs x {args.rows} timing rows in {time.perf_counter() - start:.1f} s")
        os.system("sync")
        start = time.perf_counter()
        frame = summarize(root)
        took = time.perf_counter() - start
        assert len(frame) == args.runs and frame["accuracy"].eq(1.0).all()
        print(f"summarize: {args.runs} runs in {took:.2f} s (target <= 15 s; {took / 15:.2f} of target)")
        if args.report:
            from mfcl_sweeps.report import write_report

            start = time.perf_counter()
            write_report(root)
            print(f"write_report (CSV + markdown + plots): {time.perf_counter() - start:.2f} s")


if __name__ == "__main__":
    main()
