"""Driver memory against sweep size: peak RSS of the driver process (the `--multirun` process
running the mfcl sweeper and mfcl_local) for N no-op runs. Target (issue 15 part 4): flat in N,
under 150 MB at 10,000 runs.

The driver's peak is its VmHWM from /proc, read until it exits (forked jobs are other processes).

    python bench/bench_driver_memory.py                 # 1,000 and 10,000 runs
    python bench/bench_driver_memory.py --runs 1000

Measured (2 shared cores, load ~7-12, 2026-12-02), driver peak RSS:
    runs     before      after
    1,000    156.6 MB    44.3 MB
    10,000   ~1.2 GB*    102.8 MB
(* not run: 10,000 x ~115 KB/run over the 37 MB start, as the growth was linear.) The growth was
the local backend's gc.freeze() in the driver before every fork: it moved each run's garbage not
yet collected (the configs of the unpickled result, ~830 objects) into the permanent generation,
which no collection visits, so it was never freed (gc.get_objects() does not list frozen objects,
which hid it). The freeze now happens in the forked child. What remains per run (~2 KB) is the
slim JobReturn Hydra's contract wants back and the journal's record of the run (sampled during the
10,000-run sweep: 55 MB at 2,500 runs, 63 MB at 6,000, 66 MB at 7,400); the rest of the 10,000-run
peak comes at the end of the sweep, ~30 MB at 10,000 runs and under 1 MB at 1,000-2,000 (not yet
bisected: the final manifest and report are suspects); a 10,000-run plan adds ~7 MB from the start.
10,000 runs took 49 min at load ~7-12.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

APP = Path(__file__).parent / "apps" / "noop" / "app.py"


def high_water_mark(pid: int) -> Optional[int]:
    """The process's peak resident set in bytes (None once it is gone)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def run(runs: int, root: Path) -> tuple[int, float]:
    """(driver peak RSS in bytes, wall seconds) of one sweep of `runs` no-op runs."""
    sweep_dir = root / f"sweep{runs}"
    cmd = [sys.executable, str(APP), "--multirun", f"hydra.sweep.dir={sweep_dir}", "hydra/sweeper=mfcl",
           "hydra/hydra_logging=disabled", "hydra/job_logging=disabled", f"+x=range(0,{runs})",
           "hydra/launcher=mfcl_local", "hydra.launcher.progress=log", "hydra.launcher.output=quiet"]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    peak = 0
    while proc.poll() is None:
        peak = max(peak, high_water_mark(proc.pid) or 0)  # monotonic: the last read before exit is the peak
        time.sleep(0.1)
    err = proc.stderr.read()
    if proc.returncode != 0:
        raise SystemExit(f"{runs} runs: the sweep failed ({proc.returncode}): {err[-2000:]}")
    return peak, time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, nargs="+", default=[1000, 10000])
    args = parser.parse_args()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.runs:
            results[n] = run(n, Path(tmp))
            peak, wall = results[n]
            print(f"{n:>7} runs: driver peak RSS {peak / 2**20:7.1f} MB  ({peak / n / 1024:6.1f} KB/run)  "
                  f"{wall:6.1f} s", flush=True)
    if len(results) > 1:
        small, big = min(results), max(results)
        print(f"peak RSS x{results[big][0] / results[small][0]:.2f} for x{big / small:g} runs")


if __name__ == "__main__":
    main()
