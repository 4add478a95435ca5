"""Fault injection (slow): the driver of a real mfcl_local sweep is killed at random points with
SIGINT, SIGTERM, SIGHUP or SIGKILL, then the same command is run again, until the sweep is done;
so is one of its jobs (the task process), and one of two claim workers sharing a sweep.
Task bodies count their executions in a side directory. Checked: no run lost, no completion
journaled twice, no process of a job left after its driver, no run left `running` by a driver
that could clean up (SIGKILL leaves its runs `running`: see docs/local-launcher.md).
MFCL_FAULT_TRIALS sets the trials per signal (default 20; CI runs 2). Trial k of a signal waits
for phase (first + k) % 3 of the sweep (see PHASES), then a random moment more: 3 trials cover
every phase, and the signals' `first` phases are staggered so that CI's 2 trials per signal
still cover every phase in each test."""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from apprun import APPS, alive

RUNS = 4  # two waves of max_concurrent=2: a kill finds runs done, running and not started
TRIALS = int(os.environ.get("MFCL_FAULT_TRIALS", "20"))


def command(tmp_path: Path) -> list[str]:
    return [sys.executable, str(APPS / "behave" / "app.py"), "--multirun", f"hydra.sweep.dir={tmp_path / 'sweep'}",
            f"side_dir={tmp_path / 'side'}", "hydra/sweeper=mfcl", "hydra/launcher=mfcl_local",
            "hydra.launcher.progress=log", "hydra.launcher.max_concurrent=2", "hydra.sweeper.resume=skip_completed",
            "mode=sleep", "seconds=0.4", f"value=range(0,{RUNS})"]


def journal_ops(sweep: Path) -> list[dict]:
    path = sweep / ".mfcl" / "journal.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def completions(trial_dir: Path) -> int:
    path = trial_dir / "side" / "completions.txt"
    return len(path.read_text().split()) if path.exists() else 0


# Where a kill lands: the sweep planned (journal written, jobs starting), a first run completed
# (one wave done, the next starting), every run but one completed (the last finishing, the
# driver about to journal and report). A random moment (up to JITTER_S) is added to each.
PHASES = [lambda d: (d / "sweep" / ".mfcl" / "journal.jsonl").exists(),
          lambda d: completions(d) >= 1,
          lambda d: completions(d) >= RUNS - 1]
JITTER_S = 0.5


def wait_for_phase(phase: int, trial_dir: Path, procs: list[subprocess.Popen], rng: random.Random,
                   jitter_s: float = JITTER_S) -> None:
    """Until phase `phase` (mod 3) is reached (or every process ended), then a random moment more."""
    reached = PHASES[phase % len(PHASES)]
    deadline = time.monotonic() + 60
    while not reached(trial_dir) and any(p.poll() is None for p in procs) and time.monotonic() < deadline:
        time.sleep(0.02)  # Hydra's own start-up (before the sweeper) is Hydra's: not injected into
    time.sleep(rng.uniform(0.0, jitter_s))


@pytest.mark.slow
@pytest.mark.parametrize("sig, first", [(signal.SIGINT, 2), (signal.SIGTERM, 1), (signal.SIGHUP, 0), (signal.SIGKILL, 2)],
                         ids=["SIGINT", "SIGTERM", "SIGHUP", "SIGKILL"])
def test_killing_the_driver_at_random_points(tmp_path: Path, sig: int, first: int) -> None:
    rng = random.Random(sig)
    for trial in range(TRIALS):
        trial_dir = tmp_path / str(trial)
        trial_dir.mkdir()
        driver = subprocess.Popen(command(trial_dir), cwd=trial_dir, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.PIPE, text=True)
        wait_for_phase(first + trial, trial_dir, [driver], rng)
        driver.send_signal(sig)
        _, err = driver.communicate(timeout=60)
        sweep = trial_dir / "sweep"
        pids = [json.loads(p.read_text())["pid"] for p in (trial_dir / "side").glob("*.json")]
        deadline = time.monotonic() + 10
        while [p for p in pids if alive(p)] and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not [p for p in pids if alive(p)], f"trial {trial}: a job outlived its driver"
        assert "Traceback" not in err, err
        last = {op["h"]: op["s"] for op in journal_ops(sweep) if op.get("op") == "t"}
        if sig != signal.SIGKILL:
            assert "running" not in last.values(), f"trial {trial}: {last}"
        for _ in range(3):  # run it again until it completes
            done = subprocess.run(command(trial_dir), cwd=trial_dir, capture_output=True, text=True, timeout=180)
            if done.returncode == 0:
                break
        assert done.returncode == 0, done.stderr
        ops = [op for op in journal_ops(sweep) if op.get("op") == "t"]
        completed = Counter(op["h"] for op in ops if op["s"] == "completed")
        assert len(completed) == RUNS and set(completed.values()) == {1}, f"trial {trial}: {completed}"
        bodies = Counter((trial_dir / "side" / "completions.txt").read_text().split())
        assert len(bodies) == RUNS  # every task body finished at least once
        starts = Counter(op["h"] for op in ops if op["s"] == "running")
        assert sum(bodies.values()) <= sum(starts.values())  # a body finishes only in a start


def run_until_done(trial_dir: Path, cmd: list[str]) -> None:
    for _ in range(3):  # run it again until it completes
        done = subprocess.run(cmd, cwd=trial_dir, capture_output=True, text=True, timeout=180)
        if done.returncode == 0:
            return
    assert done.returncode == 0, done.stderr[-3000:]


def check_trial(trial: int, trial_dir: Path, sweep: Path) -> None:
    """0 lost, 0 completed twice in the journal, every task body finished, no job process left,
    nothing `running` once every driver is gone."""
    pids = [json.loads(p.read_text())["pid"] for p in (trial_dir / "side").glob("*.json")]
    deadline = time.monotonic() + 10
    while [p for p in pids if alive(p)] and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [p for p in pids if alive(p)], f"trial {trial}: a job outlived its driver"
    ops = [op for op in journal_ops(sweep) if op.get("op") == "t"]
    completed = Counter(op["h"] for op in ops if op["s"] == "completed")
    assert len(completed) == RUNS and set(completed.values()) == {1}, f"trial {trial}: {completed}"
    last = {op["h"]: op["s"] for op in ops}
    assert set(last.values()) == {"completed"}, f"trial {trial}: {last}"
    bodies = Counter((trial_dir / "side" / "completions.txt").read_text().split())
    assert len(bodies) == RUNS  # every task body finished at least once
    starts = Counter(op["h"] for op in ops if op["s"] == "running")
    assert sum(bodies.values()) <= sum(starts.values())  # a body finishes only in a start


def running_tasks(trial_dir: Path) -> list[int]:
    pids = []
    for p in (trial_dir / "side").glob("*.json"):
        try:
            pids.append(json.loads(p.read_text())["pid"])
        except json.JSONDecodeError:  # a job still writing its record (not atomically): not running yet
            pass
    return [pid for pid in pids if alive(pid)]


@pytest.mark.slow
@pytest.mark.parametrize("sig, first", [(signal.SIGTERM, 0), (signal.SIGKILL, 2)], ids=["SIGTERM", "SIGKILL"])
def test_killing_a_job_at_random_points(tmp_path: Path, sig: int, first: int) -> None:
    """A task process killed mid-run: its run is journaled failed (never completed), the driver
    goes on with the others, and the rerun completes it once."""
    rng = random.Random(100 + sig)
    kills = 0
    for trial in range(TRIALS):
        trial_dir = tmp_path / str(trial)
        trial_dir.mkdir()
        driver = subprocess.Popen(command(trial_dir), cwd=trial_dir, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.PIPE, text=True)
        wait_for_phase(first + trial, trial_dir, [driver], rng, jitter_s=0)  # which wave: first, second, last run
        deadline = time.monotonic() + 60
        while not running_tasks(trial_dir) and driver.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(rng.uniform(0.0, 0.3))  # where in its body (0.4 s of sleep after start-up)
        victims = running_tasks(trial_dir)
        if victims:
            try:
                os.kill(rng.choice(victims), sig)
                kills += 1
            except ProcessLookupError:
                pass  # it finished first: a trial without a kill
        _, err = driver.communicate(timeout=120)
        assert "Traceback" not in err, err[-3000:]
        if driver.returncode != 0:  # the killed run is journaled as not completed, never lost
            assert {"failed", "interrupted"} & {op["s"] for op in journal_ops(trial_dir / "sweep")
                                               if op.get("op") == "t"}, f"trial {trial}"
        run_until_done(trial_dir, command(trial_dir))
        check_trial(trial, trial_dir, trial_dir / "sweep")
    assert kills, "no trial killed a job"


def claim_command(trial_dir: Path) -> list[str]:
    return [*command(trial_dir), "hydra.sweeper.claim=true", "hydra.launcher.max_concurrent=1"]


@pytest.mark.slow
@pytest.mark.parametrize("sig, first", [(signal.SIGTERM, 0), (signal.SIGKILL, 1)], ids=["SIGTERM", "SIGKILL"])
def test_killing_a_claim_worker_at_random_points(tmp_path: Path, sig: int, first: int) -> None:
    """Two claim workers share a sweep; one is killed at a random point. The survivor finishes
    every run (taking over the dead worker's claims), or says with its exit code that it could
    not; a rerun then finishes the rest."""
    rng = random.Random(200 + sig)
    for trial in range(TRIALS):
        trial_dir = tmp_path / str(trial)
        trial_dir.mkdir()
        workers = [subprocess.Popen(claim_command(trial_dir), cwd=trial_dir, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.PIPE, text=True) for _ in range(2)]
        wait_for_phase(first + trial, trial_dir, workers, rng)
        victim, survivor = rng.sample(workers, 2)
        victim.send_signal(sig)
        victim.communicate(timeout=60)
        _, err = survivor.communicate(timeout=180)
        assert "Traceback" not in err, err[-3000:]
        states = {op["h"]: op["s"] for op in journal_ops(trial_dir / "sweep") if op.get("op") == "t"}
        if survivor.returncode == 0:  # exit 0 is the truth: every run is done
            assert len(states) == RUNS and set(states.values()) == {"completed"}, f"trial {trial}: {states}"
        run_until_done(trial_dir, command(trial_dir))
        check_trial(trial, trial_dir, trial_dir / "sweep")
