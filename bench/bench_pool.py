"""mfcl_pool over three kinds of source vs the same runs on local alone: wall time, scheduling
overhead per run and slot utilization, from real sweeps of the tests' ssh_app (each run sleeps
`--sleep` seconds) on local slots, the two loopback sshd hosts and the one-node Slurm cluster.

- slot utilization = sum of run durations (journal: start -> end) / (wall time x slots);
- scheduling overhead per run = (wall time x slots - sum of run durations) / runs: the slot time
  each run cost beyond its own duration (start-up, placement, polling, result collection, idle).

On one test machine every "source" shares the same cores (the sshd hosts and the Slurm node
are this machine), so the pool cannot be faster here: the numbers measure what the pool and its
sources cost per run, not the speed-up real extra machines give.

    sudo scripts/ssh-test-hosts.sh start && sudo scripts/slurm-test-cluster.sh start
    python bench/bench_pool.py [--runs 200] [--sleep 0.5] [--local-slots 2] [--plan-only]
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
APP = REPO / "tests" / "apps" / "ssh_app"
SSH_DIR = Path("/tmp/mfcl-ssh")
PORTS = (2201, 2202)


def git(*args: str, cwd: Path) -> None:
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True)


def project(root: Path) -> Path:
    """The app as a git project, cloned once per SSH host (their workdirs)."""
    proj = root / "proj"
    shutil.copytree(APP, proj)
    git("init", "-q", cwd=proj)
    git("add", "-A", cwd=proj)
    git("-c", "user.email=b@b", "-c", "user.name=b", "commit", "-qm", "bench", cwd=proj)
    presets = root / "presets"
    presets.mkdir()
    for i, port in enumerate(PORTS):
        git("clone", "-q", str(proj), str(root / f"host{i}"), cwd=root)
        (presets / f"host{i}.yaml").write_text(
            f"defaults: [mfcl_ssh, _self_]\nhosts: [{{host: 127.0.0.1, port: {port}, user: root, slots: 2, "
            f"workdir: '{root / f'host{i}'}'}}]\npython: {sys.executable}\n"
            f"identity_file: {SSH_DIR / 'id_ed25519'}\nknown_hosts_file: {SSH_DIR / 'known_hosts'}\n")
    (presets / "cluster.yaml").write_text("defaults: [mfcl_slurm, _self_]\npartition: debug\npoll_min_s: 0.3\n"
                                          "poll_max_s: 1\ntimeout_min: 10\n")
    return proj


def sweep(proj: Path, name: str, runs: int, sleep: float, launcher: list[str]) -> tuple[float, list]:
    from mfcl_sweeps.state.manifest import SweepManifest

    sweep_dir = proj.parent / name
    argv = [sys.executable, "app.py", "--multirun", f"hydra.sweep.dir={sweep_dir}", f"side_dir={proj.parent / 'side'}",
            "hydra/sweeper=mfcl", f"x=range({runs})", f"sleep_s={sleep}", *launcher, "hydra.launcher.progress=log"]
    t0 = time.perf_counter()
    subprocess.run(argv, cwd=proj, check=True, capture_output=True)
    wall = time.perf_counter() - t0
    records = list(SweepManifest(sweep_dir).records().values())
    assert len(records) == runs and all(r.status == "completed" for r in records), name
    return wall, records


def report(name: str, wall: float, records: list, slots: int) -> tuple[float, float]:
    busy = sum(r.end_time - r.start_time for r in records)
    util = busy / (wall * slots)
    overhead = (wall * slots - busy) / len(records)
    print(f"  {name:<34} wall {wall:7.1f} s  slots {slots:3d}  utilization {util:6.1%}  "
          f"overhead/run {overhead:6.2f} slot-s")
    return util, overhead


def plan_cost(root: Path, runs: int) -> None:
    """The pool's own cost per run in the driver: placement (affinity, strategy) and each
    child's planning, in batches of 10 as the driver hands them over, vs mfcl_local's planning."""
    from types import SimpleNamespace

    from omegaconf import OmegaConf

    from mfcl_sweeps.backends.local import LocalBackend
    from mfcl_sweeps.backends.pool.backend import PoolBackend
    from mfcl_sweeps.launch.driver import make_request
    from mfcl_sweeps.model import PlannedRun

    sweep_dir = str(root / "plan")
    session = SimpleNamespace(sweep_dir=sweep_dir, master_config=OmegaConf.create({}), task_function=None)
    requests = [make_request(PlannedRun(overrides=(f"x={i}",), config_hash=f"h{i}", index=i, run_id=f"{i:05d}_x"),
                             [f"x={i}"], sweep_dir=sweep_dir, session_path="s.pkl", backend="pool")
                for i in range(runs)]
    sources = ["local:2", "ssh:host0:2", "ssh:host1:2", "slurm:cluster:4"]
    pool = PoolBackend.from_options({"sources": sources, "preset_dir": str(root / "presets")}, session=session)
    local = LocalBackend.from_options({"max_concurrent": 2}, session=session)
    for name, backend in (("local alone", local), ("pool (local + 2 ssh + slurm)", pool)):
        backend.plan(requests[:10])  # warm: lazy imports and cached scheduler settings are no run's cost
        t0 = time.perf_counter()
        for i in range(0, runs, 10):
            backend.plan(requests[i:i + 10])
        print(f"  {name:<34} planning {(time.perf_counter() - t0) / runs * 1e6:8.0f} us/run")
    t0 = time.perf_counter()
    for i in range(0, runs, 10):
        pool._place(requests[i:i + 10])  # affinity and strategy alone: the rest is the children's planning
    print(f"  {'  of which the pool placement':<34} planning {(time.perf_counter() - t0) / runs * 1e6:8.0f} us/run")
    local.close()
    pool.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--sleep", type=float, default=0.5)
    parser.add_argument("--local-slots", type=int, default=2)
    parser.add_argument("--slurm-slots", type=int, default=4)
    parser.add_argument("--plan-only", action="store_true", help="only the driver-side planning cost")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mfcl-bench-pool-") as tmp:
        proj = project(Path(tmp))
        local = ["hydra/launcher=mfcl_local", f"hydra.launcher.max_concurrent={args.local_slots}"]
        sources = f"[local:{args.local_slots},ssh:host0:2,ssh:host1:2,slurm:cluster:{args.slurm_slots}]"
        pool = ["hydra/launcher=mfcl_pool", f"hydra.launcher.sources={sources}",
                f"hydra.launcher.preset_dir={Path(tmp) / 'presets'}"]
        print(f"{args.runs} runs of {args.sleep:g} s each")
        plan_cost(Path(tmp), args.runs)
        if args.plan_only:
            return
        wl, rl = sweep(proj, "local", args.runs, args.sleep, local)
        wp, rp = sweep(proj, "pool", args.runs, args.sleep, pool)
        ul, ol = report("local alone", wl, rl, args.local_slots)
        up, op = report("pool (local + 2 ssh + slurm)", wp, rp, args.local_slots + 4 + args.slurm_slots)
        by_source: dict[str, int] = {}
        for r in rp:
            by_source[r.extra["source"]] = by_source.get(r.extra["source"], 0) + 1
        print(f"  runs per source: {by_source}")
        print(f"  wall time pool / local: {wp / wl:.2f}x; overhead/run pool / local: {op / ol:.2f}x; "
              f"utilization pool / local: {up / ul:.2f}x")


if __name__ == "__main__":
    main()
