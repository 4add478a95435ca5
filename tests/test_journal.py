"""The journal: appends from real processes, torn and corrupt lines, the cross-host lock."""
from __future__ import annotations

import json
import multiprocessing
import os
import subprocess
import sys
import time

import pytest

from mfcl_sweeps.errors import ManifestError
from mfcl_sweeps.state.journal import Journal, LinkLock, self_test


def test_incremental_read_returns_only_new_ops(tmp_path):
    writer, reader = Journal(tmp_path), Journal(tmp_path)
    assert reader.read_new() == []  # no journal yet: nothing, and nothing created
    assert not (tmp_path / ".mfcl").exists()
    writer.append([{"op": "x", "n": 1}, {"op": "x", "n": 2}])
    assert [op["n"] for op in reader.read_new()] == [1, 2]
    assert reader.read_new() == []
    writer.append([{"op": "x", "n": 3}])
    assert [op["n"] for op in reader.read_new()] == [3]
    assert reader.lines_read == 3


def test_torn_last_line_is_ignored_then_cut_by_the_next_writer(tmp_path):
    journal = Journal(tmp_path)
    journal.append([{"n": 1}])
    with open(journal.path, "ab") as f:  # a writer killed half-way through its line
        f.write(b'{"n": 2, "hal')
    reader = Journal(tmp_path)
    assert reader.read_new() == [{"n": 1}]
    journal.append([{"n": 3}])
    assert reader.read_new() == [{"n": 3}]
    assert Journal(tmp_path).read_new() == [{"n": 1}, {"n": 3}]


def test_corrupt_middle_line_is_an_error_naming_the_line(tmp_path):
    journal = Journal(tmp_path)
    journal.append([{"n": 1}, {"n": 2}])
    with open(journal.path, "ab") as f:
        f.write(b'{"n": 3, garbage}\n')
    journal.append([{"n": 4}])
    with pytest.raises(ManifestError, match=r"journal\.jsonl:3: corrupt journal line"):
        Journal(tmp_path).read_new()


def test_corrupt_line_after_an_incremental_read_names_its_absolute_line(tmp_path):
    journal = Journal(tmp_path)
    reader = Journal(tmp_path)
    journal.append([{"n": i} for i in range(5)])
    assert len(reader.read_new()) == 5
    with open(journal.path, "ab") as f:
        f.write(b"[1, 2]\n")
    with pytest.raises(ManifestError, match=r":6: journal line is not an object"):
        reader.read_new()


def _append_many(sweep_dir: str, worker: int, n: int) -> None:
    journal = Journal(sweep_dir)
    for i in range(n):
        journal.append([{"w": worker, "i": i, "pad": "x" * (i % 50)}])


def test_concurrent_appends_from_processes_lose_nothing(tmp_path):
    procs = [multiprocessing.Process(target=_append_many, args=(str(tmp_path), w, 60)) for w in range(6)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    ops = Journal(tmp_path).read_new()
    assert sorted((op["w"], op["i"]) for op in ops) == [(w, i) for w in range(6) for i in range(60)]
    # each worker's ops appear in its own order
    for w in range(6):
        assert [op["i"] for op in ops if op["w"] == w] == list(range(60))


def test_lock_excludes_another_process_until_released(tmp_path):
    lock_path = tmp_path / "l.lock"
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from pathlib import Path; from mfcl_sweeps.state.journal import LinkLock\n"
        f"l = LinkLock(Path({str(lock_path)!r})); l.acquire(); print('held', flush=True); time.sleep(1.0); l.release()")],
        stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    start = time.monotonic()
    with LinkLock(lock_path, grace=30):
        waited = time.monotonic() - start
    holder.wait(10)
    assert waited > 0.5
    assert not lock_path.exists()


def test_lock_left_by_a_killed_process_of_this_host_is_broken_at_once(tmp_path):
    lock_path = tmp_path / "l.lock"
    holder = subprocess.Popen([sys.executable, "-c", (
        "import time; from pathlib import Path; from mfcl_sweeps.state.journal import LinkLock\n"
        f"LinkLock(Path({str(lock_path)!r})).acquire(); print('held', flush=True); time.sleep(60)")],
        stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    holder.kill()
    holder.wait()
    start = time.monotonic()
    with LinkLock(lock_path, grace=30):
        assert time.monotonic() - start < 5


def test_lock_of_another_host_is_broken_after_grace_on_the_waiters_clock(tmp_path):
    lock_path = tmp_path / "l.lock"
    other = LinkLock(lock_path)
    import mfcl_sweeps.state.journal as journal_mod

    real_host = journal_mod.HOST
    journal_mod.HOST = "node-b"  # what a holder on another node leaves: a host we cannot check
    try:
        assert other.try_acquire()
    finally:
        journal_mod.HOST = real_host
    assert json.loads(lock_path.read_text())["host"] == "node-b"
    old = time.time() - 3600
    os.utime(lock_path, (old, old))  # its mtime says nothing: only the waiter's own clock counts
    start = time.monotonic()
    with LinkLock(lock_path, grace=0.4):
        waited = time.monotonic() - start
    assert 0.4 <= waited < 5
    other.release()  # the broken holder's late release must not remove someone else's lock
    assert not lock_path.exists()


def test_late_release_of_a_broken_lock_keeps_the_new_holders_lock(tmp_path):
    lock_path = tmp_path / "l.lock"
    first, second = LinkLock(lock_path, grace=0), LinkLock(lock_path)
    assert first.try_acquire()
    first_token = json.loads(lock_path.read_text())["token"]
    lock_path.unlink()  # as a breaker does
    assert second.try_acquire()
    first.release()
    assert lock_path.exists() and json.loads(lock_path.read_text())["token"] != first_token
    second.release()
    assert not lock_path.exists()


def test_self_test_passes_on_a_local_filesystem_and_leaves_nothing(tmp_path):
    self_test(tmp_path / "claims")
    assert list((tmp_path / "claims").iterdir()) == []
