"""Exactly-once claims between real processes sharing a sweep dir."""
from __future__ import annotations

import json
import multiprocessing
import subprocess
import sys
import time
from pathlib import Path

from mfcl_sweeps import model
from mfcl_sweeps.model import PlannedRun
from mfcl_sweeps.state.manifest import SweepManifest


def run_of(i: int) -> PlannedRun:
    return PlannedRun(overrides=(f"x={i}",), config_hash=f"hash{i:05d}", index=i, run_id=f"{i:05d}_default_x-{i}")


def _claim_all(sweep_dir: str, worker: int, n_runs: int, out: str, done: multiprocessing.Event) -> None:
    manifest = SweepManifest(sweep_dir)
    won = [i for i in range(n_runs) if manifest.claim(run_of(i), f"worker-{worker}")]
    with open(out, "w") as f:
        json.dump(won, f)
    done.wait(60)  # stay alive: a dead owner's claims may rightly be taken over


def _run_all(target, args_of, n: int) -> None:
    """Start n workers; let them exit only once every one has written its result (last arg)."""
    done = multiprocessing.Event()
    procs = [multiprocessing.Process(target=target, args=(*args_of(w), done)) for w in range(n)]
    for p in procs:
        p.start()
    deadline = time.monotonic() + 120
    while not all(Path(args_of(w)[-1]).exists() for w in range(n)) and time.monotonic() < deadline:
        assert all(p.is_alive() or p.exitcode == 0 for p in procs)
        time.sleep(0.05)
    done.set()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0


def test_racing_processes_claim_every_run_exactly_once(tmp_path):
    n_workers, n_runs = 8, 200
    outs = [tmp_path / f"won-{w}.json" for w in range(n_workers)]
    _run_all(_claim_all, lambda w: (str(tmp_path / "sweep"), w, n_runs, str(outs[w])), n_workers)
    won = [json.loads(o.read_text()) for o in outs]
    flat = sorted(i for w in won for i in w)
    assert flat == list(range(n_runs))  # all distinct, none lost
    # the journal agrees: one claimed transition per run, by the worker that won it
    records = SweepManifest(tmp_path / "sweep").records()
    assert {h: r.owner for h, r in records.items()} == {
        run_of(i).config_hash: f"worker-{w}" for w, ids in enumerate(won) for i in ids}
    assert all(r.status == model.CLAIMED for r in records.values())


CLAIM_AS_OTHER_NODE = """
import sys, time
import mfcl_sweeps.liveness as lv, mfcl_sweeps.state.claims as c, mfcl_sweeps.state.manifest as m
lv.HOST = c.HOST = m.HOST = "node-b"  # a worker on another node: its pid cannot be checked from here
from mfcl_sweeps.model import PlannedRun
run = PlannedRun(overrides=("x=0",), config_hash="hash00000", index=0, run_id="0")
man = m.SweepManifest(sys.argv[1])
assert man.claim(run, "node-b-worker")
print("claimed", flush=True)
"""


def _reclaim(sweep_dir: str, worker: int, out: str, done: multiprocessing.Event) -> None:
    won = SweepManifest(sweep_dir, claim_timeout=0.5).claim(run_of(0), f"reclaimer-{worker}")
    with open(out, "w") as f:
        json.dump(won, f)
    done.wait(60)


def test_claim_of_a_silent_owner_is_reclaimed_after_the_timeout_by_exactly_one(tmp_path):
    sweep = tmp_path / "sweep"
    out = subprocess.run([sys.executable, "-c", CLAIM_AS_OTHER_NODE, str(sweep)], capture_output=True, text=True)
    assert out.stdout.strip() == "claimed", out.stderr
    assert not SweepManifest(sweep, claim_timeout=0.5).claim(run_of(0), "early")  # still fresh
    time.sleep(0.7)
    outs = [tmp_path / f"r-{w}.json" for w in range(6)]
    _run_all(_reclaim, lambda w: (str(sweep), w, str(outs[w])), 6)
    results = [json.loads(o.read_text()) for o in outs]
    assert results.count(True) == 1  # the losers of the race never run it
    winner = f"reclaimer-{results.index(True)}"
    assert SweepManifest(sweep).records()["hash00000"].owner == winner


def test_heartbeat_keeps_a_claim_of_another_node(tmp_path):
    sweep = tmp_path / "sweep"
    subprocess.run([sys.executable, "-c", CLAIM_AS_OTHER_NODE, str(sweep)], check=True, capture_output=True)
    manifest = SweepManifest(sweep, claim_timeout=0.5)
    owner_file = manifest.claims._owner_path("node-b-worker")
    for _ in range(4):  # the owner keeps beating: its file is rewritten by the filesystem clock
        time.sleep(0.25)
        owner_file.write_text(owner_file.read_text())
        assert not manifest.claim(run_of(0), "thief")


def test_claim_of_a_killed_local_worker_is_taken_at_once(tmp_path):
    sweep = tmp_path / "sweep"
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from mfcl_sweeps.state.manifest import SweepManifest; from mfcl_sweeps.model import PlannedRun\n"
        "m = SweepManifest(sys.argv[1]); run = PlannedRun(overrides=('x=0',), config_hash='hash00000', index=0)\n"
        "assert m.claim(run, 'victim'); print('claimed', flush=True); time.sleep(60)"), str(sweep)],
        stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "claimed"
    manifest = SweepManifest(sweep)  # default 10 min timeout: the pid check decides, not the clock
    assert not manifest.claim(run_of(0), "new")
    holder.kill()
    holder.wait()
    assert manifest.claim(run_of(0), "new")
    assert not SweepManifest(sweep).claim(run_of(0), "third")


def test_retired_owner_frees_its_claims_and_completed_runs_stay_done(tmp_path):
    first, second = SweepManifest(tmp_path), SweepManifest(tmp_path)
    assert first.claim(run_of(0), "a") and first.claim(run_of(1), "a")
    first.transition(run_of(0), model.COMPLETED, exit_code=0)
    assert not second.claim(run_of(1), "b")
    first.retire("a")
    assert second.claim(run_of(1), "b")
    assert not second.claim(run_of(0), "b")  # completed under its old claim: nothing to run


def test_claims_per_node_rank_are_independent(tmp_path):
    first, second = SweepManifest(tmp_path), SweepManifest(tmp_path)
    assert first.claim(run_of(0), "a", node_rank=0)
    assert second.claim(run_of(0), "b", node_rank=1)
    assert not second.claim(run_of(0), "b", node_rank=0)
    assert sorted(p.name for p in first.claims.claims_dir.iterdir()) == ["hash00000.0", "hash00000.1"]


def test_start_heartbeat_beats_and_retires(tmp_path):
    manifest = SweepManifest(tmp_path, claim_timeout=0.4)
    assert manifest.claim(run_of(0), "a")
    stop = manifest.start_heartbeat("a", interval=0.05)
    path = manifest.claims._owner_path("a")
    before = path.stat().st_mtime_ns
    time.sleep(0.3)
    assert path.stat().st_mtime_ns > before
    stop()
    assert json.loads(path.read_text())["retired"] is True
    assert SweepManifest(tmp_path).claim(run_of(0), "b")
