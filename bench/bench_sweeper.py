"""Time to first job and validation cost of hydra/sweeper=mfcl.

Parts (all by default, or pick with --only):
- first: first job at 2,000 and 100,000 runs with mfcl_local, against Hydra's BasicSweeper at 2,000
  (issue 2: first job within 1 s of start-up at 100,000 runs).
- hydra-launchers: first job at 100 and 100,000 runs with Hydra's own BasicLauncher and joblib
  launcher under the mfcl sweeper (issue 18: within 1.5x; the sweeper hands them growing batches).
- throughput: N no-op jobs with those launchers, growing batches against one batch of all
  (max_batch_size=N, what the sweeper did before) (issue 18: < 5% slower).
- validation: checking 1,000 distinct values against a typed app, in place against a deep copy
  of the config per value (issue 18: < 1 s).

Each sweep is a real `--multirun` process; the task writes the wall time at which the first job
started, and the sweep is killed right after. Times include Python/Hydra start-up; the time of
`python app.py --help` (start-up alone) is shown for reference.

    python bench/bench_sweeper.py [--only hydra-launchers throughput validation] [--jobs 500]
"""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

APP = Path(__file__).parent / "apps" / "first" / "app.py"
NOOP = Path(__file__).parent / "apps" / "noop" / "app.py"
FIXTURE_APP = Path(__file__).parents[1] / "tests" / "fixtures" / "app"
HYDRA_LAUNCHERS = {"BasicLauncher": ["hydra/launcher=basic"],
                   "joblib(n_jobs=2)": ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"]}


def grid(n: int) -> list[str]:
    a = {100: 10, 2000: 40}.get(n, 400)
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


def first_jobs(root: Path) -> None:
    mfcl = ["hydra/sweeper=mfcl", "hydra/launcher=mfcl_local", "hydra.launcher.progress=log"]
    rows = {
        "python app.py --help (start-up alone)": startup(root),
        "mfcl sweeper, 2,000 runs": first_job_after([*mfcl, *grid(2000)], root),
        "mfcl sweeper, 100,000 runs": first_job_after([*mfcl, *grid(100_000)], root),
        "BasicSweeper, 2,000 runs": first_job_after(["hydra/sweeper=basic", *grid(2000)], root),
    }
    for name, t in rows.items():
        print(f"  {name:<44} {t:7.2f} s to first job")
    ratio = rows["BasicSweeper, 2,000 runs"] / rows["mfcl sweeper, 2,000 runs"]
    print(f"  BasicSweeper / mfcl at 2,000 runs: x{ratio:.1f}")


def hydra_launchers(root: Path) -> None:
    for name, launcher in HYDRA_LAUNCHERS.items():
        # alternated, so that a change in the machine's load hits both sizes alike
        small, large = [], []
        for _ in range(3):
            small.append(first_job_after(["hydra/sweeper=mfcl", *launcher, *grid(100)], root))
            large.append(first_job_after(["hydra/sweeper=mfcl", *launcher, *grid(100_000)], root))
        print(f"  mfcl sweeper + {name:<17} first job: 100 runs {min(small):6.2f} s, "
              f"100,000 runs {min(large):6.2f} s: x{min(large) / min(small):.2f} (best of 3)")


def run_all(launcher: list[str], jobs: int, root: Path, extra: list[str]) -> float:
    sweep_dir = root / f"tp{time.monotonic_ns()}"
    cmd = [sys.executable, str(NOOP), "--multirun", f"hydra.sweep.dir={sweep_dir}", "hydra/sweeper=mfcl",
           "hydra/hydra_logging=disabled", f"+x=range(0,{jobs})", *launcher, *extra]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True, cwd=root)
    elapsed = time.perf_counter() - t0
    done = sum(1 for p in sweep_dir.iterdir() if p.name.isdigit())
    assert done == jobs, f"{done} job dirs, expected {jobs}"
    return elapsed


def throughput(root: Path, jobs: int) -> None:
    for name, launcher in HYDRA_LAUNCHERS.items():
        growing = run_all(launcher, jobs, root, [])
        one = run_all(launcher, jobs, root, [f"hydra.sweeper.max_batch_size={jobs}"])
        print(f"  {name:<17} {jobs} no-op jobs: growing batches {growing:7.1f} s, one batch {one:7.1f} s: "
              f"{100 * (growing / one - 1):+.1f}%")


def validation(values: int = 1000) -> None:
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.types import RunMode

    from mfcl_sweeps import validate
    from mfcl_sweeps.spec import SpecOptions, load_spec

    sys.path.insert(0, str(FIXTURE_APP))
    import schema  # the typed test app: train.* are typed nodes

    schema.register()
    half = values // 2
    spec = load_spec(None, cli_overrides=[], options=SpecOptions(
        grid={"train.epochs": list(range(half)), "optimizer.lr": [i / values for i in range(half)]}))
    with initialize_config_dir(config_dir=str(FIXTURE_APP / "conf"), version_base=None):
        loader = GlobalHydra.instance().config_loader()
        master = loader.load_configuration("config", overrides=[], run_mode=RunMode.MULTIRUN)
        validate.validate_spec(spec, loader, master)  # warm: parser and config sources loaded
        t0 = time.perf_counter()
        validate.validate_spec(spec, loader, master)
        in_place = time.perf_counter() - t0
        scalar_leaf, validate._scalar_leaf = validate._scalar_leaf, lambda task, parsed: None
        try:
            t0 = time.perf_counter()
            validate.validate_spec(spec, loader, master)
            copied = time.perf_counter() - t0
        finally:
            validate._scalar_leaf = scalar_leaf
    print(f"  validation of {values} distinct values: in place {in_place:5.2f} s, "
          f"deep copy per value {copied:5.2f} s: x{copied / in_place:.1f}")


def main() -> None:
    parts = ["first", "hydra-launchers", "throughput", "validation"]
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=parts, default=parts)
    parser.add_argument("--jobs", type=int, default=500, help="no-op jobs per throughput sweep")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        if "first" in args.only:
            first_jobs(root)
        if "hydra-launchers" in args.only:
            hydra_launchers(root)
        if "throughput" in args.only:
            throughput(root, args.jobs)
        if "validation" in args.only:
            validation()


if __name__ == "__main__":
    main()
