"""No lie survives a dead driver: a claimed/running run of this host whose recorded process is
gone (killed, or a zombie nobody reaped) is `lost` in status, watch and resume decisions, never
`running`; claim workers take over the runs of a worker that died after they passed them; a
second driver without claims is refused while the first lives."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from apprun import APPS, wait_for

from mfcl_sweeps import model
from mfcl_sweeps.commands.status import status_report
from mfcl_sweeps.commands.watch import build_view
from mfcl_sweeps.errors import MfclError
from mfcl_sweeps.expand import iter_runs
from mfcl_sweeps.liveness import HOST, pid_start_time
from mfcl_sweeps.spec import load_spec
from mfcl_sweeps.state import drivers
from mfcl_sweeps.state.manifest import SweepManifest


def synthetic_sweep(sweep_dir: Path, n: int = 5) -> tuple[SweepManifest, list]:
    spec = load_spec(None, cli_overrides=[f"a={','.join(map(str, range(n)))}"])
    manifest = SweepManifest(sweep_dir)
    manifest.record_plan(spec.to_dict(), spec.spec_hash(), n)
    return manifest, list(manifest.assign(iter_runs(spec)))


@pytest.fixture
def processes():
    """sleep processes: one alive, one dead and reaped, one dead and left a zombie."""
    alive = subprocess.Popen(["sleep", "300"])
    dead = subprocess.Popen(["sleep", "300"])
    dead.kill()
    dead.wait()
    zombie = subprocess.Popen(["sleep", "300"])
    zombie_start = pid_start_time(zombie.pid)
    zombie.send_signal(signal.SIGKILL)
    wait_for(lambda: (Path(f"/proc/{zombie.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"), 10,
             "the zombie")
    yield {"alive": (alive.pid, pid_start_time(alive.pid)), "dead": (dead.pid, "1"),
           "zombie": (zombie.pid, zombie_start)}
    alive.kill()
    alive.wait()
    zombie.wait()


def journal_states(manifest: SweepManifest, runs: list, procs: dict) -> None:
    """run 0 completed; 1 running, alive; 2 running, dead; 3 claimed by a zombie; 4 running on
    another host under a dead pid (cannot be checked here: stays running)."""
    manifest.transition(runs[0], model.RUNNING, host=HOST, pid=procs["alive"][0])
    manifest.transition(runs[0], model.COMPLETED)
    pid, start = procs["alive"]
    manifest.transition(runs[1], model.RUNNING, host=HOST, pid=pid, pid_start=start, backend="local")
    pid, start = procs["dead"]
    manifest.transition(runs[2], model.RUNNING, host=HOST, pid=pid, pid_start=start, backend="local")
    pid, start = procs["zombie"]
    manifest.transition(runs[3], model.CLAIMED, owner="w", host=HOST, pid=pid, pid_start=start)
    manifest.transition(runs[4], model.RUNNING, host="another-host", pid=procs["dead"][0], backend="local")


def test_status_shows_dead_and_zombie_runs_lost_with_no_eta_for_them(tmp_path, processes):
    manifest, runs = synthetic_sweep(tmp_path)
    journal_states(manifest, runs, processes)
    report = status_report(SweepManifest(tmp_path))
    assert report["counts"] == {"total": 5, "running": 2, "completed": 1, "lost": 2}
    assert sorted(r["run_id"] for r in report["running"]) == [runs[1].run_id, runs[4].run_id]
    assert [r["run_id"] for r in report["lost"]] == [runs[2].run_id, runs[3].run_id]
    assert {s: n for s, n in report["groups"]["default"].items() if n} == {"completed": 1, "running": 2, "lost": 2}


def test_status_eta_counts_only_runs_that_can_progress(tmp_path, processes):
    manifest, runs = synthetic_sweep(tmp_path, 3)
    manifest.transition(runs[0], model.RUNNING, host=HOST, pid=processes["alive"][0])
    manifest.transition(runs[0], model.COMPLETED)
    pid, start = processes["dead"]
    manifest.transition(runs[1], model.RUNNING, host=HOST, pid=pid, pid_start=start)
    report = status_report(SweepManifest(tmp_path))
    assert report["eta_s"] is None  # the only unfinished runs are lost and pending, none running
    assert SweepManifest(tmp_path).snapshot()["counts"]["running"] == 1  # the journal itself is not rewritten


def test_a_pid_reused_by_another_process_is_lost(tmp_path, processes):
    manifest, runs = synthetic_sweep(tmp_path, 1)
    manifest.transition(runs[0], model.RUNNING, host=HOST, pid=processes["alive"][0], pid_start="12345")
    assert status_report(SweepManifest(tmp_path))["counts"] == {"total": 1, "lost": 1}


def test_watch_shows_lost_runs_and_no_eta_from_them(tmp_path, processes):
    manifest, runs = synthetic_sweep(tmp_path)
    journal_states(manifest, runs, processes)
    view = build_view(SweepManifest(tmp_path))
    assert view.counts[model.LOST] == 2 and view.counts[model.RUNNING] == 2
    assert sorted(r[0] for r in view.running) == [runs[1].run_id, runs[4].run_id]
    assert view.eta_s is not None and not view.ended


def test_resume_decision_names_a_lost_run(tmp_path, processes):
    manifest, runs = synthetic_sweep(tmp_path)
    journal_states(manifest, runs, processes)
    fresh = SweepManifest(tmp_path)
    fresh.record_plan(*_plan_args(manifest))
    assert fresh.should_run(runs[2], "skip_completed") == (True, "lost (its process is gone)")
    assert fresh.should_run(runs[3], "skip_completed") == (True, "lost (its process is gone)")
    assert fresh.should_run(runs[1], "skip_completed") == (True, "interrupted")
    assert fresh.should_run(runs[0], "skip_completed") == (False, "completed")


def _plan_args(manifest: SweepManifest) -> tuple:
    plan = manifest.plans()[-1]
    return plan.op["spec"], plan.spec_hash, plan.count


# -- a second driver ---------------------------------------------------------------------------
def register(sweep: Path, pid: int, start: str, claim: bool) -> None:
    path = Path(sweep, ".mfcl", "drivers")
    path.mkdir(parents=True, exist_ok=True)
    (path / f"{HOST}-{pid}.json").write_text(json.dumps(
        {"host": HOST, "pid": pid, "pid_start": start, "claim": claim, "t": 1.0}))


def test_a_second_driver_is_refused_while_the_first_lives(tmp_path, processes):
    register(tmp_path, *processes["alive"], claim=False)
    for claim in (False, True):
        with pytest.raises(MfclError, match="another driver is running this sweep without claims .* "
                                            "start every driver with hydra.sweeper.claim=true"):
            drivers.enter(str(tmp_path), claim=claim)


def test_claim_workers_share_a_sweep_and_a_plain_driver_is_told_how_to_join(tmp_path, processes):
    register(tmp_path, *processes["alive"], claim=True)
    with pytest.raises(MfclError, match=r"claim workers are running this sweep .*to join them add "
                                        r"hydra.sweeper.claim=true"):
        drivers.enter(str(tmp_path), claim=False)
    leave = drivers.enter(str(tmp_path), claim=True)
    assert len(list((tmp_path / ".mfcl" / "drivers").glob("*.json"))) == 2
    leave()
    assert len(list((tmp_path / ".mfcl" / "drivers").glob("*.json"))) == 1


def test_drivers_of_different_nodes_share_a_sweep_but_not_one_node(tmp_path, processes):
    path = tmp_path / ".mfcl" / "drivers"
    path.mkdir(parents=True)
    pid, start = processes["alive"]
    (path / f"{HOST}-{pid}.json").write_text(json.dumps(
        {"host": HOST, "pid": pid, "pid_start": start, "claim": False, "part": "node_rank=0", "t": 1.0}))
    with pytest.raises(MfclError, match="another driver runs node_rank=0 of this sweep's runs .* own "
                                        "hydra.launcher.node_rank"):
        drivers.enter(str(tmp_path), claim=False, part="node_rank=0")
    with pytest.raises(MfclError, match="without claims"):  # a whole-run driver beside a node's driver
        drivers.enter(str(tmp_path), claim=False)
    drivers.enter(str(tmp_path), claim=False, part="node_rank=1")()


def test_a_dead_or_zombie_driver_does_not_block(tmp_path, processes):
    register(tmp_path, *processes["dead"], claim=False)
    register(tmp_path, *processes["zombie"], claim=False)
    register(tmp_path / "x", processes["alive"][0], processes["alive"][1], claim=False)  # another sweep
    drivers.enter(str(tmp_path), claim=False)()
    assert list((tmp_path / ".mfcl" / "drivers").glob("*.json")) == []  # dead ones dropped, ours removed


# -- real drivers ----------------------------------------------------------------------------
MFCL = ["hydra/sweeper=mfcl", "hydra/launcher=mfcl_local", "hydra.launcher.progress=log",
        "hydra.launcher.max_concurrent=1", "hydra.sweeper.name=shared", "mode=children", "seconds=120"]


def start_driver(tmp_path: Path, *overrides: str) -> subprocess.Popen:
    cmd = [sys.executable, str(APPS / "behave" / "app.py"), "--multirun", f"side_dir={tmp_path / 'side'}",
           *MFCL, *overrides]
    return subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def started(tmp_path: Path) -> list[str]:
    path = tmp_path / "side" / "starts.txt"
    return path.read_text().split() if path.exists() else []


def last_states(sweep: Path) -> dict[str, str]:
    states = {}
    for line in (sweep / ".mfcl" / "journal.jsonl").read_text().splitlines():
        op = json.loads(line)
        if op.get("op") == "t":
            states[op["h"]] = op["s"]
    return states


@pytest.mark.parametrize("reap", [pytest.param(True, marks=pytest.mark.slow), False], ids=["reaped", "zombie"])
def test_a_claim_worker_takes_over_the_run_of_a_worker_killed_after_it_passed_it(tmp_path, reap):
    first = start_driver(tmp_path, "value=1,2,3", "hydra.sweeper.claim=true")
    wait_for(lambda: len(started(tmp_path)) == 1, 60, "the first worker's run")
    second = start_driver(tmp_path, "value=1,2,3", "hydra.sweeper.claim=true")
    try:
        wait_for(lambda: len(started(tmp_path)) == 2, 60, "the second worker's run")  # it passed the first's
        victim = started(tmp_path)[0]
        first.kill()
        if reap:
            first.communicate(timeout=30)
        else:  # left a zombie: its pid still exists
            wait_for(lambda: Path(f"/proc/{first.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z", 10)
        (tmp_path / "side" / "release").write_text("")
        out, err = second.communicate(timeout=120)
    finally:
        for proc in (first, second):
            proc.kill()
            proc.communicate()
    assert second.returncode == 0, out[-3000:] + err[-3000:]
    assert first.returncode == -signal.SIGKILL
    assert "took over 1 run(s) of workers that died: " + victim in out, out[-3000:]
    sweep = tmp_path / "multirun" / "shared"
    assert sorted(last_states(sweep).values()) == ["completed"] * 3
    completions = (tmp_path / "side" / "completions.txt").read_text().split()
    assert sorted(completions) == sorted(set(started(tmp_path)))  # each run completed exactly once
    assert started(tmp_path).count(victim) == 2  # the killed worker's run ran again, under the survivor


@pytest.mark.slow
def test_a_second_plain_driver_is_refused_with_one_line(tmp_path):
    first = start_driver(tmp_path, "value=1,2")
    try:
        wait_for(lambda: len(started(tmp_path)) == 1, 60, "the first driver's run")
        second = start_driver(tmp_path, "value=1,2")
        out, err = second.communicate(timeout=60)
        assert second.returncode == 1
        lines = [ln for ln in err.splitlines() if "another driver is running this sweep" in ln]
        assert len(lines) == 1 and "hydra.sweeper.claim=true" in lines[0], err[-3000:]
        assert "Traceback" not in err
        assert len(started(tmp_path)) == 1  # the refused driver ran nothing
    finally:
        (tmp_path / "side" / "release").write_text("")
        first.communicate(timeout=60)
    assert first.returncode == 0
