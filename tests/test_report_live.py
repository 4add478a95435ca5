"""The live report: reports/index.html rewritten while a real sweep runs (one throttled refresher
process), and the final page written over it at the end."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mfcl_sweeps import model
from mfcl_sweeps.model import PlannedRun
from mfcl_sweeps.report import live
from mfcl_sweeps.state.manifest import SweepManifest

APP = Path(__file__).parent / "apps" / "metrics" / "app.py"
LIVE_MARK = 'http-equiv="refresh"'


def journal(root: Path, *statuses: str) -> None:
    """A journaled sweep of len(statuses) runs (a plan, then each run's state), returning 0.5."""
    manifest = SweepManifest(root)
    manifest.record_plan({"x": 1}, "spec1", {"default": len(statuses)})
    runs = manifest.assign([PlannedRun(overrides=(f"lr={i}",), config_hash=f"h{i}") for i in range(len(statuses))])
    for run, status in zip(runs, statuses):
        manifest.transition(run, status, return_value="0.5")


def test_one_refresher_at_a_time_and_it_stops_when_its_parent_is_gone_and_the_journal_quiet(tmp_path):
    root = tmp_path / "sweep"
    journal(root, model.COMPLETED, model.RUNNING)
    assert live.kick(str(root), interval_s=0.5)  # no parent: stops after QUIET_ROUNDS quiet intervals
    deadline = time.monotonic() + 60
    while not (root / "reports" / live.LOCK).exists():
        assert time.monotonic() < deadline, (root / "reports" / live.LOG).read_text()
        time.sleep(0.05)
    assert not live.kick(str(root), interval_s=0.5)  # one is running: no second process
    assert live.follow(str(root), interval_s=0.5) == 0  # nor a second loop
    while (root / "reports" / live.LOCK).exists():
        assert time.monotonic() < deadline, (root / "reports" / live.LOG).read_text()
        time.sleep(0.1)
    page = (root / "reports" / "index.html").read_text()
    assert LIVE_MARK in page and "The sweep is running" in page and "runs: 2 (completed 1, running 1)" in page
    assert not (root / "reports" / "summary.md").exists()  # live writes the page only


def test_a_refresher_stopped_before_it_started_up_leaves_no_lock_and_no_page(tmp_path):
    """A short sweep on a busy machine ends before its refresher has imported anything: the final
    report's stop() must still end it (the lock names it from the start), not leave it to write a
    live page over the final one later."""
    root = tmp_path / "sweep"
    journal(root, model.COMPLETED, model.RUNNING)
    assert live.kick(str(root), interval_s=0.1, parent=os.getpid())
    live.stop(str(root))
    time.sleep(3)  # long enough for a refresher that was missed to start up and write
    assert not (root / "reports" / live.LOCK).exists(), (root / "reports" / live.LOG).read_text()
    assert not (root / "reports" / "index.html").exists()


def test_refresher_writes_once_per_change_and_ends_with_the_sweep(tmp_path):
    root = tmp_path / "sweep"
    journal(root, model.COMPLETED, model.FAILED)
    (root / "reports").mkdir()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (root / "reports" / live.LOCK).write_text('{"pid": %s}' % dead.stdout.strip())  # a refresher that died
    assert live.follow(str(root), interval_s=0.1, parent=os.getpid()) == 1  # every run ended: one page
    assert LIVE_MARK not in (root / "reports" / "index.html").read_text()
    assert not (root / "reports" / live.LOCK).exists()


@pytest.mark.slow
def test_page_is_refreshed_during_a_real_sweep_then_finalized(tmp_path):
    sweep = tmp_path / "sweep"
    proc = subprocess.Popen([sys.executable, str(APP), "--multirun", f"hydra.sweep.dir={sweep}",
                             "hydra/sweeper=mfcl", "hydra/launcher=mfcl_local", "hydra.launcher.max_concurrent=1",
                             "hydra/callbacks=mfcl", "hydra.callbacks.mfcl.live_interval_s=1",
                             "lr=0.01,0.1,0.3", "sleep=4"],
                            cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    page = sweep / "reports" / "index.html"
    seen = []
    deadline = time.monotonic() + 180
    while proc.poll() is None and time.monotonic() < deadline:
        if page.exists():
            text = page.read_text()
            if LIVE_MARK in text and (not seen or seen[-1] != text):
                seen.append(text)
        time.sleep(0.2)
    assert proc.wait(timeout=60) == 0, proc.stderr.read()[-3000:]
    assert seen, "no live page while the sweep ran"
    assert any("runs: 3 (completed 1, pending 1, running 1)" in t or "runs: 3 (completed 2, running 1)" in t
               for t in seen), [t[t.find("runs:"):t.find("runs:") + 60] for t in seen]
    final = page.read_text()
    assert LIVE_MARK not in final and "runs: 3 (completed 3)" in final
    assert (sweep / "reports" / "summary.md").exists()
