"""Batched transitions (SweepManifest.transitions): a driver's pending lines for a whole submission
are one append (one write + fsync in the file journal, one transaction in PostgreSQL); a batch
reaches readers whole, never interleaved with another writer's, and a full disk takes none of it."""
from __future__ import annotations

import multiprocessing
import os

import pytest
from services import PG_URL, require_service
from test_disk_faults import fill, small_disk  # noqa: F401 - the fixture, on a real tmpfs

from mfcl_sweeps import model
from mfcl_sweeps.errors import DiskError
from mfcl_sweeps.model import PlannedRun
from mfcl_sweeps.state.manifest import SweepManifest
from mfcl_sweeps.state.store import open_store, parse_url

BATCH, BATCHES, WRITERS = 10, 15, 3


def run_of(writer: int, i: int) -> PlannedRun:
    return PlannedRun(overrides=(f"x={i}",), config_hash=f"w{writer}h{i:04d}", index=i,
                      run_id=f"{writer}{i:04d}_default_x-{i}")


def manifest_of(sweep_dir: str, name: str | None) -> SweepManifest:
    if name is None:
        return SweepManifest(sweep_dir)
    return SweepManifest(sweep_dir, store=open_store(sweep_dir, url=parse_url(PG_URL), name=name, create=True))


def pending_batch(writer: int, start: int) -> list:
    return [(run_of(writer, i), model.PENDING, {"backend_job_id": f"{writer}_{i}", "attempt": 1})
            for i in range(start, start + BATCH)]


def _write_batches(sweep_dir: str, name: str | None, writer: int) -> None:
    manifest = manifest_of(sweep_dir, name)
    for b in range(BATCHES):
        manifest.transitions(pending_batch(writer, b * BATCH))


@pytest.fixture(params=["file", pytest.param("postgresql", marks=pytest.mark.postgres)])
def store_name(request, tmp_path, monkeypatch):
    if request.param == "file":
        return None
    require_service("postgres")
    monkeypatch.setenv("MFCL_STORE", PG_URL)
    return f"test-batch-{os.getpid()}-{tmp_path.name}"[:60]


def test_a_batch_of_pendings_is_one_append_and_replays_as_its_runs(tmp_path, store_name, monkeypatch):
    manifest = manifest_of(str(tmp_path / "s"), store_name)
    appended: list[int] = []
    real = manifest.store.append
    monkeypatch.setattr(manifest.store, "append", lambda ops, **kw: (appended.append(len(ops)), real(ops, **kw))[1])
    manifest.transitions(pending_batch(0, 0))
    assert appended == [BATCH]
    manifest.transitions(pending_batch(0, 0)[:2])  # identities journaled once per run
    records = manifest_of(str(tmp_path / "s"), store_name).records()
    assert sorted(records) == [run_of(0, i).config_hash for i in range(BATCH)]
    assert {(r.status, r.backend_job_id[:2], r.run_id == run_of(0, r.index).run_id) for r in records.values()} \
        == {(model.PENDING, "0_", True)}


def test_concurrent_batches_reach_readers_whole_and_in_order(tmp_path, store_name):
    sweep_dir = str(tmp_path / "s")
    manifest_of(sweep_dir, store_name)  # create the store before the writers race for it
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_write_batches, args=(sweep_dir, store_name, w)) for w in range(WRITERS)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    reader = manifest_of(sweep_dir, store_name)
    ops = [op for op in reader.store.read_new() if op.get("op") == "t"]
    assert len(ops) == WRITERS * BATCHES * BATCH
    for at in range(0, len(ops), BATCH):  # every batch contiguous: one writer, consecutive runs
        batch = [op["h"] for op in ops[at:at + BATCH]]
        writer, first = batch[0][:2], int(batch[0][3:])
        assert batch == [f"{writer}h{i:04d}" for i in range(first, first + BATCH)], batch


def test_a_batch_the_disk_cannot_hold_is_written_not_at_all(small_disk):  # noqa: F811
    manifest = SweepManifest(small_disk / "sweep")
    manifest.transition(run_of(0, 0), model.RUNNING)
    filler = fill(small_disk)
    before = manifest.journal.path.read_bytes()
    big = [(run, status, {**fields, "pad": "x" * 2000}) for run, status, fields in pending_batch(1, 0) * 5]
    with pytest.raises(DiskError):
        manifest.transitions(big)
    assert manifest.journal.path.read_bytes() == before
    assert list(SweepManifest(small_disk / "sweep").records()) == [run_of(0, 0).config_hash]
    filler.unlink()
    manifest.transitions(big)
    assert len(SweepManifest(small_disk / "sweep").records()) == 1 + BATCH
