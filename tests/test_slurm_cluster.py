"""mfcl_slurm end to end on the real one-node test cluster (`scripts/slurm-test-cluster.sh start`):
one array with a parallelism limit, truthful FAILED states, requeue by `scontrol requeue` and by
`scancel --signal=USR2` with resume from checkpoints, detach + status + the aggregation job,
cancel, a 2-process torchrun run in one allocation, and Hydra's own launcher suites.

The node is small and shared: every job asks for 1 CPU (2 for torchrun) and ends in seconds,
except the requeue test's training runs (~30 s)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest
from apprun import APPS, manifest_runs, mfcl_sweeps, mode_of, run_app, side_records, status_json, wait_for
from hydra.core.plugins import Plugins
from hydra.plugins.launcher import Launcher
from hydra.test_utils.launcher_common_tests import IntegrationTestSuite, LauncherTestSuite
from services import require_service, wait_sacct_final

REPO = Path(__file__).resolve().parents[1]
POLL = ["hydra.launcher.progress=log", "hydra.launcher.poll_min_s=0.3", "hydra.launcher.poll_max_s=0.5",
        "hydra.launcher.timeout_min=10"]
SLURM = ["hydra/sweeper=mfcl", "hydra/launcher=mfcl_slurm", *POLL]


@pytest.fixture(autouse=True)
def _cluster(request: pytest.FixtureRequest) -> None:
    if request.node.get_closest_marker("slurm"):
        require_service("slurm")


def test_discovery() -> None:
    assert "MfclSlurmLauncher" in [p.__name__ for p in Plugins.instance().discover(Launcher)]


def test_dry_run_prints_the_exact_sbatch_script_and_submits_nothing(tmp_path: Path) -> None:
    proc = run_app("behave", tmp_path, *SLURM, "hydra.sweeper.dry_run=true", "value=1,2,3",
                   "hydra.launcher.array_parallelism=2", "hydra.launcher.gpus_per_node=1", "hydra.launcher.max_array_size=10")
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert "#SBATCH --array=0-2%2" in out and "#SBATCH --gpus-per-node=1" in out and "#SBATCH --job-name=app" in out
    assert "-m mfcl_sweeps.backends.slurm_task" in out and "$ sbatch --parsable " in out
    assert not (tmp_path / "sweep").exists()


def test_bad_option_fails_in_one_line_before_anything_is_written(tmp_path: Path) -> None:
    proc = run_app("behave", tmp_path, *SLURM, "value=1,2", "hydra.launcher.array_parallelism=0")
    assert proc.returncode != 0
    assert "hydra.launcher.array_parallelism=0: must be >= 1; set 1 or more" in proc.stderr
    assert not (tmp_path / "sweep").exists()


def array_of(runs: dict) -> str:
    ids = {r["backend_job_id"].split("_")[0] for r in runs.values()}
    assert len(ids) == 1, ids
    return ids.pop()


def max_concurrency(job: str) -> int:
    """Most tasks of `job` running at the same second, from sacct's Start/End."""
    out = subprocess.run(["sacct", "-n", "-P", "-X", "-j", job, "-o", "Start,End"], capture_output=True,
                         text=True, check=True).stdout
    spans = [tuple(datetime.fromisoformat(t).timestamp() for t in line.split("|")) for line in out.split()]
    # sacct keeps whole seconds: a task shorter than that has Start == End and would count as never running
    assert spans and all(e > s for s, e in spans), f"tasks of {job} too short to measure: {out}"
    return max(sum(1 for s, e in spans if s <= t < e) for t, _ in spans)


@pytest.mark.slurm
def test_six_run_sweep_is_one_array_with_parallelism_two(tmp_path: Path) -> None:
    proc = run_app("behave", tmp_path, *SLURM, "hydra.launcher.array_parallelism=2", "mode=sleep", "seconds=2",
                   "value=1,2,3,4,5,6")
    assert proc.returncode == 0, proc.stderr[-3000:]
    sweep = tmp_path / "sweep"
    runs = manifest_runs(sweep)
    assert len(runs) == 6 and all(r["status"] == "completed" for r in runs.values())
    job = array_of(runs)
    assert sorted(r["backend_job_id"] for r in runs.values()) == [f"{job}_{i}" for i in range(6)]
    assert {s for s, _ in wait_sacct_final(job, count=6).values()} == {"COMPLETED"}
    assert max_concurrency(job) <= 2
    seen = side_records(tmp_path)
    for run_id, r in runs.items():
        assert r["backend"] == "slurm" and r["attempts"] == 1 and r["return_value"] == "1.0"
        assert r["job_dir"] == str(sweep / str(r["index"]))  # Hydra's sweep subdir, one per run
        env = seen[run_id]["env"]
        assert env["MFCL_SWEEP_RUN_DIR"] == r["job_dir"] and env["MFCL_SWEEP_ATTEMPT"] == "1"
        assert seen[run_id]["value"] == int(next(o for o in r["overrides"] if o.startswith("value=")).split("=")[1])
    script = next((sweep / ".mfcl" / "slurm").glob("*.sh")).read_text()
    assert "#SBATCH --array=0-5%2" in script


@pytest.mark.slurm
def test_a_failing_run_is_failed_in_sacct_and_the_manifest_and_the_others_complete(tmp_path: Path) -> None:
    proc = run_app("behave", tmp_path, *SLURM, "mode=ok,raise,exit")
    assert proc.returncode != 0 and "2 run(s) failed" in proc.stderr, proc.stderr[-3000:]
    runs = {mode_of(r): r for r in manifest_runs(tmp_path / "sweep").values()}
    assert runs["ok"]["status"] == "completed"
    assert runs["raise"]["status"] == "failed" and runs["raise"]["error"] == "ValueError: boom on value 0"
    assert runs["exit"]["status"] == "failed" and runs["exit"]["exit_code"] == 3
    states = wait_sacct_final(array_of(runs), count=3)
    # a raising task is FAILED in Slurm's accounting, not COMPLETED (Hydra issue 1928)
    assert states[runs["raise"]["backend_job_id"]] == ("FAILED", "1:0")
    assert states[runs["exit"]["backend_job_id"]] == ("FAILED", "3:0")
    assert states[runs["ok"]["backend_job_id"]][0] == "COMPLETED"


@pytest.mark.slurm
def test_groups_with_different_resources_run_as_different_arrays(tmp_path: Path) -> None:
    sweep_file = tmp_path / "sweep.yaml"
    sweep_file.write_text("groups:\n"
                          "  - {group: short, params: {value: [1, 2]}, timeout_min: 5}\n"
                          "  - {group: long, params: {value: [3]}, timeout_min: 20, cpus_per_task: 2}\n")
    proc = run_app("behave", tmp_path, *SLURM, f"hydra.sweeper.sweep_file={sweep_file}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = manifest_runs(tmp_path / "sweep")
    arrays = {}
    for r in runs.values():
        arrays.setdefault(r["group"], set()).add(r["backend_job_id"].split("_")[0])
    assert len(arrays["short"]) == len(arrays["long"]) == 1 and arrays["short"] != arrays["long"]
    limits = {}
    for group, (job,) in arrays.items():
        out = subprocess.run(["sacct", "-n", "-P", "-X", "-j", job, "-o", "Timelimit,AllocCPUS"],
                             capture_output=True, text=True, check=True).stdout.split()
        limits[group] = set(out)
    assert limits == {"short": {"00:05:00|1"}, "long": {"00:20:00|2"}}


@pytest.mark.slurm
def test_arrays_split_at_max_array_size_run_one_after_another_under_a_parallelism_limit(tmp_path: Path) -> None:
    proc = run_app("behave", tmp_path, *SLURM, "hydra.launcher.max_array_size=2", "hydra.launcher.array_parallelism=1",
                   "mode=sleep", "seconds=2", "value=1,2,3")
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = sorted(manifest_runs(tmp_path / "sweep").values(), key=lambda r: r["index"])
    assert all(r["status"] == "completed" for r in runs)
    first, second = runs[0]["backend_job_id"].split("_")[0], runs[2]["backend_job_id"].split("_")[0]
    assert [r["backend_job_id"] for r in runs] == [f"{first}_0", f"{first}_1", f"{second}_0"]

    def span(job: str) -> tuple[float, float]:
        out = subprocess.run(["sacct", "-n", "-P", "-X", "-j", job, "-o", "Start,End"], capture_output=True,
                             text=True, check=True).stdout.split()
        times = [datetime.fromisoformat(t).timestamp() for line in out for t in line.split("|")]
        return min(times), max(times)

    wait_sacct_final(first, count=2)
    wait_sacct_final(second, count=1)
    assert span(second)[0] >= span(first)[1]  # afterany: the second array waited for the first
    assert max_concurrency(first) == 1


@pytest.mark.slurm
def test_interrupting_the_driver_scancels_its_tasks(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    cmd = [sys.executable, str(APPS / "behave" / "app.py"), "--multirun", f"hydra.sweep.dir={sweep}",
           f"side_dir={tmp_path / 'side'}", *SLURM, "mode=sleep", "seconds=300", "value=1,2"]
    driver = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for(lambda: [r.status for r in journal_records(sweep).values()] == ["running"] * 2, what="both runs to start")
        job = {r.backend_job_id.split("_")[0] for r in journal_records(sweep).values()}.pop()
        driver.send_signal(signal.SIGINT)
        out, _ = driver.communicate(timeout=60)
    finally:
        if driver.poll() is None:
            driver.kill()
    assert driver.returncode != 0, out[-2000:]
    assert {s for s, _ in wait_sacct_final(job, count=2, timeout=60).values()} == {"CANCELLED"}


def journal_records(sweep: Path) -> dict:
    from mfcl_sweeps.state.manifest import SweepManifest

    if not (sweep / ".mfcl" / "journal.jsonl").exists():
        return {}
    return {r.run_id: r for r in SweepManifest(str(sweep)).records().values()}


def journal_ops(sweep: Path) -> list[dict]:
    return [json.loads(line) for line in (sweep / ".mfcl" / "journal.jsonl").read_text().splitlines() if line]


@pytest.mark.slurm
def test_requeue_and_usr2_preemption_resume_from_checkpoints_and_complete_once(tmp_path: Path) -> None:
    pytest.importorskip("sklearn")
    sweep = tmp_path / "sweep"
    cmd = [sys.executable, str(REPO / "example_app" / "train.py"), "--multirun", f"hydra.sweep.dir={sweep}", *SLURM,
           "train.epochs=60", "train.checkpoint_every=20", "train.eval_every=0", "optimizer.lr=0.05,0.1"]
    driver = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              env={**os.environ, "WANDB_MODE": "disabled"})
    try:
        def checkpointed() -> bool:
            recs = journal_records(sweep)
            return len(recs) == 2 and all(r.status == "running" and r.job_dir and
                                          (Path(r.job_dir) / "checkpoint.pt").exists() for r in recs.values())
        # 60 epochs = 1,380 steps: a run that checkpointed first is still training when the other
        # one has (about 100 steps ahead on a loaded machine); what is left after resuming is the cost
        wait_for(checkpointed, timeout=180, what="both runs to write a checkpoint")
        first, second = sorted(journal_records(sweep).values(), key=lambda r: r.index)
        # the two ways a task is taken away: Slurm's requeue (SIGTERM, restart from the script's
        # top) and the preemption/time-limit signal the task answers by requeueing itself
        subprocess.run(["scontrol", "requeue", first.backend_job_id], check=True, timeout=30)
        subprocess.run(["scancel", "--signal=USR2", second.backend_job_id], check=True, timeout=30)
        out, _ = driver.communicate(timeout=400)
    finally:
        if driver.poll() is None:
            driver.kill()
    assert driver.returncode == 0, out[-3000:]
    runs = manifest_runs(sweep)
    assert all(r["status"] == "completed" for r in runs.values()), runs
    for r in runs.values():
        assert r["attempts"] == 2 and r["preemptions"] == 1, r
        result = json.loads((Path(r["job_dir"]) / "result.json").read_text())
        assert result["resumed_from_step"] and result["resumed_from_step"] >= 20, result
        assert result["steps"] > result["resumed_from_step"]
        assert abs(float(r["return_value"]) - result["accuracy"]) < 1e-9
        log = (sweep / "logs" / "runs" / f"{r['run_id']}.log").read_text()
        assert "attempt 2" in log and "resumed from step" in log
        # Slurm's accounting shows the same task id requeued, then completed
        dup = subprocess.run(["sacct", "-n", "-P", "-X", "-D", "-j", r["backend_job_id"], "-o", "JobID,State"],
                             capture_output=True, text=True, check=True).stdout.split()
        assert [line.split("|")[1].split()[0] for line in dup][-1] == "COMPLETED" and len(dup) >= 2, dup
    completions = [op for op in journal_ops(sweep) if op.get("s") == "completed"]
    assert len(completions) == 2  # each run completed exactly once


@pytest.mark.slurm
def test_detach_returns_at_once_then_status_reads_slurm_and_the_aggregate_job_reports(tmp_path: Path) -> None:
    started = time.monotonic()
    proc = run_app("behave", tmp_path, *SLURM, "hydra.launcher.detach=true", "mode=sleep", "seconds=6", "value=1,2")
    assert proc.returncode == 0 and "Detached: 2 job(s) submitted" in proc.stdout + proc.stderr, proc.stderr[-3000:]
    assert time.monotonic() - started < 60
    sweep = tmp_path / "sweep"
    recs = journal_records(sweep)
    job = {r.backend_job_id.split("_")[0] for r in recs.values()}.pop()
    aggregate = {r.extra["slurm_aggregate_job"] for r in recs.values()}
    assert len(aggregate) == 1
    aggregate = aggregate.pop()
    assert not (sweep / "reports" / "summary.md").exists()  # the driver did not aggregate
    wait_for(lambda: status_json(sweep)["counts"].get("running") == 2, what="status to show 2 running")
    assert sorted(r["backend_job_id"] for r in status_json(sweep)["running"]) == [f"{job}_0", f"{job}_1"]
    wait_sacct_final(job, count=2)
    assert wait_sacct_final(aggregate, count=1, timeout=120)[aggregate][0] == "COMPLETED"
    report = (sweep / "reports" / "summary.md").read_text()
    assert "00000_default" in report and "00001_default" in report
    assert status_json(sweep)["counts"] == {"total": 2, "completed": 2}


@pytest.mark.slurm
def test_cancel_scancels_a_running_sweep_and_its_aggregate_job(tmp_path: Path) -> None:
    proc = run_app("behave", tmp_path, *SLURM, "hydra.launcher.detach=true", "mode=sleep", "seconds=300", "value=1,2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    sweep = tmp_path / "sweep"
    wait_for(lambda: status_json(sweep)["counts"].get("running") == 2, what="both runs to start")
    recs = journal_records(sweep)
    job = {r.backend_job_id.split("_")[0] for r in recs.values()}.pop()
    aggregate = next(iter(recs.values())).extra["slurm_aggregate_job"]
    cancel = mfcl_sweeps("cancel", str(sweep))
    assert cancel.returncode == 0 and "cancelled 2 run(s)" in cancel.stdout, cancel.stdout + cancel.stderr
    assert {s for s, _ in wait_sacct_final(job, count=2, timeout=60).values()} == {"CANCELLED"}
    assert wait_sacct_final(aggregate, count=1, timeout=60)[aggregate][0] == "CANCELLED"
    assert status_json(sweep)["counts"] == {"total": 2, "cancelled": 2}


@pytest.mark.slurm
def test_status_shows_a_detached_task_cancelled_behind_its_back_as_failed(tmp_path: Path) -> None:
    proc = run_app("behave", tmp_path, *SLURM, "hydra.launcher.detach=true", "mode=sleep", "seconds=300")
    assert proc.returncode == 0, proc.stderr[-3000:]
    sweep = tmp_path / "sweep"
    (rec,) = journal_records(sweep).values()
    wait_for(lambda: status_json(sweep)["counts"].get("running") == 1, what="the run to start")
    subprocess.run(["scancel", rec.backend_job_id, rec.extra["slurm_aggregate_job"]], check=True, timeout=30)
    wait_sacct_final(rec.backend_job_id, count=1, timeout=60)
    report = status_json(sweep)
    assert report["counts"].get("failed") == 1, report
    assert f"Slurm job {rec.backend_job_id} was cancelled (scancel) (CANCELLED)" == report["failed"][0]["error"]


@pytest.mark.slurm
def test_two_process_torchrun_run_in_one_allocation(tmp_path: Path) -> None:
    proc = run_app("ddp_app", tmp_path, *SLURM, "hydra.launcher.nproc_per_node=2", "hydra.launcher.cpus_per_task=2",
                   timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run,) = manifest_runs(tmp_path / "sweep").values()
    assert run["status"] == "completed" and run["return_value"] == "3"  # all_reduce of ranks 1 + 2
    ranks = {rec["rank"]: rec for rec in (json.loads(p.read_text()) for p in (tmp_path / "side").glob("*.json"))}
    assert sorted(ranks) == [0, 1] and {r["world"] for r in ranks.values()} == {2}
    assert ranks[0]["output_dir"] == ranks[1]["output_dir"] == run["job_dir"]
    assert wait_sacct_final(run["backend_job_id"])[run["backend_job_id"]][0] == "COMPLETED"
    script = next((tmp_path / "sweep" / ".mfcl" / "slurm").glob("*.sh")).read_text()
    assert "scontrol show hostnames" in script and "--nproc-per-node 2" in script


@pytest.mark.slurm
def test_a_failing_torchrun_rank_fails_the_run(tmp_path: Path) -> None:
    proc = run_app("ddp_app", tmp_path, *SLURM, "hydra.launcher.nproc_per_node=2", "hydra.launcher.cpus_per_task=2",
                   "fail_rank=1", timeout=300)
    assert proc.returncode != 0
    (run,) = manifest_runs(tmp_path / "sweep").values()
    assert run["status"] == "failed" and "rank 1" in run["error"] and "fails on purpose" in run["error"], run
    assert wait_sacct_final(run["backend_job_id"])[run["backend_job_id"]][0] == "FAILED"


@pytest.mark.slurm
@pytest.mark.parametrize("launcher_name, overrides", [("mfcl_slurm", POLL)])
class TestMfclSlurmLauncher(LauncherTestSuite):
    pass


@pytest.mark.slurm
@pytest.mark.parametrize("task_launcher_cfg, extra_flags",
                         [({}, ["-m", "hydra/launcher=mfcl_slurm", "hydra/sweeper=mfcl", *POLL])])
class TestMfclSlurmIntegration(IntegrationTestSuite):
    pass
