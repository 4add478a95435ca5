"""Issue 3, end to end: real `--multirun` drivers (hydra/sweeper=mfcl, hydra/launcher=mfcl_local)
killed with SIGKILL at random points and rerun; concurrent claim workers; grid edits."""
from __future__ import annotations

import collections
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from apprun import APPS

from mfcl_sweeps import model
from mfcl_sweeps.state.manifest import SweepManifest

pytestmark = pytest.mark.slow


def driver_cmd(tmp_path: Path, *overrides: str) -> list[str]:
    return [sys.executable, str(APPS / "behave" / "app.py"), "--multirun", "hydra/sweeper=mfcl",
            "hydra/launcher=mfcl_local", "hydra.launcher.max_concurrent=4", f"hydra.sweep.dir={tmp_path / 'sweep'}",
            f"side_dir={tmp_path / 'side'}", "mode=sleep", "seconds=0.1", *overrides]


def start(tmp_path: Path, *overrides: str) -> subprocess.Popen:
    return subprocess.Popen(driver_cmd(tmp_path, *overrides), cwd=tmp_path, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)


def descendants(pid: int) -> list[int]:
    children = collections.defaultdict(list)
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat", "rb") as f:
                    ppid = int(f.read().rsplit(b")", 1)[1].split()[1])
            except (OSError, IndexError):
                continue
            children[ppid].append(int(name))
    out, todo = [], [pid]
    while todo:
        for child in children[todo.pop()]:
            out.append(child)
            todo.append(child)
    return out


def kill(proc: subprocess.Popen, tree: bool) -> None:
    victims = [proc.pid, *(descendants(proc.pid) if tree else [])]
    for pid in victims:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait()


def lines(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


def journal_counts(sweep: Path) -> dict[str, collections.Counter]:
    """config hash -> Counter of journaled states."""
    out: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for line in (sweep / ".mfcl" / "journal.jsonl").read_text().splitlines():
        op = json.loads(line)
        if op["op"] == "t":
            out[op["h"]][op["s"]] += 1
    return out


def check_exactly_once(tmp_path: Path, n_runs: int) -> int:
    """Every run completed; none completed twice unless its first completion was killed between
    the task's last line and the journal append (then the journal shows no completion for that
    attempt). Returns how many such window hits there were."""
    sweep = tmp_path / "sweep"
    records = SweepManifest(sweep).records()
    assert len(records) == n_runs
    assert all(r.status == model.COMPLETED for r in records.values()), \
        {r.run_id: r.status for r in records.values() if r.status != model.COMPLETED}
    journaled = journal_counts(sweep)
    assert all(c[model.COMPLETED] == 1 for c in journaled.values())  # never rerun once known completed
    done = collections.Counter(lines(tmp_path / "side" / "completions.txt"))
    by_run_id = {r.run_id: r for r in records.values()}
    assert set(done) == set(by_run_id)
    window_hits = 0
    for run_id, n in done.items():
        if n > 1:
            assert journaled[by_run_id[run_id].config_hash][model.RUNNING] >= n, run_id
            window_hits += n - 1
    # the manifest agrees with the job dirs
    for rec in records.values():
        assert rec.job_dir == str(sweep / str(rec.index))
        assert (Path(rec.job_dir) / ".hydra" / "overrides.yaml").exists()
    job_dirs = {p.name for p in sweep.iterdir() if p.is_dir() and p.name.isdigit()}  # logs/ is the launcher's
    assert job_dirs == {str(r.index) for r in records.values()}
    return window_hits


# Where the kill lands, keyed on what the sweep has done rather than on a time (a random time
# from start-up often fell after the sweep's end, killing nothing): planned (journal written,
# first jobs starting), a third of the runs completed, all but a few completed; plus a random
# moment up to 0.3 s. Each phase with the driver killed alone and with its whole process tree.
PHASES = {"planned": lambda d: (d / "sweep" / ".mfcl" / "journal.jsonl").exists(),
          "third": lambda d: len(lines(d / "side" / "completions.txt")) >= 10,
          "near_end": lambda d: len(lines(d / "side" / "completions.txt")) >= 26}


@pytest.mark.parametrize("tree", [False, True], ids=["driver", "tree"])
@pytest.mark.parametrize("phase", list(PHASES))
def test_kill_9_driver_at_random_points_then_rerun(tmp_path, phase, tree):
    rng = random.Random(f"{phase}-{tree}")
    overrides = ("value=range(0,30)", "hydra.sweeper.resume=skip_completed")
    driver = start(tmp_path, *overrides)
    deadline = time.monotonic() + 120
    while not PHASES[phase](tmp_path) and driver.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(rng.uniform(0.0, 0.3))
    kill(driver, tree)
    rerun = subprocess.run(driver_cmd(tmp_path, *overrides), cwd=tmp_path, capture_output=True, text=True,
                           timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    hits = check_exactly_once(tmp_path, 30)
    assert hits <= 1
    snapshot = json.loads((tmp_path / "sweep" / "sweep_manifest.json").read_text())
    assert snapshot["counts"] == {"total": 30, "completed": 30}


def test_four_claim_workers_run_each_of_40_runs_once(tmp_path):
    overrides = ("value=range(0,40)", "hydra.sweeper.claim=true")
    workers = [start(tmp_path, *overrides) for _ in range(4)]
    for w in workers:
        _, err = w.communicate(timeout=300)
        assert w.returncode == 0, err[-3000:]
    starts = collections.Counter(lines(tmp_path / "side" / "starts.txt"))
    assert len(starts) == 40 and set(starts.values()) == {1}  # each run started once, in all workers together
    assert check_exactly_once(tmp_path, 40) == 0
    owners = {r.owner for r in SweepManifest(tmp_path / "sweep").records().values()}
    assert len(owners) >= 2  # the work was split


def test_claim_of_a_killed_worker_is_taken_over_by_the_next_worker(tmp_path):
    overrides = ("value=range(0,12)", "hydra.sweeper.claim=true", "seconds=2")
    victim = start(tmp_path, *overrides)
    deadline = time.monotonic() + 120
    while len(lines(tmp_path / "side" / "starts.txt")) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    kill(victim, tree=True)  # mid-run: its claims stay behind, its process is gone
    held = [r for r in SweepManifest(tmp_path / "sweep").records().values()
            if r.status in (model.CLAIMED, model.RUNNING)]
    assert held
    rerun = subprocess.run(driver_cmd(tmp_path, *overrides), cwd=tmp_path, capture_output=True, text=True,
                           timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    records = SweepManifest(tmp_path / "sweep").records()
    assert all(r.status == model.COMPLETED for r in records.values()) and len(records) == 12


def test_grid_edit_runs_only_the_new_runs(tmp_path):
    first = subprocess.run(driver_cmd(tmp_path, "value=range(0,4)", "hydra.sweeper.name=edit"), cwd=tmp_path,
                           capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr[-3000:]
    before = lines(tmp_path / "side" / "starts.txt")
    assert len(before) == 4
    second = subprocess.run(driver_cmd(tmp_path, "value=range(0,6)", "hydra.sweeper.name=edit"), cwd=tmp_path,
                            capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr[-3000:]
    new = lines(tmp_path / "side" / "starts.txt")[4:]
    assert sorted(new) == ["00008_default_value-4", "00009_default_value-5"]  # above every earlier index
    assert "skipping 4 run(s); 4 completed" in second.stdout + second.stderr
