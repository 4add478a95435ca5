"""Throughput of no-op jobs: mfcl_local vs Hydra's BasicLauncher vs hydra-joblib-launcher.

All three run side by side in one invocation, under the same sweeper (hydra/sweeper=mfcl), on
the same no-op task, so the ratios measure the launchers. Target (issue 4): mfcl_local >= 2x
BasicLauncher and >= 1.5x joblib (n_jobs=2) on 2 cores.

    python bench/bench_local_launcher.py --jobs 1000
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

APP = Path(__file__).parent / "apps" / "noop" / "app.py"
LAUNCHERS = {
    "basic": ["hydra/launcher=basic"],
    "joblib(n_jobs=2)": ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"],
    "mfcl_local": ["hydra/launcher=mfcl_local", "hydra.launcher.progress=log"],
}


def run(name: str, jobs: int, root: Path) -> float:
    sweep_dir = root / name.split("(")[0]
    cmd = [sys.executable, str(APP), "--multirun", f"hydra.sweep.dir={sweep_dir}", "hydra/sweeper=mfcl",
           "hydra/hydra_logging=disabled", f"+x=range(0,{jobs})", *LAUNCHERS[name]]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True, cwd=root)
    elapsed = time.perf_counter() - t0
    done = sum(1 for p in sweep_dir.iterdir() if p.name.isdigit())
    assert done == jobs, f"{name}: {done} job dirs, expected {jobs}"
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        times = {name: run(name, args.jobs, Path(tmp)) for name in LAUNCHERS}
    mine = times["mfcl_local"]
    print(f"{args.jobs} no-op jobs")
    for name, t in times.items():
        print(f"  {name:<18} {t:8.1f} s  {args.jobs / t:8.1f} jobs/s  mfcl_local speed-up x{t / mine:.2f}")


if __name__ == "__main__":
    main()
