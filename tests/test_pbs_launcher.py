"""mfcl_pbs end to end on the real one-node test cluster, through Debian's slurm-wlm-torque
qsub/qstat/qdel (a PBS command layer over real Slurm): results stream as tasks end, failures are
recorded with their error, a running sweep is cancelled, detached runs show in `mfcl-sweeps status`,
and Hydra's own launcher suite passes. Start the cluster with `scripts/slurm-test-cluster.sh start`.

The node is small and shared: every job here asks for 1 CPU and finishes in seconds."""
from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest
from apprun import APPS, manifest_runs, mfcl_sweeps, mode_of, run_app, status_json, wait_for
from hydra.core.plugins import Plugins
from hydra.plugins.launcher import Launcher
from hydra.test_utils.launcher_common_tests import LauncherTestSuite
from services import require_service, wait_sacct_final

PBS = ["hydra/sweeper=mfcl", "hydra/launcher=mfcl_pbs", "hydra.launcher.progress=log",
       "hydra.launcher.poll_min_s=0.3", "hydra.launcher.poll_max_s=0.5"]


@pytest.fixture(autouse=True)
def _cluster(request: pytest.FixtureRequest) -> None:
    if request.node.get_closest_marker("slurm"):
        require_service("pbs")


def test_discovery() -> None:
    assert "MfclPbsLauncher" in [p.__name__ for p in Plugins.instance().discover(Launcher)]


def test_dry_run_prints_the_exact_script_and_qsub_command_and_submits_nothing(tmp_path: Path) -> None:
    proc = run_app("behave", tmp_path, *PBS, "hydra.sweeper.dry_run=true", "value=1,2", "hydra.launcher.ngpus=1",
                   "hydra.launcher.array_parallelism=1", "hydra.launcher.dialect=torque")
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert "#PBS -l nodes=1:ppn=1:gpus=1" in out and "#PBS -t 0-1%1" in out and "#PBS -N app" in out
    qsub = next(line for line in out.splitlines() if line.startswith("$ qsub "))
    assert " -N app " in qsub and " -t 0-1%1 " in qsub and " -o " in qsub and qsub.endswith(".sh")
    assert "mfcl_sweeps.worker" in out and "--array" in out
    assert not (tmp_path / "sweep").exists()


def test_bad_option_fails_in_one_line_before_anything_is_written(tmp_path: Path) -> None:
    proc = run_app("behave", tmp_path, *PBS, "value=1,2", "hydra.launcher.job_name=my job")
    assert proc.returncode != 0
    assert "hydra.launcher.job_name='my job': a PBS job name starts with a letter" in proc.stderr
    assert not (tmp_path / "sweep").exists()


def array_id(runs: dict) -> str:
    ids = {r["backend_job_id"].split("[")[0] for r in runs.values()}
    assert len(ids) == 1, ids
    return ids.pop()


@pytest.mark.slurm
def test_four_run_sweep_streams_results_in_finish_order(tmp_path: Path) -> None:
    proc = run_app("behave", tmp_path, *PBS, "mode=sleep,ok", "value=1,2", "seconds=6")
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = manifest_runs(tmp_path / "sweep")
    assert len(runs) == 4 and all(r["status"] == "completed" for r in runs.values())
    job = array_id(runs)  # one array, tasks recorded as ID[index]
    assert sorted(r["backend_job_id"] for r in runs.values()) == [f"{job}[{i}]" for i in range(4)]
    assert all(r["backend"] == "pbs" for r in runs.values())
    assert {s for s, _ in wait_sacct_final(job, count=4).values()} == {"COMPLETED"}
    # the driver read each result as its task ended: quick runs are logged before the slow ones
    output = proc.stdout + proc.stderr
    order = [line.split("] run ", 1)[1].split()[0] for line in output.splitlines() if "] run " in line and " completed (" in line]
    modes = [mode_of(runs[r]) for r in order]
    # (sacct may record a finished task seconds late under load, so only the first is certain)
    assert modes[0] == "ok" and sorted(modes) == ["ok", "ok", "sleep", "sleep"], (order, output[-2000:])
    script = next((tmp_path / "sweep" / ".mfcl" / "pbs").glob("*.sh")).read_text()
    assert "#PBS -J 0-3" in script and "#PBS -N app" in script


@pytest.mark.slurm
def test_failing_runs_are_recorded_failed_with_their_error(tmp_path: Path) -> None:
    proc = run_app("behave", tmp_path, *PBS, "mode=ok,raise,exit")
    assert proc.returncode != 0 and "2 run(s) failed" in proc.stderr, proc.stderr[-3000:]
    runs = {mode_of(r): r for r in manifest_runs(tmp_path / "sweep").values()}
    assert runs["ok"]["status"] == "completed"
    assert runs["raise"]["status"] == "failed" and "ValueError: boom on value 0" in runs["raise"]["error"]
    assert runs["exit"]["status"] == "failed" and runs["exit"]["exit_code"] == 3
    # the scheduler saw the truth too: a raising task is FAILED, not COMPLETED (Hydra issue 1928)
    states = wait_sacct_final(array_id(runs), count=3)
    task = runs["raise"]["backend_job_id"].replace("[", "_").rstrip("]")
    assert states[task][0] == "FAILED"


def journal_statuses(sweep_dir: Path) -> list[str]:
    from mfcl_sweeps.state.manifest import SweepManifest

    return [r.status for r in SweepManifest(str(sweep_dir)).records().values()]


@pytest.mark.slurm
def test_interrupting_the_driver_cancels_its_pbs_jobs(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    cmd = [sys.executable, str(APPS / "behave" / "app.py"), "--multirun", f"hydra.sweep.dir={sweep}",
           f"side_dir={tmp_path / 'side'}", *PBS, "mode=sleep", "seconds=300", "value=1,2"]
    driver = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for(lambda: journal_statuses(sweep).count("running") == 2, what="both runs to start")
        job = array_id(manifest_runs_from_journal(sweep))
        driver.send_signal(signal.SIGINT)
        out, _ = driver.communicate(timeout=60)
    finally:
        if driver.poll() is None:
            driver.kill()
    assert driver.returncode != 0, out[-2000:]
    assert {s for s, _ in wait_sacct_final(job, count=2, timeout=60).values()} == {"CANCELLED"}


def manifest_runs_from_journal(sweep_dir: Path) -> dict:
    from mfcl_sweeps.state.manifest import SweepManifest

    return {r.run_id: {"backend_job_id": r.backend_job_id} for r in SweepManifest(str(sweep_dir)).records().values()}


@pytest.mark.slurm
def test_detach_then_status_then_cancel(tmp_path: Path) -> None:
    proc = run_app("behave", tmp_path, *PBS, "hydra.launcher.detach=true", "mode=sleep", "seconds=300", "value=1,2")
    assert proc.returncode == 0 and "Detached: 2 job(s) submitted" in proc.stdout + proc.stderr, proc.stderr[-3000:]
    sweep = tmp_path / "sweep"
    runs = manifest_runs_from_journal(sweep)
    job = array_id(runs)
    wait_for(lambda: status_json(sweep)["counts"].get("running") == 2, what="status to show 2 running")
    report = status_json(sweep)
    assert sorted(r["backend_job_id"] for r in report["running"]) == [f"{job}[0]", f"{job}[1]"]
    cancel = mfcl_sweeps("cancel", str(sweep))
    assert cancel.returncode == 0 and "cancelled 2 run(s)" in cancel.stdout, cancel.stdout + cancel.stderr
    assert {s for s, _ in wait_sacct_final(job, count=2, timeout=60).values()} == {"CANCELLED"}
    assert status_json(sweep)["counts"] == {"total": 2, "cancelled": 2}


@pytest.mark.slurm
def test_status_shows_a_detached_job_deleted_behind_its_back(tmp_path: Path) -> None:
    proc = run_app("behave", tmp_path, *PBS, "hydra.launcher.detach=true", "mode=sleep", "seconds=300")
    assert proc.returncode == 0, proc.stderr[-3000:]
    sweep = tmp_path / "sweep"
    (run,) = manifest_runs_from_journal(sweep).values()
    job = run["backend_job_id"]
    assert job.isdigit()  # one run: a plain job, not an array
    wait_for(lambda: status_json(sweep)["counts"].get("running") == 1, what="the run to start")
    subprocess.run(["qdel", job], check=True, timeout=30)
    wait_sacct_final(job, count=1, timeout=60)
    report = status_json(sweep)
    assert report["counts"].get("failed") == 1, report
    assert "deleted (qdel/scancel)" in report["failed"][0]["error"]


@pytest.mark.slurm
@pytest.mark.parametrize("launcher_name, overrides",
                         [("mfcl_pbs", ["hydra.launcher.poll_min_s=0.3", "hydra.launcher.poll_max_s=1"])])
class TestMfclPbsLauncher(LauncherTestSuite):
    pass
