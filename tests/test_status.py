"""`mfcl-sweeps status|cancel|resume` on real sweep dirs, through the installed command."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from mfcl_sweeps import model
from mfcl_sweeps.backends.procs import cancel_records, group_members
from mfcl_sweeps.commands.resume import resume_command
from mfcl_sweeps.errors import ManifestError
from mfcl_sweeps.expand import iter_runs
from mfcl_sweeps.liveness import HOST
from mfcl_sweeps.spec import load_spec
from mfcl_sweeps.state.manifest import SweepManifest


def cli(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run(["mfcl-sweeps", *args], capture_output=True, text=True, timeout=120, cwd=cwd)


def synthetic_sweep(sweep_dir, overrides=("a=1,2,3,4", "b=x,y")):
    spec = load_spec(None, cli_overrides=list(overrides))
    manifest = SweepManifest(sweep_dir)
    manifest.record_plan(spec.to_dict(), spec.spec_hash(), 8, cluster="lab")
    return manifest, list(manifest.assign(iter_runs(spec)))


def test_status_json_counts_running_failed_and_eta(tmp_path):
    manifest, runs = synthetic_sweep(tmp_path)
    now = time.time()
    for i, run in enumerate(runs[:3]):
        manifest.transition(run, model.RUNNING, start_time=now - 100, host=HOST, backend="local")
        manifest.transition(run, model.COMPLETED, end_time=now - 100 + 10 * (i + 1), exit_code=0)
    manifest.transition(runs[3], model.RUNNING, start_time=now - 5, host="node7", backend="slurm", backend_job_id="4242")
    manifest.transition(runs[4], model.RUNNING, start_time=now - 5, host="node8", backend="slurm", backend_job_id="4243")
    manifest.transition(runs[5], model.FAILED, exit_code=1, error="RuntimeError: CUDA out of memory")
    out = cli("status", str(tmp_path), "--json")
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["counts"] == {"total": 8, "pending": 2, "running": 2, "completed": 3, "failed": 1}
    assert report["groups"] == {"default": {"completed": 3, "running": 2, "failed": 1, "pending": 2}}
    assert [(r["host"], r["backend_job_id"]) for r in report["running"]] == [("node7", "4242"), ("node8", "4243")]
    assert report["failed"][0]["error"] == "RuntimeError: CUDA out of memory"
    assert report["mean_run_s"] == pytest.approx(20.0)
    assert report["eta_s"] == pytest.approx(4 * 20.0 / 2)  # 4 left, 2 running at once
    assert report["cluster"] == "lab"


def test_status_table_shows_the_error_line_and_hosts(tmp_path):
    manifest, runs = synthetic_sweep(tmp_path)
    manifest.transition(runs[0], model.RUNNING, host="node7", backend="slurm", backend_job_id="4242")
    manifest.transition(runs[1], model.FAILED, exit_code=1, error="ValueError: lr must be positive")
    out = cli("status", str(tmp_path))
    assert out.returncode == 0, out.stderr
    for text in ("pending", "node7", "4242", "ValueError: lr must be positive", "00001_default_a-1_b-y"):
        assert text in out.stdout


def test_status_of_a_dir_without_journal_is_a_one_line_error(tmp_path):
    out = cli("status", str(tmp_path))
    assert out.returncode == 2
    assert out.stderr.strip().count("\n") == 0 and "no sweep journal" in out.stderr


def test_cancel_kills_the_recorded_process_group_and_marks_cancelled(tmp_path):
    manifest, runs = synthetic_sweep(tmp_path)
    # a run whose task started a child of its own: the whole group must go
    job = subprocess.Popen(["sh", "-c", "sleep 300 & sleep 300; wait"], start_new_session=True)
    try:
        deadline = time.monotonic() + 10
        while len(group_members(job.pid)) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(group_members(job.pid)) == 3
        manifest.transition(runs[0], model.RUNNING, host=HOST, pid=job.pid, pgid=job.pid, backend="local")
        manifest.transition(runs[1], model.CLAIMED)
        manifest.transition(runs[2], model.COMPLETED)
        out = cli("cancel", str(tmp_path))
        assert job.wait(timeout=30) != 0
        assert group_members(job.pid) == []
    finally:
        if job.poll() is None:
            os.killpg(job.pid, signal.SIGKILL)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "cancelled 2 run(s)" in out.stdout
    records = SweepManifest(tmp_path).records()
    assert [records[r.config_hash].status for r in runs[:3]] == [model.CANCELLED, model.CANCELLED, model.COMPLETED]
    ok, reason = SweepManifest(tmp_path).should_run(runs[0], "skip_completed")
    assert ok and reason == "cancelled before"
    assert json.loads((tmp_path / "sweep_manifest.json").read_text())["counts"]["cancelled"] == 2


def test_cancel_spares_a_reused_pid(tmp_path):
    manifest, runs = synthetic_sweep(tmp_path)
    other = subprocess.Popen(["sleep", "300"])  # same pid as recorded, but not in the recorded group
    try:
        manifest.transition(runs[0], model.RUNNING, host=HOST, pid=other.pid, pgid=other.pid + 100000,
                            backend="local")
        out = cli("cancel", str(tmp_path))
        assert out.returncode == 0, out.stdout + out.stderr
        assert other.poll() is None
        assert SweepManifest(tmp_path).records()[runs[0].config_hash].status == model.CANCELLED
    finally:
        other.kill()
        other.wait()


def test_local_cancel_leaves_other_hosts_runs_alone(tmp_path):
    manifest, runs = synthetic_sweep(tmp_path)
    mine = subprocess.Popen(["sleep", "300"], start_new_session=True)
    try:
        manifest.transition(runs[0], model.RUNNING, host=HOST, pid=mine.pid, backend="local")
        manifest.transition(runs[1], model.RUNNING, host="elsewhere", pid=mine.pid, backend="local")
        manifest.transition(runs[2], model.RUNNING, host=HOST, pid=999_999_999, backend="local")  # long gone
        records = SweepManifest(tmp_path).records()
        stopped = cancel_records([records[r.config_hash] for r in runs[:3]], grace_s=5)
        assert mine.wait(timeout=10) == -signal.SIGTERM
    finally:
        if mine.poll() is None:
            mine.kill()
    assert sorted(stopped) == sorted([runs[0].config_hash, runs[2].config_hash])


RECORDING_APP = """
import json, sys
from mfcl_sweeps.state.manifest import SweepManifest
from mfcl_sweeps.spec import load_spec
sweep_dir = [a.split("=", 1)[1].strip("'") for a in sys.argv if a.startswith("hydra.sweep.dir=")]
if not sweep_dir:  # the first run: record a plan like the sweeper does
    spec = load_spec(None, cli_overrides=["a=1,2"])
    SweepManifest(sys.argv[1]).record_plan(spec.to_dict(), spec.spec_hash(), 2)
with open(sys.argv[2], "a") as f:
    f.write(json.dumps(sys.argv[1:]) + "\\n")
"""


def test_resume_reruns_the_recorded_command_in_its_cwd(tmp_path):
    app = tmp_path / "app.py"
    app.write_text(RECORDING_APP)
    sweep, calls = tmp_path / "multirun" / "s1", tmp_path / "calls.jsonl"
    subprocess.run([sys.executable, "-u", str(app), str(sweep), str(calls), "--multirun", "lr=0.1"],
                   check=True, cwd=tmp_path)
    out = cli("resume", str(sweep), "hydra.sweeper.resume=rerun_failed_only", cwd="/")
    assert out.returncode == 0, out.stderr
    first, second = [json.loads(line) for line in calls.read_text().splitlines()]
    assert second == [*first, f"hydra.sweep.dir='{sweep}'", "hydra.sweeper.resume=rerun_failed_only"]
    assert str(app) in out.stdout  # the command is printed before it runs


def test_resume_command_replaces_recorded_resume_overrides():
    snapshot = {"sweep_dir": "/s/x y", "command": {
        "python": "/py", "argv": ["-u", "train.py", "-m", "hydra.sweeper.resume=none", "hydra.sweep.dir=/old", "a=1,2"]}}
    assert resume_command(snapshot) == ["/py", "-u", "train.py", "-m", "a=1,2", "hydra.sweep.dir='/s/x y'",
                                        "hydra.sweeper.resume=skip_completed"]
    assert resume_command(snapshot, ["a=3"])[-1] == "a=3"


def test_resume_command_asks_for_redacted_secrets_again():
    snapshot = {"sweep_dir": "/s", "command": {"python": "/py", "argv": ["train.py", "wandb.api_key=***"]}}
    with pytest.raises(ManifestError, match="redacted secret.*wandb.api_key"):
        resume_command(snapshot)
    assert resume_command(snapshot, ["wandb.api_key=abc"])[-1] == "wandb.api_key=abc"
    with pytest.raises(ManifestError, match="no recorded command"):
        resume_command({"sweep_dir": "/s", "command": {}})
