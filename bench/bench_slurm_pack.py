"""Short runs on the Slurm test cluster, side by side: mfcl_slurm with runs packed into array
tasks (`hydra.launcher.runs_per_task`), mfcl_slurm with one run per task, and
hydra-submitit-launcher (`submitit_slurm`, Hydra's basic sweeper). Each variant runs the same
no-op sweep (bench/apps/noop) as a user would, `--multirun` from the shell, timed from start to
exit; variants take turns in every round, so load on the shared machine hits them alike. Every
sbatch/sacct/squeue call is counted through shims on PATH that log and run the real command.

    scripts/slurm-test-cluster.sh start
    python bench/bench_slurm_pack.py [--runs 20] [--runs-per-task 10] [--rounds 2]

Goal (issue 18): 20 no-op runs packed <= 8 s; 1,000 runs in <= 2 sbatch calls (run with
`--runs 1000 --only packed` to see the calls).
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

APP = Path(__file__).resolve().parent / "apps" / "noop" / "app.py"
COUNTED = ("sbatch", "sacct", "squeue", "scontrol")


def shims(where: Path, log: Path) -> dict[str, str]:
    """PATH with a logging shim in front of each counted command."""
    where.mkdir(parents=True, exist_ok=True)
    for name in COUNTED:
        real = shutil.which(name)
        shim = where / name
        shim.write_text(f'#!/bin/sh\necho {name} >> "{log}"\nexec {real} "$@"\n')
        shim.chmod(0o755)
    return {**os.environ, "PATH": f"{where}:{os.environ['PATH']}"}


def variants(runs_per_task: int) -> dict[str, list[str]]:
    mfcl = ["hydra/sweeper=mfcl", "hydra/launcher=mfcl_slurm", "hydra.launcher.progress=log"]
    return {
        "packed": [*mfcl, f"hydra.launcher.runs_per_task={runs_per_task}"],
        "unpacked": mfcl,
        "submitit": ["hydra/launcher=submitit_slurm"],
    }


def one(name: str, overrides: list[str], runs: int, work: Path) -> tuple[float, dict[str, int]]:
    log = work / f"{name}.calls"
    log.unlink(missing_ok=True)
    env = shims(work / "bin", log)
    sweep = work / f"{name}-sweep"
    shutil.rmtree(sweep, ignore_errors=True)
    cmd = [sys.executable, str(APP), "--multirun", f"hydra.sweep.dir={sweep}", *overrides, f"+i=range({runs})"]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True, timeout=1800)
    took = time.perf_counter() - t0
    if proc.returncode:
        raise SystemExit(f"{name} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    calls = log.read_text().split() if log.exists() else []
    return took, {c: calls.count(c) for c in COUNTED}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=20)
    p.add_argument("--runs-per-task", type=int, default=10)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--only", nargs="*", choices=("packed", "unpacked", "submitit"))
    args = p.parse_args()
    chosen = {k: v for k, v in variants(args.runs_per_task).items() if not args.only or k in args.only}
    times: dict[str, list[float]] = {k: [] for k in chosen}
    calls: dict[str, dict[str, int]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-slurm-pack-", dir=os.environ.get("MFCL_BENCH_DIR")) as tmp:
        for r in range(args.rounds):
            for name, overrides in chosen.items():
                took, calls[name] = one(name, overrides, args.runs, Path(tmp))
                times[name].append(took)
                print(f"round {r + 1}: {name:9s} {took:6.1f} s  {calls[name]}", flush=True)
    load = os.getloadavg()[0]
    print(f"\n{args.runs} no-op runs on the test cluster (runs_per_task={args.runs_per_task} when packed; "
          f"median of {args.rounds}; load average {load:.1f})")
    base = statistics.median(times["packed"]) if "packed" in times else None
    for name, ts in times.items():
        med = statistics.median(ts)
        ratio = f"  x{med / base:.2f} packed" if base else ""
        print(f"  {name:9s} {med:6.1f} s{ratio}  calls in the last round: "
              + ", ".join(f"{c} {n}" for c, n in calls[name].items()))


if __name__ == "__main__":
    main()
