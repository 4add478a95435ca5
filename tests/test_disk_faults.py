"""A full disk and a read-only sweep dir, on real small filesystems (tmpfs mounts of a few MB):
the journal keeps no torn line, a sweep that fills the disk stops with one line and no job left
behind, `mfcl-sweeps resume` finishes it once space is back, and every command on a read-only
sweep dir answers in one line, never a traceback. Mounting needs root (CI runs as root)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from apprun import APPS, alive

from mfcl_sweeps.errors import DiskError
from mfcl_sweeps.state.journal import RESERVE_BYTES, RESERVE_NAME, Journal

RUNS = 8


@pytest.fixture
def small_disk(tmp_path):
    """A tmpfs of 4 MB at tmp_path/disk, unmounted afterwards."""
    if os.geteuid() != 0 and os.environ.get("CI") != "true":
        pytest.skip("mounting a tmpfs needs root")
    disk = tmp_path / "disk"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(disk)], check=True)
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def fill(disk: Path) -> Path:
    """Fill the filesystem to the last byte; the filler file is returned for freeing it again."""
    filler = disk / "filler"
    with open(filler, "wb", buffering=0) as f:
        for size in (65536, 4096, 512, 1):  # down to the last byte
            try:
                while f.write(b"\0" * size):
                    pass
            except OSError:
                pass
    return filler


def lines(path: Path) -> list[dict]:
    data = path.read_bytes()
    assert not data or data.endswith(b"\n"), "torn last line"
    return [json.loads(line) for line in data.splitlines()]


def test_a_full_disk_refuses_the_whole_append_and_leaves_no_torn_line(small_disk):
    journal = Journal(small_disk / "sweep")
    journal.append([{"op": "t", "h": "a", "t": 1.0, "s": "pending"}])
    filler = fill(small_disk)
    before = journal.path.read_bytes()
    big = [{"op": "t", "h": f"h{i}", "t": 1.0, "s": "pending", "f": {"pad": "x" * 2000}} for i in range(50)]
    with pytest.raises(DiskError, match=r"journal.jsonl: No space left on device: .*mfcl-sweeps resume"):
        journal.append(big)
    assert journal.path.read_bytes() == before  # nothing half-written
    assert not [p for p in journal.dir.iterdir() if p.name.endswith(".lock")]  # the lock was let go
    filler.unlink()
    journal.append(big)
    assert len(lines(journal.path)) == 51


def test_only_a_full_disk_stops_last_words_use_the_journals_reserve_and_it_comes_back(small_disk):
    journal = Journal(small_disk / "sweep")
    journal.append([{"op": "t", "h": "a", "t": 1.0, "s": "running"}])
    reserve = journal.dir / RESERVE_NAME
    assert reserve.stat().st_blocks * 512 >= RESERVE_BYTES  # written, not a hole
    filler = fill(small_disk)
    with pytest.raises(DiskError):  # an ordinary line does not touch the reserve
        journal.append([{"op": "t", "h": "a", "t": 2.0, "s": "completed"}])
    assert reserve.exists()
    journal.append([{"op": "t", "h": "a", "t": 3.0, "s": "interrupted"}], last_words=True)
    assert not reserve.exists() and lines(journal.path)[-1]["s"] == "interrupted"
    filler.unlink()
    Journal(small_disk / "sweep").append([{"op": "t", "h": "a", "t": 4.0, "s": "running"}])  # e.g. a resume
    assert reserve.stat().st_size == RESERVE_BYTES


def test_a_read_only_dir_is_one_line(small_disk):
    journal = Journal(small_disk / "sweep")
    journal.append([{"op": "t", "h": "a", "t": 1.0, "s": "pending"}])
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    with pytest.raises(DiskError, match="Read-only file system: mfcl needs to write there"):
        journal.append([{"op": "t", "h": "b", "t": 1.0, "s": "pending"}])


def sweep_command(tmp_path: Path, sweep: Path) -> list[str]:
    return [sys.executable, str(APPS / "behave" / "app.py"), "--multirun", f"hydra.sweep.dir={sweep}",
            f"side_dir={tmp_path / 'side'}", "hydra/sweeper=mfcl", "hydra/launcher=mfcl_local",
            "hydra.launcher.progress=log", "hydra.launcher.max_concurrent=2", "mode=sleep", "seconds=0.5",
            f"value=range(0,{RUNS})"]



@pytest.mark.slow
def test_a_sweep_that_fills_the_disk_stops_cleanly_and_resumes(tmp_path, small_disk):
    sweep = small_disk / "sweep"
    driver = subprocess.Popen(sweep_command(tmp_path, sweep), cwd=tmp_path, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    journal = sweep / ".mfcl" / "journal.jsonl"
    deadline = time.monotonic() + 120
    while driver.poll() is None and time.monotonic() < deadline and \
            not (journal.exists() and b'"s":"completed"' in journal.read_bytes()):
        time.sleep(0.05)
    filler = fill(small_disk)  # mid-sweep: some runs done, some running, some not started
    out, err = driver.communicate(timeout=120)
    assert driver.returncode != 0 and "Traceback" not in out + err, err[-3000:]
    said = [line for line in err.splitlines() if line.strip() and not line.startswith("[")
            and "HYDRA_FULL_ERROR" not in line and not line.startswith("mfcl: ")]
    assert len(said) == 1 and "No space left on device" in said[0] and "mfcl-sweeps resume" in said[0], err[-3000:]
    ops = lines(journal)  # every line whole
    pids = [json.loads(p.read_text())["pid"] for p in (tmp_path / "side").glob("*.json")]
    deadline = time.monotonic() + 10
    while [p for p in pids if alive(p)] and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [p for p in pids if alive(p)], "a job outlived the stopped sweep"
    assert Counter(op["s"] for op in ops if op.get("op") == "t")["completed"] < RUNS
    # every run the full disk stopped ends journaled `interrupted` with the reason (the journal's
    # reserve holds these last lines), not `running` (which `status` would show as lost); a run
    # whose own result or journal write the disk refused failed with that reason
    last = {op["h"]: op for op in ops if op.get("op") == "t"}
    stopped = [op for op in last.values() if op["s"] == "interrupted"]
    assert stopped and all(op["f"]["error"].startswith("stopped by a full disk: ") for op in stopped), stopped
    for op in last.values():
        assert op["s"] in ("completed", "pending", "interrupted") or (
            op["s"] == "failed" and "No space left on device" in op["f"]["error"]), op
    shown = json.loads(cli("status", str(sweep), "--json", cwd=tmp_path).stdout)["counts"]
    assert shown.get("interrupted") == len(stopped) and "lost" not in shown and "running" not in shown, shown

    filler.unlink()
    done = subprocess.run([sys.executable, "-m", "mfcl_sweeps.cli", "resume", str(sweep)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    completed = Counter(op["h"] for op in lines(journal) if op.get("op") == "t" and op["s"] == "completed")
    assert len(completed) == RUNS and set(completed.values()) == {1}, completed


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mfcl_sweeps.cli", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=120)


@pytest.mark.slow
def test_every_command_on_a_read_only_sweep_dir_is_one_line(tmp_path, small_disk):
    sweep = small_disk / "sweep"
    first = subprocess.run([*sweep_command(tmp_path, sweep)[:-1], "value=range(0,2)", "seconds=0"], cwd=tmp_path,
                           capture_output=True, text=True, timeout=180)
    assert first.returncode == 0, first.stderr[-2000:]
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    for args in (["status", str(sweep)], ["aggregate", str(sweep)], ["cancel", str(sweep)],
                 ["resume", str(sweep), "hydra.sweeper.resume=none"]):
        done = cli(*args, cwd=tmp_path)
        text = done.stdout + done.stderr
        assert "Traceback" not in text, (args, text[-3000:])
        if done.returncode != 0:
            errors = [line for line in done.stderr.splitlines() if line.strip() and "HYDRA_FULL_ERROR" not in line
                      and not line.startswith("[")]
            assert len(errors) == 1 and ("Read-only" in errors[0] or "read-only" in errors[0]), (args, errors)
