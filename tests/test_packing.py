"""Packed array tasks (`hydra.launcher.runs_per_task`, `runs_per_gpu`, `pack_minutes`) on the
real one-node test cluster: a failing run fails alone, `scontrol requeue` reruns only what had not
ended, one run is cancelled alone while its task goes on, status reads each run on its own, runs
side by side overlap in time (and each gets one of the task's GPUs); the same through the PBS
front end (slurm-wlm-torque over the same cluster). Planning (array sizes, time limits, how
pack_minutes and runs_per_gpu size tasks) is checked without a cluster."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from apprun import manifest_runs, mode_of, run_app, side_lines, status_json, wait_for
from services import require_service, wait_sacct_final
from test_templates import session  # noqa: F401 - the fixture: a real Hydra loader over the test app

POLL = ["hydra.launcher.progress=log", "hydra.launcher.poll_min_s=0.3", "hydra.launcher.poll_max_s=2"]
SLURM = ["hydra/sweeper=mfcl", "hydra/launcher=mfcl_slurm", "hydra.launcher.timeout_min=10", *POLL]
PBS = ["hydra/sweeper=mfcl", "hydra/launcher=mfcl_pbs", *POLL]


def test_a_packed_task_composes_its_runs_config_once_before_its_first_run_forks(tmp_path: Path, session) -> None:
    from mfcl_sweeps.backends.pack_task import Task
    from mfcl_sweeps.job.jobspec import JobSpec

    jobs = [JobSpec(overrides=["model=cnn", f"seed={i}"], index=i, run={}, result_path="", sweep_dir=str(tmp_path),
                    session_path="") for i in range(3)]
    task = Task(session, jobs, submitted_at=0.0, restarts=0)
    first = task.templates.prepare(jobs[0].overrides)  # what start() hands the first run's child
    assert first is not None  # not composed again in full in the child
    later = [task.templates.prepare(j.overrides) for j in jobs[1:]]
    assert all(p.base is first.base for p in later)  # composed once for the task
    assert [[o.input_line for o in p.value_overrides] for p in (first, *later)] == [[f"seed={i}"] for i in range(3)]


@pytest.fixture(autouse=True)
def _cluster(request: pytest.FixtureRequest) -> None:
    if request.node.get_closest_marker("slurm"):
        require_service("slurm")


def records(sweep: Path) -> dict:
    from mfcl_sweeps.state.manifest import SweepManifest

    return {r.run_id: r for r in SweepManifest(str(sweep)).records().values()}


def detached_task_of_three(tmp_path: Path, *modes: str, more: tuple[str, ...] = ()) -> Path:
    """Submit (detached) one packed task of three runs in these modes, started in this order; its sweep dir."""
    path = tmp_path / "sweep.yaml"
    path.write_text("groups:\n" + "".join(
        f"  - {{group: g{i}, params: {{mode: [{mode}], value: [{i}], seconds: [300]}}}}\n"
        for i, mode in enumerate(modes)))
    proc = run_app("behave", tmp_path, *SLURM, f"hydra.sweeper.sweep_file={path}", "hydra.launcher.detach=true",
                   "hydra.launcher.runs_per_task=3", *more)
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


def plan_of(options: dict, runs: int = 6, budget_min: float | None = None) -> list:
    """Slurm's plan (pure) of `runs` runs, each with an iso_time budget of `budget_min` when given."""
    import dataclasses

    from test_slurm_plan import backend, requests

    from mfcl_sweeps.model import Budget

    reqs = requests(runs)
    if budget_min is not None:
        reqs = [dataclasses.replace(r, run=dataclasses.replace(r.run, budget=Budget("iso_time", budget_min)))
                for r in reqs]
    return backend(options).plan(reqs)


def test_runs_per_gpu_sizes_tasks_by_the_gpus_they_ask_for() -> None:
    # 2 GPUs x 3 runs each, side by side: one turn of 6 runs per task, the time limit of one run
    (sub,) = plan_of({"gpus_per_node": 2, "runs_per_gpu": 3, "timeout_min": 10}, runs=12)
    assert "--runs-per-task 6 --runs-per-gpu 3" in sub.script and "#SBATCH --array=0-1%2" in sub.script
    assert "#SBATCH --time=10\n" in sub.script
    # 12 runs per task, 6 at a time: two turns; gres names the GPUs as well as gpus_per_node does
    (sub,) = plan_of({"gres": "gpu:a100:2", "runs_per_gpu": 3, "runs_per_task": 12, "timeout_min": 10}, runs=12)
    assert "--runs-per-task 12 --runs-per-gpu 3" in sub.script and "#SBATCH --time=20\n" in sub.script
    # no GPU: runs_per_gpu runs side by side in the task
    (sub,) = plan_of({"runs_per_gpu": 3, "runs_per_task": 6, "timeout_min": 10})
    assert "--runs-per-task 6 --runs-per-gpu 3" in sub.script and "#SBATCH --time=20\n" in sub.script


def test_pack_minutes_fits_runs_by_their_budget_or_timeout() -> None:
    # 10-minute runs in 45 minutes: 4 per task, one after another
    (sub,) = plan_of({"pack_minutes": 45, "timeout_min": 10}, runs=8)
    assert "--runs-per-task 4" in sub.script and "#SBATCH --array=0-1%2" in sub.script
    assert "#SBATCH --time=40\n" in sub.script
    # runs that stop themselves after 2 minutes (iso_time): 22 fit; each keeps its 10-minute timeout
    (sub,) = plan_of({"pack_minutes": 45, "timeout_min": 10}, runs=30, budget_min=2)
    assert "--runs-per-task 22" in sub.script and "#SBATCH --time=220\n" in sub.script
    # side by side, 2 at a time: twice as many fit
    (sub,) = plan_of({"pack_minutes": 45, "timeout_min": 10, "runs_per_gpu": 2}, runs=8)
    assert "--runs-per-task 8 --runs-per-gpu 2" in sub.script and "#SBATCH --time=40\n" in sub.script
    # a run longer than the target still gets a task of its own
    (sub,) = plan_of({"pack_minutes": 5, "timeout_min": 10}, runs=2)
    assert "--runs-per-task" not in sub.script and "#SBATCH --array=0-1%2" in sub.script


def test_pbs_runs_per_gpu_counts_the_tasks_gpus() -> None:
    from test_pbs_render import plan_text

    text = plan_text({"ngpus": 2, "runs_per_gpu": 2, "timeout_min": 30}, 8)
    assert "-J 0-1" in text and "--runs-per-task 4 --runs-per-gpu 2" in text
    assert "walltime=00:30:00" in text and "2 per GPU at a time" in text


def test_pack_minutes_with_runs_per_task_is_refused_in_one_line(tmp_path: Path) -> None:
    proc = run_app("behave", tmp_path, *SLURM, "value=1,2", "hydra.launcher.runs_per_task=4",
                   "hydra.launcher.pack_minutes=30")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert ("hydra.launcher.pack_minutes=30.0: conflicts with runs_per_task=4; set only one of them "
            "(runs_per_task=null)") in proc.stderr
    assert not (tmp_path / "sweep").exists()


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
    assert wait_sacct_final(task)[task] == ("FAILED", "1:0")


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
    assert wait_sacct_final(first.backend_job_id)[first.backend_job_id][0] == "COMPLETED"


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


@pytest.mark.slurm
@pytest.mark.slow
def test_runs_per_gpu_without_gpus_runs_side_by_side_and_a_failing_run_fails_alone(tmp_path: Path) -> None:
    # CPU-only task (the test cluster has no GPU): runs_per_gpu=2 runs two of its four runs at once
    proc = run_app("behave", tmp_path, *SLURM, "mode=sleep,raise,exit,ok", "seconds=5",
                   "hydra.launcher.runs_per_task=4", "hydra.launcher.runs_per_gpu=2")
    assert proc.returncode != 0 and "2 run(s) failed" in proc.stderr, proc.stderr[-3000:]
    runs = {mode_of(r): r for r in manifest_runs(tmp_path / "sweep").values()}
    assert len({r["backend_job_id"] for r in runs.values()}) == 1  # one task
    assert runs["sleep"]["status"] == "completed" and runs["ok"]["status"] == "completed"
    assert runs["raise"]["status"] == "failed" and runs["raise"]["error"] == "ValueError: boom on value 0"
    assert runs["exit"]["status"] == "failed" and runs["exit"]["exit_code"] == 3
    sleep, ok = runs["sleep"], runs["ok"]
    assert sleep["start_time"] < runs["raise"]["start_time"] < sleep["end_time"]  # side by side
    assert sleep["start_time"] < ok["start_time"] < sleep["end_time"]
    # never more than two at once: the third run started only once the second had ended
    assert runs["exit"]["start_time"] >= runs["raise"]["end_time"]
    script = next((tmp_path / "sweep" / ".mfcl" / "slurm").glob("*.sh")).read_text()
    assert "--runs-per-task 4 --runs-per-gpu 2" in script and "#SBATCH --time=20" in script  # 2 turns


@pytest.mark.slurm
@pytest.mark.slow
def test_cancel_of_one_run_side_by_side_stops_it_alone(tmp_path: Path) -> None:
    from apprun import alive

    from mfcl_sweeps.backends.slurm.backend import SlurmBackend
    from mfcl_sweeps.state.manifest import SweepManifest

    sweep = detached_task_of_three(tmp_path, "stubborn", "children", "ok", more=("hydra.launcher.runs_per_gpu=3",))
    first, second, _ = sorted(records(sweep).values(), key=lambda r: r.index)
    wait_for(lambda: (tmp_path / "side" / f"{first.run_id}.json").exists() and
             (tmp_path / "side" / f"{second.run_id}.children").exists(), what="the first two runs to start")
    stubborn = json.loads((tmp_path / "side" / f"{first.run_id}.json").read_text())["pid"]
    other = json.loads((tmp_path / "side" / f"{second.run_id}.json").read_text())["pid"]
    assert SlurmBackend.cancel_records([records(sweep)[first.run_id]]) == [first.config_hash]
    SweepManifest(str(sweep)).transition(first.config_hash, "cancelled", error="cancelled by mfcl-sweeps cancel")
    # it ignores SIGTERM: the task's stop SIGKILLs it after the grace, while its neighbour runs on
    wait_for(lambda: not alive(stubborn), timeout=60, what="the cancelled run to be killed")
    assert alive(other)
    (tmp_path / "side" / "release").touch()
    wait_for(lambda: status_json(sweep)["counts"].get("completed") == 2, timeout=120, what="the other two runs")
    assert status_json(sweep)["counts"] == {"total": 3, "completed": 2, "cancelled": 1}
    assert first.run_id not in side_lines(tmp_path, "completions.txt")
    assert wait_sacct_final(first.backend_job_id)[first.backend_job_id][0] == "COMPLETED"


@pytest.mark.slurm
@pytest.mark.slow
def test_a_requeued_side_by_side_task_reruns_only_what_had_not_ended(tmp_path: Path) -> None:
    sweep = detached_task_of_three(tmp_path, "ok", "children", "children", more=("hydra.launcher.runs_per_gpu=2",))
    first, second, third = sorted(records(sweep).values(), key=lambda r: r.index)
    wait_for(lambda: {second.run_id, third.run_id} <= set(side_lines(tmp_path, "starts.txt")),
             what="the second and third runs to run side by side")
    subprocess.run(["scontrol", "requeue", second.backend_job_id], check=True, timeout=30)
    wait_for(lambda: all(side_lines(tmp_path, "starts.txt").count(r.run_id) == 2 for r in (second, third)),
             timeout=180, what="the requeued task to start both interrupted runs again")
    (tmp_path / "side" / "release").touch()
    wait_for(lambda: status_json(sweep)["counts"].get("completed") == 3, timeout=120, what="all three runs")
    starts = side_lines(tmp_path, "starts.txt")
    assert [starts.count(r.run_id) for r in (first, second, third)] == [1, 2, 2], starts
    recs = records(sweep)
    assert recs[first.run_id].attempts == 1
    assert all(recs[r.run_id].attempts == 2 and recs[r.run_id].preemptions == 1 for r in (second, third))


@pytest.mark.slurm
@pytest.mark.slow
def test_pbs_runs_per_gpu_gives_each_run_one_of_the_tasks_gpus(tmp_path: Path) -> None:
    require_service("pbs")
    # the task's CUDA_VISIBLE_DEVICES as a scheduler sets it for a two-GPU allocation (no GPU is used)
    proc = run_app("behave", tmp_path, *PBS, "mode=sleep,sleep,ok,ok", "seconds=3",
                   "hydra.launcher.runs_per_task=4", "hydra.launcher.runs_per_gpu=1",
                   "hydra.launcher.setup=['export CUDA_VISIBLE_DEVICES=3,5']")
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = sorted(manifest_runs(tmp_path / "sweep").values(), key=lambda r: r["index"])
    seen = [json.loads((tmp_path / "side" / f"{r['run_id']}.json").read_text())["env"]["CUDA_VISIBLE_DEVICES"]
            for r in runs]
    assert seen[:2] == ["3", "5"] and set(seen) == {"3", "5"}, seen  # one GPU each, the least shared
    # side by side: their times overlap (which of two forked at once journals its start first is
    # up to the machine's scheduler)
    assert max(runs[0]["start_time"], runs[1]["start_time"]) < min(runs[0]["end_time"], runs[1]["end_time"])
