"""`mfcl-sweeps watch`: the view computed from a real journal, and the live view in tmux during a
real mfcl_local sweep of tests/apps/metrics (driven with send-keys, read with capture-pane)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from services import IN_CI

from mfcl_sweeps import model
from mfcl_sweeps.commands.watch import build_view
from mfcl_sweeps.model import PlannedRun
from mfcl_sweeps.state.manifest import SweepManifest

APP = Path(__file__).parent / "apps" / "metrics" / "app.py"


def planned(i: int, group: str) -> PlannedRun:
    return PlannedRun(overrides=(f"lr={i}",), config_hash=f"h{i}", group=group)


def test_view_from_the_journal(tmp_path):
    manifest = SweepManifest(tmp_path / "sweep")
    manifest.record_plan({"x": 1}, "spec1", {"a": 3, "b": 2})
    runs = list(manifest.assign([planned(0, "a"), planned(1, "a"), planned(2, "a"), planned(3, "b"),
                                 planned(4, "b")]))
    manifest.transition(runs[0], model.RUNNING, host="n1", backend="slurm", start_time=100.0)
    manifest.transition(runs[0], model.COMPLETED, end_time=160.0)
    manifest.transition(runs[1], model.RUNNING, host="n1", backend="slurm", start_time=150.0)
    manifest.transition(runs[3], model.RUNNING, host="n2", backend="ssh", start_time=170.0)
    manifest.transition(runs[3], model.FAILED, end_time=175.0, error="Traceback...\nValueError: bad lr")
    view = build_view(SweepManifest(tmp_path / "sweep"), now=200.0)
    assert (view.total, view.finished, view.ended) == (5, 2, False)
    assert view.groups["a"] == {model.COMPLETED: 1, model.RUNNING: 1, model.PENDING: 1}
    assert view.groups["b"] == {model.FAILED: 1, model.PENDING: 1}
    assert view.sources[("n1", "slurm")] == {model.COMPLETED: 1, model.RUNNING: 1}
    assert view.running == [(runs[1].run_id, "n1", "slurm", 50.0)]
    assert view.failures == [(runs[3].run_id, "n2", "ValueError: bad lr")]
    # one run of 60 s done, 3 left, 1 running: 3 * 60 / 1
    assert view.eta_s == 180.0 and view.elapsed_s == 100.0
    for run in (runs[1], runs[2], runs[4]):
        manifest.transition(run, model.COMPLETED, start_time=200.0, end_time=210.0)
    assert build_view(SweepManifest(tmp_path / "sweep"), now=300.0).ended


def require_tmux() -> None:
    if shutil.which("tmux") is None:
        message = "tmux is not installed: run scripts/chromium-test.sh install"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)


class Tmux:
    def __init__(self, tmp_path: Path) -> None:
        self.name = f"mfcl-watch-{uuid.uuid4().hex[:8]}"
        self.socket = str(tmp_path / "tmux.sock")

    def __call__(self, *args: str) -> str:
        return subprocess.run(["tmux", "-S", self.socket, *args], check=True, capture_output=True, text=True,
                              timeout=30).stdout

    def screen(self) -> str:
        return self("capture-pane", "-p", "-J", "-S", "-200", "-t", self.name)

    def wait_for(self, text: str, timeout: float = 120) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            screen = self.screen()
            if text in screen:
                return screen
            time.sleep(0.3)
        raise AssertionError(f"{text!r} never shown; the pane:\n{self.screen()}")


def group_cells(screen: str) -> list[str]:
    """The cells of the last `default` row of the groups table on the screen."""
    line = [ln for ln in screen.splitlines() if ln.startswith("│ default")][-1]
    return [c.strip() for c in line.split("│")[1:-1]]


@pytest.mark.slow
def test_watch_in_tmux_during_a_real_sweep(tmp_path):
    require_tmux()
    sweep = tmp_path / "sweep"
    log = open(tmp_path / "sweep.log", "w")
    proc = subprocess.Popen([sys.executable, str(APP), "--multirun", f"hydra.sweep.dir={sweep}",
                             "hydra/sweeper=mfcl", "hydra/launcher=mfcl_local", "hydra.launcher.max_concurrent=2",
                             "hydra.sweeper.fail_on_error=false", "lr=0.1,0.3", "fail=false,true", "sleep=4"],
                            cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT)
    tmux = Tmux(tmp_path)
    try:
        tmux("new-session", "-d", "-s", tmux.name, "-x", "150", "-y", "60", "-c", str(tmp_path), "bash --norc")
        tmux("send-keys", "-t", tmux.name, f"export PS1='$ ' PATH={os.path.dirname(sys.executable)}:$PATH", "Enter")
        deadline = time.monotonic() + 120
        while not (sweep / ".mfcl" / "journal.jsonl").exists():
            assert time.monotonic() < deadline and proc.poll() is None, (tmp_path / "sweep.log").read_text()
            time.sleep(0.2)
        watch = f"python -m mfcl_sweeps.cli watch {sweep} --interval 0.5; echo WATCH-EXIT=$?"
        tmux("send-keys", "-t", tmux.name, watch, "Enter")
        screen = tmux.wait_for("running (2)")
        assert f"(running)  {sweep}" in screen and "0m0" in screen  # elapsed of a running run
        assert group_cells(screen)[3] == "2" and group_cells(screen)[5] == "4"  # running, total
        assert "│ local   │       2 │" in screen  # the source (host, backend) table

        tmux("send-keys", "-t", tmux.name, "C-c", "")  # Ctrl-C: quiet exit, no traceback
        screen = tmux.wait_for("WATCH-EXIT=130")
        assert "Traceback" not in screen

        # the marker is split in the typed command, so only watch's end can show it whole
        # a new marker (the first run's is still on screen), split in the typed command so that only
        # watch's end shows it whole
        tmux("send-keys", "-t", tmux.name, "clear; " + watch.replace("WATCH-EXIT=", '"WATCH""-END="'), "Enter")
        screen = tmux.wait_for("WATCH-END=", timeout=180)
        assert proc.wait(timeout=120) == 0
        assert f"(ended)  {sweep}" in screen and "4/4 done: 2 completed, 2 failed" in screen
        assert group_cells(screen)[1:6] == ["2", "2", "0", "0", "4"]
        assert "latest failures (2)" in screen and "RuntimeError: diverged at lr=0.1" in screen
        assert "ended: 2 completed, 2 failed, 0 cancelled" in screen
        assert "WATCH-END=1" in screen  # failures: exit status 1
    finally:
        subprocess.run(["tmux", "-S", tmux.socket, "kill-server"], capture_output=True)
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_a_sweep_planned_without_a_total_ends_with_its_process(tmp_path):
    """BasicSweeper + callback: no total ahead; a failed job means no final snapshot either."""
    import socket

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    for pid, ended in ((os.getpid(), False), (int(dead.stdout), True)):
        manifest = SweepManifest(tmp_path / str(pid))
        manifest.record_plan({"sweeper": "BasicSweeper"}, "spec1", {"total": 0},
                             command={"host": socket.gethostname(), "pid": pid})
        manifest.transition(planned(0, "job"), model.FAILED, error="boom")
        assert build_view(SweepManifest(tmp_path / str(pid))).ended is ended
