"""Time to first job: hydra/sweeper=mfcl at 2,000 and 100,000 runs vs Hydra's BasicSweeper at 2,000.

Each sweep is a real `--multirun` process; the task writes the wall time at which the first job
started, and the sweep is killed right after. Target (issue 2): first job within 1 s at 100,000
runs (time measured from the sweeper's start would exclude Python/Hydra start-up; we report the
whole process time and, for reference, the time of `python app.py --help`, i.e. start-up alone).

    python bench/bench_sweeper.py
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

APP = Path(__file__).parent / "apps" / "first" / "app.py"


def grid(n: int) -> list[str]:
    a = 40 if n == 2000 else 400
    return [f"+a=range(0,{a})", f"+b=range(0,{n // a})"]


def first_job_after(args: list[str], root: Path, limit_s: float = 900) -> float:
    marker = root / "first.txt"
    marker.unlink(missing_ok=True)
    env = {**os.environ, "BENCH_FIRST_JOB_FILE": str(marker)}
    t0 = time.time()
    proc = subprocess.Popen([sys.executable, str(APP), "--multirun", f"hydra.sweep.dir={root / 'sweep'}", *args],
                            cwd=root, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        while not marker.exists() or not marker.read_text():
            if proc.poll() is not None:
                raise RuntimeError(f"sweep exited with {proc.returncode} before its first job: {args}")
            if time.time() - t0 > limit_s:
                raise TimeoutError(f"no job after {limit_s}s: {args}")
            time.sleep(0.005)
        return float(marker.read_text()) - t0
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def startup(root: Path) -> float:
    t0 = time.time()
    subprocess.run([sys.executable, str(APP), "--help"], cwd=root, check=True, capture_output=True)
    return time.time() - t0


def main() -> None:
    mfcl = ["hydra/sweeper=mfcl", "hydra/launcher=mfcl_local", "hydra.launcher.progress=log"]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        rows = [
            ("python app.py --help (start-up alone)", startup(root)),
            ("mfcl sweeper, 2,000 runs", first_job_after([*mfcl, *grid(2000)], root)),
            ("mfcl sweeper, 100,000 runs", first_job_after([*mfcl, *grid(100_000)], root)),
            ("BasicSweeper, 2,000 runs", first_job_after(["hydra/sweeper=basic", *grid(2000)], root)),
        ]
    for name, t in rows:
        print(f"  {name:<40} {t:7.2f} s to first job")
    base = dict(rows)
    print(f"  BasicSweeper / mfcl at 2,000 runs: x{base['BasicSweeper, 2,000 runs'] / base['mfcl sweeper, 2,000 runs']:.1f}")


if __name__ == "__main__":
    main()
