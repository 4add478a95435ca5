"""Packed array tasks (`hydra.launcher.runs_per_task`) on the real one-node test cluster: a
failing run fails alone, `scontrol requeue` reruns only what had not ended, one run is cancelled
alone while its task goes on, status reads each run on its own; the same through the PBS front
end (slurm-wlm-torque over the same cluster). Dry runs show the array sizes (no cluster)."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from apprun import manifest_runs, mode_of, run_app, side_lines, status_json, wait_for
from services import require_service, wait_sacct_final

POLL = ["hydra.launcher.progress=log", "hydra.launcher.poll_min_s=0.3", "hydra.launcher.poll_max_s=2"]
SLURM = ["hydra/sweeper=mfcl", "hydra/launcher=mfcl_slurm", "hydra.launcher.timeout_min=10", *POLL]
PBS = ["hydra/sweeper=mfcl", "hydra/launcher=mfcl_pbs", *POLL]


@pytest.fixture(autouse=True)
def _cluster(request: pytest.FixtureRequest) -> None:
    if request.node.get_closest_marker("slurm"):
        require_service("slurm")


def records(sweep: Path) -> dict:
    from mfcl_sweeps.state.manifest import SweepManifest

    return {r.run_id: r for r in SweepManifest(str(sweep)).records().values()}


def detached_task_of_three(tmp_path: Path, *modes: str) -> Path:
    """Submit (detached) one packed task of three runs in these modes, run in this order; its sweep dir."""
    path = tmp_path / "sweep.yaml"
    path.write_text("groups:\n" + "".join(
        f"  - {{group: g{i}, params: {{mode: [{mode}], value: [{i}], seconds: [300]}}}}\n"
        for i, mode in enumerate(modes)))
    proc = run_app("behave", tmp_path, *SLURM, f"hydra.sweeper.sweep_file={path}", "hydra.launcher.detach=true",
                   "hydra.launcher.runs_per_task=3")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return tmp_path / "sweep"


def test_dry_run_packs_a_thousand_runs_into_one_array_of_ten_tasks(tmp_path: Path) -> None:
    proc = run_app("behave", tmp_path, *SLURM, "hydra.sweeper.dry_run=true", "value=range(1000)",
                   "hydra.launcher.runs_per_task=100", "hydra.launcher.max_array_size=10")
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert out.count("$ sbatch ") == 1, out[-2000:]  # unpacked, max_array_size=10 makes it 100 arrays
    assert "#SBATCH --array=0-9%10" in out and "--runs-per-task 100" in out
    assert "#SBATCH --time=1000" in out  # 100 runs of 10 minutes each, one after another


def test_torchrun_and_multi_task_runs_are_not_packed() -> None:
    from test_slurm_plan import backend, requests

    from mfcl_sweeps.model import RunResources

    subs = backend({"runs_per_task": 4}).plan(requests(6, {5: RunResources(nproc_per_node=2)}))
    assert [(len(s.requests), s.extra["runs_per_task"]) for s in subs] == [(5, 4), (1, 1)]
    assert "--runs-per-task 4" in subs[0].script and "--array=0-1%2" in subs[0].script
    assert "--runs-per-task" not in subs[1].script and "--nproc-per-node 2" in subs[1].script
    assert all(s.extra["runs_per_task"] == 1 for s in backend({"runs_per_task": 4, "tasks_per_node": 2}).plan(requests(4)))


def test_bad_runs_per_task_fails_in_one_line_before_anything_is_written(tmp_path: Path) -> None:
    proc = run_app("behave", tmp_path, *PBS, "value=1,2", "hydra.launcher.runs_per_task=0")
    assert proc.returncode != 0
    assert "hydra.launcher.runs_per_task=0: must be >= 1; set 1 or more" in proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "sweep").exists()


def test_cancel_stops_a_task_whole_only_when_all_its_runs_are_cancelled(tmp_path: Path) -> None:
    from mfcl_sweeps.backends.packing import PACK_DIR, PACK_RUNS, request_cancel
    from mfcl_sweeps.state.records import RunRecord

    markers = tmp_path / "cancel"

    def rec(run_id: str, task: str, runs: int) -> RunRecord:
        return RunRecord(config_hash=run_id, run_id=run_id, backend_job_id=task,
                         extra={PACK_RUNS: runs, PACK_DIR: str(markers)})

    # task 7_0 holds a and b (both cancelled); 7_1 holds c, d, e (one cancelled); 7_2 lost a run to a retry
    whole = request_cancel([rec("a", "7_0", 2), rec("b", "7_0", 2), rec("c", "7_1", 3), rec("f", "7_2", 2)])
    assert whole == ["7_0"]
    assert sorted(p.name for p in markers.iterdir()) == ["a", "b", "c", "f"]


@pytest.mark.slurm
@pytest.mark.slow
def test_a_failing_run_fails_alone_and_the_task_goes_on(tmp_path: Path) -> None:
    proc = run_app("behave", tmp_path, *SLURM, "mode=raise,exit,segfault,ok", "hydra.launcher.runs_per_task=4")
    assert proc.returncode != 0 and "3 run(s) failed" in proc.stderr, proc.stderr[-3000:]
    runs = {mode_of(r): r for r in manifest_runs(tmp_path / "sweep").values()}
    assert runs["ok"]["status"] == "completed" and runs["ok"]["return_value"] == "1.0"
    assert runs["raise"]["status"] == "failed" and runs["raise"]["error"] == "ValueError: boom on value 0"
    assert runs["exit"]["status"] == "failed" and runs["exit"]["exit_code"] == 3
    assert runs["segfault"]["status"] == "failed" and runs["segfault"]["exit_code"] == -11
    assert "SIGSEGV" in runs["segfault"]["error"]
    (task,) = {r["backend_job_id"] for r in runs.values()}  # one sbatch, one task, four runs
    assert sorted(side_lines(tmp_path, "completions.txt")) == [runs["ok"]["run_id"]]
    # the scheduler is told the truth about the task: a run failed in it
    assert wait_sacct_final(task.split("_")[0], count=1)[task] == ("FAILED", "1:0")


@pytest.mark.slurm
@pytest.mark.slow
def test_a_requeued_task_reruns_only_what_had_not_ended(tmp_path: Path) -> None:
    sweep = detached_task_of_three(tmp_path, "ok", "children", "ok")
    first, second, third = sorted(records(sweep).values(), key=lambda r: r.index)
    wait_for(lambda: second.run_id in side_lines(tmp_path, "starts.txt"), what="the second run to start")
    # status reads each run: the first ended, the second runs, the third waits its turn
    report = status_json(sweep)
    assert report["counts"].get("completed") == 1 and report["counts"].get("running") == 1, report
    assert records(sweep)[third.run_id].status == "pending"
    subprocess.run(["scontrol", "requeue", second.backend_job_id], check=True, timeout=30)
    wait_for(lambda: side_lines(tmp_path, "starts.txt").count(second.run_id) == 2, timeout=180,
             what="the requeued task to start the interrupted run again")
    (tmp_path / "side" / "release").touch()  # the second run may finish now
    wait_for(lambda: status_json(sweep)["counts"].get("completed") == 3, timeout=120, what="all three runs")
    starts = side_lines(tmp_path, "starts.txt")
    assert [starts.count(r.run_id) for r in (first, second, third)] == [1, 2, 1], starts
    recs = records(sweep)
    assert recs[first.run_id].attempts == 1 and recs[third.run_id].attempts == 1
    assert recs[second.run_id].attempts == 2 and recs[second.run_id].preemptions == 1
    assert recs[second.run_id].attempt == 2
    assert sorted(side_lines(tmp_path, "completions.txt")) == sorted(r.run_id for r in (first, second, third))


@pytest.mark.slurm
@pytest.mark.slow
def test_cancel_of_one_packed_run_stops_it_alone(tmp_path: Path) -> None:
    from mfcl_sweeps.backends.slurm.backend import SlurmBackend
    from mfcl_sweeps.state.manifest import SweepManifest

    sweep = detached_task_of_three(tmp_path, "sleep", "ok", "ok")
    wait_for(lambda: status_json(sweep)["counts"].get("running") == 1, what="the first run to start")
    first = min(records(sweep).values(), key=lambda r: r.index)
    # what `mfcl-sweeps cancel` does, for this one run: stop it through its backend, journal it
    assert SlurmBackend.cancel_records([first]) == [first.config_hash]
    SweepManifest(str(sweep)).transition(first.config_hash, "cancelled", error="cancelled by mfcl-sweeps cancel")
    wait_for(lambda: status_json(sweep)["counts"].get("completed") == 2, timeout=120, what="the other two runs")
    assert status_json(sweep)["counts"] == {"total": 3, "completed": 2, "cancelled": 1}
    assert side_lines(tmp_path, "completions.txt") == [r.run_id for r in sorted(records(sweep).values(),
                                                                                    key=lambda r: r.index)][1:]
    # the task was not scancelled: it ran its other runs and ended on its own
    assert wait_sacct_final(first.backend_job_id.split("_")[0], count=1)[first.backend_job_id][0] == "COMPLETED"


@pytest.mark.slurm
@pytest.mark.slow
def test_pbs_packs_runs_and_a_failing_one_fails_alone(tmp_path: Path) -> None:
    require_service("pbs")
    proc = run_app("behave", tmp_path, *PBS, "mode=raise,ok,exit", "hydra.launcher.runs_per_task=2")
    assert proc.returncode != 0 and "2 run(s) failed" in proc.stderr, proc.stderr[-3000:]
    runs = {mode_of(r): r for r in manifest_runs(tmp_path / "sweep").values()}
    assert runs["ok"]["status"] == "completed"
    assert runs["raise"]["status"] == "failed" and runs["raise"]["error"] == "ValueError: boom on value 0"
    assert runs["exit"]["status"] == "failed" and runs["exit"]["exit_code"] == 3
    ids = {r["backend_job_id"] for r in runs.values()}
    assert len(ids) == 2 and len({i.split("[")[0] for i in ids}) == 1, ids  # one qsub, two tasks
    script = next((tmp_path / "sweep" / ".mfcl" / "pbs").glob("*.sh")).read_text()
    assert "#PBS -J 0-1" in script and "mfcl_sweeps.backends.pack_task" in script
    assert "#PBS -l walltime=02:00:00" in script  # two runs of 60 minutes, one after another
