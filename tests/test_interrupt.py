"""Interruption is a state: SIGINT, SIGTERM and SIGHUP of the driver stop the running jobs' whole
process trees, journal them `interrupted`, write the manifest, print one line and exit 128 + the
signal; SIGKILL of the driver leaves no process of a job behind either (per-job supervisor)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from apprun import APPS, alive, mfcl_sweeps, wait_for

from mfcl_sweeps.backends.base import JobHandle
from mfcl_sweeps.launch.interrupt import StopSignals

MFCL = ["hydra/sweeper=mfcl", "hydra/launcher=mfcl_local", "hydra.launcher.progress=log"]


def start_driver(tmp_path: Path, *overrides: str) -> subprocess.Popen:
    cmd = [sys.executable, str(APPS / "behave" / "app.py"), "--multirun", f"hydra.sweep.dir={tmp_path / 'sweep'}",
           f"side_dir={tmp_path / 'side'}", *MFCL, *overrides]
    return subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def children_of_started_runs(tmp_path: Path, n: int) -> list[int]:
    """Wait until n runs started their subprocesses; their pids and the runs' own pids."""
    side = tmp_path / "side"
    wait_for(lambda: len(list(side.glob("*.children"))) >= n, 60, f"{n} runs to start their children")
    pids = [int(p) for f in side.glob("*.children") for p in f.read_text().split()]
    pids += [json.loads(f.read_text())["pid"] for f in side.glob("*.json")]
    return pids



def journal_states(sweep: Path) -> dict[str, str]:
    """Last journaled state per config hash."""
    states = {}
    for line in (sweep / ".mfcl" / "journal.jsonl").read_text().splitlines():
        op = json.loads(line)
        if op.get("op") == "t":
            states[op["h"]] = op["s"]
    return states


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_a_stop_signal_stops_every_job_process_and_journals_them_interrupted(tmp_path: Path, sig: int) -> None:
    driver = start_driver(tmp_path, "mode=children", "seconds=120", "value=1,2,3", "hydra.launcher.max_concurrent=2")
    pids = children_of_started_runs(tmp_path, 2)
    driver.send_signal(sig)
    out, err = driver.communicate(timeout=30)
    assert driver.returncode == 128 + sig, err
    sweep = tmp_path / "sweep"
    assert err.strip().splitlines()[-1] == f"interrupted: 2 runs stopped, 1 not started; mfcl-sweeps resume {sweep}"
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    assert [p for p in pids if alive(p)] == []  # the runs, their subprocesses, the one that left its group
    assert sorted(journal_states(sweep).values()) == ["interrupted", "interrupted"]
    counts = json.loads((sweep / "sweep_manifest.json").read_text())["counts"]
    assert counts == {"total": 3, "pending": 1, "interrupted": 2}


def test_resume_after_an_interruption_runs_the_interrupted_and_the_rest(tmp_path: Path) -> None:
    driver = start_driver(tmp_path, "mode=children", "seconds=120", "value=1,2,3", "hydra.launcher.max_concurrent=2")
    children_of_started_runs(tmp_path, 2)
    driver.send_signal(signal.SIGINT)
    driver.communicate(timeout=30)
    (tmp_path / "side" / "release").write_text("")  # the resumed runs finish at once
    proc = mfcl_sweeps("resume", str(tmp_path / "sweep"))
    assert proc.returncode == 0, proc.stderr
    assert sorted(journal_states(tmp_path / "sweep").values()) == ["completed"] * 3


def test_a_second_signal_kills_jobs_that_ignore_sigterm_at_once(tmp_path: Path) -> None:
    driver = start_driver(tmp_path, "mode=stubborn", "seconds=120", "value=1,2", "hydra.launcher.kill_grace_s=60")
    wait_for(lambda: len(list((tmp_path / "side").glob("*.json"))) == 2, 60, "both runs to start")
    time.sleep(0.5)  # past the SIGTERM handler's installation
    driver.send_signal(signal.SIGINT)
    time.sleep(1.0)
    assert driver.poll() is None  # the first Ctrl-C gives the jobs their grace period
    t0 = time.monotonic()
    driver.send_signal(signal.SIGINT)
    _, err = driver.communicate(timeout=30)
    assert time.monotonic() - t0 < 10, "the second Ctrl-C did not cut the 60 s grace period"
    assert driver.returncode == 130, err
    assert "Traceback" not in err
    assert sorted(journal_states(tmp_path / "sweep").values()) == ["interrupted", "interrupted"]


def test_no_process_of_a_job_outlives_a_killed_driver(tmp_path: Path) -> None:
    driver = start_driver(tmp_path, "mode=children", "seconds=120", "value=1,2")
    pids = children_of_started_runs(tmp_path, 2)
    driver.kill()
    driver.communicate(timeout=30)
    wait_for(lambda: not [p for p in pids if alive(p)], 15, f"processes {pids} to end with their driver")


# the timeout must strike after the job started its children: a forked job does at once, a
# spawned one first starts an interpreter and imports Hydra
@pytest.mark.parametrize("start_method, timeout", [("fork", 4), pytest.param("spawn", 10, marks=pytest.mark.slow)])
def test_a_timeout_kills_the_jobs_subprocesses_too(tmp_path: Path, start_method: str, timeout: int) -> None:
    driver = start_driver(tmp_path, "mode=children", "seconds=120", f"hydra.launcher.timeout={timeout}",
                          f"hydra.launcher.start_method={start_method}", "hydra.sweeper.fail_on_error=false")
    pids = children_of_started_runs(tmp_path, 1)
    _, err = driver.communicate(timeout=60)
    assert driver.returncode == 0, err
    assert [p for p in pids if alive(p)] == []
    (run,) = json.loads((tmp_path / "sweep" / "sweep_manifest.json").read_text())["runs"]
    assert run["status"] == "failed" and "timed out" in run["error"]


def test_a_signal_during_fork_is_kept_for_the_driver() -> None:
    """A stop signal landing in an after-fork hook (where Python drops exceptions) still stops."""
    from mfcl_sweeps.backends.local import LocalBackend, LocalOptions

    backend = LocalBackend(LocalOptions(), session=None)
    calls, me = [], os.getpid()

    def signal_in_hook() -> None:  # hooks cannot be unregistered: once, in this process only
        if not calls and os.getpid() == me:
            calls.append(1)
            os.kill(me, signal.SIGTERM)

    os.register_at_fork(after_in_parent=signal_in_hook)
    stop = StopSignals()
    stop.install()
    try:
        pid = backend._start(_request_double(), {}, ["true"], None)
        # With only this thread, the signal unblocked after fork is handled at once; with other
        # threads alive (left by earlier tests in CI's run) the kernel may hand it to one of them,
        # and Python's handler then runs in this thread a moment later.
        wait_for(lambda: stop.pending, 10, "the signal sent during fork to reach the driver's handler")
        assert stop.signum == signal.SIGTERM
    finally:
        stop.restore()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0  # the job (`true`) itself was not hit


def test_an_already_reaped_job_counts_as_ended() -> None:
    """cancel() of a job whose process was reaped elsewhere (ChildProcessError) does not crash."""
    from mfcl_sweeps.backends.local import EXIT_UNKNOWN, LocalBackend, LocalOptions

    backend = LocalBackend(LocalOptions(kill_grace_s=0.1), session=None)
    proc = subprocess.Popen(["true"])
    proc.wait()  # reaped here, as another part of the driver might
    handle = JobHandle(request=_request_double(), backend_job_id=str(proc.pid), started=0.0, data={"pid": proc.pid})
    backend.cancel([handle])
    assert handle.data["exit_code"] == EXIT_UNKNOWN


def _request_double():
    """A JobRequest with a log path and nothing else a job would need (no task runs)."""
    import tempfile

    from mfcl_sweeps.backends.base import JobRequest
    from mfcl_sweeps.job.jobspec import JobSpec
    from mfcl_sweeps.model import PlannedRun

    log = os.path.join(tempfile.mkdtemp(), "job.log")
    run = PlannedRun(overrides=(), config_hash="0" * 16, run_id="00000_default")
    return JobRequest(run=run, spec=JobSpec(overrides=[], index=0, run={}, result_path="", sweep_dir="",
                                            session_path=""), job_path="", log_path=log)


def test_a_cancelled_run_is_not_a_failure(tmp_path: Path) -> None:
    """`mfcl-sweeps cancel` during a sweep: the driver reports the run cancelled, not FAILED, and
    exits 0 when nothing failed."""
    driver = start_driver(tmp_path, "mode=children", "seconds=120")
    children_of_started_runs(tmp_path, 1)
    cancel = mfcl_sweeps("cancel", str(tmp_path / "sweep"))
    assert cancel.returncode == 0, cancel.stderr
    out, err = driver.communicate(timeout=60)
    assert driver.returncode == 0, err
    said = out + err
    assert "cancelled (1/1)" in said and "FAILED" not in said and "run(s) failed" not in said, said
    assert list(journal_states(tmp_path / "sweep").values()) == ["cancelled"]
