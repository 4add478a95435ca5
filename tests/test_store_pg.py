"""The PostgreSQL store against a real server (scripts/postgres-test.sh): exactly-once claims
between processes with no shared directory, takeover of a dead worker's claims, one sweep run
by two "clusters" at once, and one line for each way the store cannot be opened."""
from __future__ import annotations

import json
import multiprocessing
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from apprun import APPS, status_json
from services import PG_URL, require_service

from mfcl_sweeps import model
from mfcl_sweeps.model import PlannedRun
from mfcl_sweeps.state.manifest import SweepManifest
from mfcl_sweeps.state.store import open_store, parse_url

pytestmark = pytest.mark.postgres


@pytest.fixture
def pg(monkeypatch) -> str:
    require_service("postgres")
    monkeypatch.setenv("MFCL_STORE", PG_URL)  # where a sweep's processes find the password, as the sweeper sets it
    return PG_URL


def fresh_name() -> str:
    return f"test-{uuid.uuid4().hex[:12]}"


def run_of(i: int) -> PlannedRun:
    return PlannedRun(overrides=(f"x={i}",), config_hash=f"hash{i:05d}", index=i, run_id=f"{i:05d}_default_x-{i}")


def open_manifest(sweep_dir, url: str, name: str, **kw) -> SweepManifest:
    """What the sweeper does: open (create) the database sweep for this sweep dir."""
    store = open_store(sweep_dir, url=parse_url(url), name=name, create=True, cluster=kw.pop("cluster", None),
                       claim_timeout=kw.get("claim_timeout", 600.0))
    return SweepManifest(sweep_dir, store=store, **kw)


def _claim_all(sweep_dir: str, url: str, name: str, worker: int, n_runs: int, out: str,
               done: multiprocessing.Event) -> None:
    manifest = open_manifest(sweep_dir, url, name)
    won = [i for i in range(n_runs) if manifest.claim(run_of(i), f"worker-{worker}")]
    Path(out).write_text(json.dumps(won))
    done.wait(60)  # stay alive: a dead owner's claims may rightly be taken over


def _run_all(target, args_of, n: int) -> None:
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


@pytest.mark.slow
def test_8_processes_claim_200_runs_each_exactly_once_without_a_shared_dir(pg, tmp_path):
    name, n_workers, n_runs = fresh_name(), 8, 200
    outs = [tmp_path / f"won-{w}.json" for w in range(n_workers)]
    # each worker has its own sweep dir: the database is all they share
    _run_all(_claim_all, lambda w: (str(tmp_path / f"dir{w}"), pg, name, w, n_runs, str(outs[w])), n_workers)
    won = [json.loads(o.read_text()) for o in outs]
    assert sorted(i for w in won for i in w) == list(range(n_runs))
    records = SweepManifest(tmp_path / "dir0").records()  # any sweep dir reads the whole sweep
    assert {h: r.owner for h, r in records.items()} == {
        run_of(i).config_hash: f"worker-{w}" for w, ids in enumerate(won) for i in ids}
    assert all(r.status == model.CLAIMED for r in records.values())


CLAIM_AS_OTHER_NODE = """
import sys, time
import mfcl_sweeps.liveness as lv, mfcl_sweeps.state.claims as c, mfcl_sweeps.state.manifest as m
lv.HOST = c.HOST = m.HOST = "node-b"  # a worker of another cluster: its pid cannot be checked from here
from mfcl_sweeps.state.store import open_store, parse_url
from mfcl_sweeps.model import PlannedRun
store = open_store(sys.argv[1], url=parse_url(sys.argv[2]), name=sys.argv[3], create=True)
man = m.SweepManifest(sys.argv[1], store=store)
stop = man.start_heartbeat("node-b-worker", interval=0.1)
for i in range(3):
    assert man.claim(PlannedRun(overrides=(f"x={i}",), config_hash=f"hash{i:05d}", index=i), "node-b-worker")
print("claimed", flush=True)
time.sleep(600)
"""


def _reclaim(sweep_dir: str, url: str, name: str, worker: int, out: str, done: multiprocessing.Event) -> None:
    manifest = open_manifest(sweep_dir, url, name, claim_timeout=1.0)
    Path(out).write_text(json.dumps([i for i in range(3) if manifest.claim(run_of(i), f"reclaimer-{worker}")]))
    done.wait(60)


def test_a_killed_workers_claims_are_taken_over_by_exactly_one_winner(pg, tmp_path):
    name = fresh_name()
    holder = subprocess.Popen([sys.executable, "-c", CLAIM_AS_OTHER_NODE, str(tmp_path / "b"), pg, name],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "claimed"
        time.sleep(1.5)  # older than claim_timeout, but it heart-beats: nobody takes its runs
        assert not open_manifest(tmp_path / "a", pg, name, claim_timeout=1.0).claim(run_of(0), "early")
    finally:
        holder.kill()
        holder.wait()
    time.sleep(1.5)  # its last heartbeat ages past claim_timeout on the database's clock
    outs = [tmp_path / f"r-{w}.json" for w in range(6)]
    _run_all(_reclaim, lambda w: (str(tmp_path / f"r{w}"), pg, name, w, str(outs[w])), 6)
    won = [json.loads(o.read_text()) for o in outs]
    assert sorted(i for w in won for i in w) == [0, 1, 2]  # each run: one winner, the losers never run it
    records = SweepManifest(tmp_path / "r0").records()
    owners = {records[run_of(i).config_hash].owner for i in range(3)}
    assert owners <= {f"reclaimer-{w}" for w in range(6)}


def test_plan_indices_and_replay_are_shared(pg, tmp_path):
    name = fresh_name()
    first = open_manifest(tmp_path / "a", pg, name, cluster="a")
    first.record_plan({"grid": {"x": [0, 1]}}, "spec1", 2, cluster="a")
    runs = list(first.assign([PlannedRun(overrides=(f"x={i}",), config_hash=f"h{i}", position=i) for i in range(2)]))
    first.transition(runs[1], model.COMPLETED, exit_code=0)
    second = open_manifest(tmp_path / "b", pg, name, cluster="b")
    assert [p.spec_hash for p in second.plans()] == ["spec1"]
    assert second.planned_hashes() == {"h0", "h1"}
    assert second.records()["h1"].status == model.COMPLETED and second.records()["h1"].run_id == runs[1].run_id
    snap = second.snapshot()
    assert snap["store"].startswith("postgresql://mfcl_test:***@") and "mfcl-test-pw" not in json.dumps(snap)
    pointer = json.loads((tmp_path / "b" / ".mfcl" / "store.json").read_text())
    assert pointer == {"store": "postgresql://mfcl_test@127.0.0.1:5433/mfcl_test", "sweep": name, "cluster": "b"}


def counter_sweep(tmp_path: Path, sweep_dir: Path, cluster: str, *extra: str, store: str, name: str,
                  n: int = 12) -> subprocess.Popen:
    """One "cluster": the counter app over x=0..n-1 in its own sweep dir, claim mode, the store given."""
    cmd = [sys.executable, str(APPS / "counter" / "app.py"), "--multirun", "hydra/sweeper=mfcl",
           "hydra/launcher=mfcl_local", f"hydra.sweep.dir={sweep_dir}", f"hydra.sweeper.name={name}",
           "hydra.sweeper.claim=true", f"hydra.sweeper.cluster={cluster}", f"hydra.sweeper.store={store}",
           "hydra.sweeper.allow_behind=true", f"counter={tmp_path / 'counter.txt'}",
           f"x={','.join(str(i) for i in range(n))}", *extra]
    return subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def executions(tmp_path: Path) -> list[int]:
    path = tmp_path / "counter.txt"
    return sorted(int(line.split()[0]) for line in path.read_text().splitlines()) if path.exists() else []


@pytest.mark.slow
def test_two_clusters_run_one_sweep_each_run_exactly_once(pg, tmp_path):
    name = fresh_name()
    procs = [counter_sweep(tmp_path, tmp_path / f"cluster-{c}", c, store=pg, name=name) for c in ("a", "b")]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1][-3000:] for o in outs]
    assert executions(tmp_path) == list(range(12))  # counted in the task: nothing twice, nothing lost
    for c in ("a", "b"):
        sweep = tmp_path / f"cluster-{c}"
        assert json.loads((sweep / "sweep_manifest.json").read_text())["store"].endswith(f"(sweep {name})")
        snap = SweepManifest(sweep).snapshot()  # now: the file above is as of that cluster's end
        assert snap["counts"] == {"total": 12, "completed": 12}
        assert {r["cluster"] for r in snap["runs"]} <= {"a", "b"}
        assert all(r["remote"] == (r["cluster"] != c) for r in snap["runs"])
        assert not any("mfcl-test-pw" in p.read_text(errors="replace") for p in sweep.rglob("*") if p.is_file())
        assert status_json(sweep)["counts"]["completed"] == 12
    report = subprocess.run([sys.executable, "-m", "mfcl_sweeps.cli", "aggregate", str(tmp_path / "cluster-b")],
                            capture_output=True, text=True, timeout=300)
    assert report.returncode == 0, report.stderr
    assert "00011_" in (tmp_path / "cluster-b" / "reports" / "summary.md").read_text()  # runs of both clusters


@pytest.mark.parametrize("store, expected", [
    ("postgresql://mfcl_test@127.0.0.1:notaport/mfcl_test", "not a valid PostgreSQL URL"),
    pytest.param("mysql://mfcl_test@127.0.0.1/mfcl_test", "unknown store", marks=pytest.mark.slow),
    ("postgresql://mfcl_test:wrong@127.0.0.1:5433/mfcl_test", "password authentication failed"),
    pytest.param("postgresql://mfcl_test:mfcl-test-pw@127.0.0.1:5433/no_such_db",
                 'database "no_such_db" does not exist', marks=pytest.mark.slow),
    pytest.param("postgresql://mfcl_test:mfcl-test-pw@127.0.0.1:1/mfcl_test", "Connection refused",
                 marks=pytest.mark.slow),
])
def test_a_store_that_cannot_be_opened_is_one_line_and_nothing_runs(pg, tmp_path, store, expected):
    proc = counter_sweep(tmp_path, tmp_path / "sweep", "a", store=store, name=fresh_name(), n=2)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode != 0
    lines = [line for line in err.splitlines() if line.strip() and "HYDRA_FULL_ERROR" not in line]
    assert len(lines) == 1 and expected in lines[0], err
    assert "hydra.sweeper.store=" in lines[0] or "sweep store postgresql://" in lines[0], err
    assert "Traceback" not in err and "mfcl-test-pw" not in err and ":wrong@" not in err
    assert executions(tmp_path) == []
    assert not (tmp_path / "sweep" / ".mfcl" / "journal.jsonl").exists()


def pg_ctl(action: str, check: bool = True) -> None:
    subprocess.run(["pg_ctlcluster", "15", "mfcl", action], check=check, capture_output=True, timeout=60)


@pytest.mark.slow
def test_the_database_going_away_mid_sweep_loses_nothing_and_runs_nothing_twice(pg, tmp_path):
    name, n = fresh_name(), 12
    proc = counter_sweep(tmp_path, tmp_path / "sweep", "a", "seconds=1.0", "hydra.launcher.max_concurrent=3",
                         store=pg, name=name, n=n)
    try:
        deadline = time.monotonic() + 60
        while len(executions(tmp_path)) < 3 and time.monotonic() < deadline:
            time.sleep(0.1)
        pg_ctl("stop")  # runs started now finish while the database is away
        time.sleep(3)
        pg_ctl("start")
        out, err = proc.communicate(timeout=300)
    finally:
        pg_ctl("start", check=False)  # leave the server up for the next test (exit 2: it already runs)
        proc.kill()
    assert proc.returncode == 0, err[-3000:]
    assert "unreachable" in out + err  # the driver saw the outage and waited it out
    assert executions(tmp_path) == list(range(n))
    records = SweepManifest(tmp_path / "sweep").records()
    assert len(records) == n and all(r.status == model.COMPLETED and r.attempts == 1 for r in records.values())


def test_restart_with_pg_ctlcluster_is_survived_by_an_open_store(pg, tmp_path):
    manifest = open_manifest(tmp_path / "a", pg, fresh_name())
    assert manifest.claim(run_of(0), "w")
    pg_ctl("restart")  # every connection is cut
    manifest.transition(run_of(0), model.COMPLETED, exit_code=0)
    assert SweepManifest(tmp_path / "a").records()["hash00000"].status == model.COMPLETED


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mfcl_sweeps.cli", "store", *args], capture_output=True, text=True,
                          timeout=120)


def file_sweep(sweep_dir: Path) -> dict:
    """A file-journal sweep with two plans, every kind of transition; its records as dicts."""
    manifest = SweepManifest(sweep_dir)
    manifest.record_plan({"grid": {"x": [0, 1, 2]}}, "spec1", 3, cluster="a")
    runs = list(manifest.assign([PlannedRun(overrides=(f"x={i}",), config_hash=f"h{i}", position=i) for i in range(3)]))
    manifest.transition(runs[0], model.RUNNING, host="n1")
    manifest.transition(runs[0], model.COMPLETED, exit_code=0)
    manifest.transition(runs[1], model.FAILED, exit_code=1, error="boom")
    manifest.record_plan({"grid": {"x": [0, 1, 2, 3]}}, "spec2", 4, cluster="a")
    list(manifest.assign([PlannedRun(overrides=(f"x={i}",), config_hash=f"h{i}", position=i) for i in range(4)]))
    return records_of(sweep_dir)


def records_of(sweep_dir: Path) -> dict:
    manifest = SweepManifest(sweep_dir)
    return {"records": {h: r.to_dict() for h, r in manifest.records().items()}, "counts": manifest.counts(),
            "plans": [(p.spec_hash, p.base, p.count) for p in manifest.plans()]}


@pytest.mark.slow
def test_export_to_the_database_and_import_back_keep_the_sweep(pg, tmp_path):
    name, sweep = fresh_name(), tmp_path / "sweep"
    before = file_sweep(sweep)
    assert before["counts"] == {"total": 4, "completed": 1, "failed": 1, "pending": 2}
    out = cli("export", str(sweep), pg, "--name", name)
    assert out.returncode == 0, out.stderr
    assert "postgresql://mfcl_test:***@" in out.stdout and "mfcl-test-pw" not in out.stdout + out.stderr
    assert json.loads((sweep / ".mfcl" / "store.json").read_text())["sweep"] == name
    assert not (sweep / ".mfcl" / "journal.jsonl").exists()
    assert records_of(sweep) == before  # now read from the database
    out = cli("export", str(sweep), str(tmp_path / "backup"))  # the database's copy into another dir's journal
    assert out.returncode == 0, out.stderr
    assert records_of(tmp_path / "backup") == before
    again = cli("export", str(tmp_path / "backup"), pg, "--name", name)
    assert again.returncode == 2 and "already holds a sweep" in again.stderr and "Traceback" not in again.stderr
    out = cli("import", str(sweep))
    assert out.returncode == 0, out.stderr
    assert not (sweep / ".mfcl" / "store.json").exists() and (sweep / ".mfcl" / "journal.jsonl").exists()
    assert records_of(sweep) == before


def test_a_replay_checkpoint_of_a_database_sweep_is_used_only_for_that_sweep(pg, tmp_path):
    sweep = tmp_path / "sweep"
    manifest = open_manifest(sweep, pg, fresh_name())
    manifest.record_plan({}, "spec", 3)
    manifest.store.append([{"op": "t", "h": f"h{i}", "s": model.COMPLETED, "t": 1.0} for i in range(3)])
    manifest.write_snapshot()  # saves the replay beside the sweep
    assert (sweep / ".mfcl" / "replay.ckpt").exists()
    manifest.transition("h0", model.FAILED, exit_code=1)
    reader = SweepManifest(sweep)
    assert reader.refresh() == 1  # only the op after the checkpoint is read
    assert reader.counts() == {"total": 3, "completed": 2, "failed": 1}
    other = tmp_path / "other"  # another database sweep given this checkpoint must not use it
    open_manifest(other, pg, fresh_name()).record_plan({}, "spec", 1)
    (other / ".mfcl" / "replay.ckpt").write_bytes((sweep / ".mfcl" / "replay.ckpt").read_bytes())
    assert SweepManifest(other).counts() == {"total": 1, "pending": 1}


def test_a_claim_that_cannot_be_recorded_is_not_won(pg, tmp_path):
    from mfcl_sweeps.errors import StoreError
    from mfcl_sweeps.state.store import StoreURL

    manifest = open_manifest(tmp_path / "a", pg, fresh_name())
    manifest.record_plan({}, "spec", 1)
    store = manifest.store
    store.retry_s = 0.5
    store.close()
    good, store.url = store.url, StoreURL(store.url.user, store.url.password, "127.0.0.1", 1, store.url.dbname)
    with pytest.raises(StoreError, match=r"unreachable for 0 s .*Connection refused"):
        manifest.claim(run_of(0), "w")  # raises: the sweeper stops before launching the run
    store.url = good
    assert "hash00000" not in manifest.records()
    assert manifest.claim(run_of(0), "w")  # nothing was half-recorded: the claim is free
