"""The manifest: plan recording, index assignment, replay of transitions, resume, snapshot."""
from __future__ import annotations

import json
import multiprocessing
import os
import subprocess
import sys

import pytest

from mfcl_sweeps import model
from mfcl_sweeps.errors import ManifestError
from mfcl_sweeps.expand import count, iter_runs
from mfcl_sweeps.layout import SNAPSHOT_NAME
from mfcl_sweeps.spec import load_spec
from mfcl_sweeps.state.manifest import SweepManifest
from mfcl_sweeps.state.snapshot import load as load_snapshot


def spec_of(*overrides: str):
    return load_spec(None, cli_overrides=list(overrides))


def planned(manifest: SweepManifest, spec) -> list:
    manifest.record_plan(spec.to_dict(), spec.spec_hash(), {"total": count(spec), "default": count(spec)})
    return list(manifest.assign(iter_runs(spec)))


def journal_lines(sweep_dir) -> list[dict]:
    return [json.loads(line) for line in (sweep_dir / ".mfcl" / "journal.jsonl").read_text().splitlines()]


def test_same_spec_gets_expansion_positions_as_indices_again(tmp_path):
    spec = spec_of("a=1,2,3", "b=x,y")
    first = planned(SweepManifest(tmp_path), spec)
    assert [r.index for r in first] == list(range(6))
    assert first[3].run_id == "00003_default_a-2_b-y"
    again = planned(SweepManifest(tmp_path), spec)
    assert [(r.index, r.run_id) for r in again] == [(r.index, r.run_id) for r in first]
    assert [op["op"] for op in journal_lines(tmp_path)] == ["plan"]  # recorded once


def test_edited_grid_keeps_old_indices_and_numbers_new_runs_above(tmp_path):
    old = {r.config_hash: r.index for r in planned(SweepManifest(tmp_path), spec_of("a=1,2,3", "b=x,y"))}
    edited = planned(SweepManifest(tmp_path), spec_of("a=0,1,2,3,4", "b=x,y"))
    for run in edited:
        if run.config_hash in old:
            assert run.index == old[run.config_hash]
        else:
            assert run.index > max(old.values())
    new = [r.index for r in edited if r.config_hash not in old]
    assert len(new) == 4 and len(set(new)) == 4
    # back to the first grid: still its own indices
    assert {r.config_hash: r.index for r in planned(SweepManifest(tmp_path), spec_of("a=1,2,3", "b=x,y"))} == old


def test_started_runs_keep_their_index_even_without_the_plans_index_file(tmp_path):
    manifest = SweepManifest(tmp_path)
    runs = planned(manifest, spec_of("a=1,2,3"))
    manifest.transition(runs[2], model.RUNNING)
    for f in (tmp_path / ".mfcl" / "plans").iterdir():
        f.unlink()  # as if the first driver died before numbering the whole plan
    edited = planned(SweepManifest(tmp_path), spec_of("a=3,4"))
    assert edited[0].config_hash == runs[2].config_hash and edited[0].index == 2
    assert edited[1].index > 2


def _assign_in_process(sweep_dir: str, out: str) -> None:
    spec = spec_of("a=1,2,3,4", "b=x,y,z")
    with open(out, "w") as f:
        json.dump({r.config_hash: r.index for r in planned(SweepManifest(sweep_dir), spec)}, f)


def test_concurrent_workers_with_an_edited_spec_agree_on_indices(tmp_path):
    planned(SweepManifest(tmp_path / "s"), spec_of("a=1,2", "b=x,y,z"))
    outs = [tmp_path / f"o{i}.json" for i in range(4)]
    procs = [multiprocessing.Process(target=_assign_in_process, args=(str(tmp_path / "s"), str(o))) for o in outs]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    maps = [json.loads(o.read_text()) for o in outs]
    assert all(m == maps[0] for m in maps)
    assert len(set(maps[0].values())) == 12


def test_a_100k_run_plan_is_one_journal_line(tmp_path):
    spec = spec_of("a=range(0,1000)", "b=range(0,100)")
    manifest = SweepManifest(tmp_path)
    manifest.record_plan(spec.to_dict(), spec.spec_hash(), count(spec))
    assert count(spec) == 100_000
    assert len(journal_lines(tmp_path)) == 1
    assert manifest.counts() == {"total": 100_000, "pending": 100_000}


def test_replay_counts_attempts_preemptions_and_keeps_last_error(tmp_path):
    manifest = SweepManifest(tmp_path)
    run = planned(manifest, spec_of("a=1"))[0]
    manifest.transition(run, model.RUNNING, host="h1", pid=11, start_time=100.0)
    manifest.transition(run, model.PREEMPTED)
    manifest.transition(run, model.RUNNING, host="h2", pid=12, start_time=200.0)
    manifest.transition(run, model.FAILED, exit_code=1, error="ValueError: boom", end_time=260.0)
    manifest.transition(run.config_hash, model.RUNNING, start_time=300.0)
    manifest.transition(run.config_hash, model.COMPLETED, exit_code=0, return_value="0.5", end_time=330.0,
                        gpu_hours=0.1)
    rec = SweepManifest(tmp_path).records()[run.config_hash]
    assert (rec.status, rec.attempts, rec.preemptions, rec.host, rec.exit_code, rec.error) == \
        (model.COMPLETED, 3, 1, "h2", 0, None)
    assert rec.duration() == 30.0 and rec.return_value == "0.5" and rec.extra == {"gpu_hours": 0.1}
    assert rec.run_id == run.run_id and rec.overrides == ["a=1"]


def test_cancelled_is_not_overwritten_by_the_drivers_report_of_the_kill(tmp_path):
    manifest = SweepManifest(tmp_path)
    a, b = planned(manifest, spec_of("a=1,2"))
    for run in (a, b):
        manifest.transition(run, model.RUNNING)
        manifest.transition(run, model.CANCELLED)
    manifest.transition(a, model.FAILED, exit_code=-15)
    manifest.transition(b, model.COMPLETED, exit_code=0)  # it did finish before the kill landed
    records = manifest.records()
    assert records[a.config_hash].status == model.CANCELLED
    assert records[b.config_hash].status == model.COMPLETED


def test_should_run_per_resume_mode(tmp_path):
    manifest = SweepManifest(tmp_path)
    done, failed, cancelled, interrupted, new = planned(manifest, spec_of("a=1,2,3,4,5"))
    manifest.transition(done, model.COMPLETED)
    manifest.transition(failed, model.FAILED)
    manifest.transition(cancelled, model.CANCELLED)
    manifest.transition(interrupted, model.RUNNING)
    decide = {mode: [manifest.should_run(r, mode) for r in (done, failed, cancelled, interrupted, new)]
              for mode in ("none", "skip_completed", "rerun_failed_only")}
    assert [ok for ok, _ in decide["none"]] == [True] * 5
    assert decide["skip_completed"] == [(False, "completed"), (True, "failed before"), (True, "cancelled before"),
                                        (True, "interrupted"), (True, "new")]
    assert [ok for ok, _ in decide["rerun_failed_only"]] == [False, True, False, False, False]
    with pytest.raises(ManifestError, match="resume='skip'"):
        manifest.should_run(new, "skip")


def test_bad_transitions_are_clear_errors_and_write_nothing(tmp_path):
    manifest = SweepManifest(tmp_path)
    run = planned(manifest, spec_of("a=1"))[0]
    lines = len(journal_lines(tmp_path))
    with pytest.raises(ManifestError, match="run state 'done'"):
        manifest.transition(run, "done")
    with pytest.raises(ManifestError, match="config hash 'nope'"):
        manifest.transition("nope", model.RUNNING)
    assert len(journal_lines(tmp_path)) == lines


def test_assign_needs_a_plan(tmp_path):
    with pytest.raises(ManifestError, match="record_plan"):
        list(SweepManifest(tmp_path).assign(iter_runs(spec_of("a=1"))))


def test_snapshot_matches_the_journal_and_redacts_secrets(tmp_path):
    script = f"""
from mfcl_sweeps.state.manifest import SweepManifest
from mfcl_sweeps.spec import load_spec
from mfcl_sweeps.expand import count, iter_runs
spec = load_spec(None, cli_overrides=["a=1,2,3"])
m = SweepManifest({str(tmp_path)!r})
m.record_plan(spec.to_dict(), spec.spec_hash(), count(spec), cluster="lab")
runs = list(m.assign(iter_runs(spec)))
m.transition(runs[0], "running", host="h", pid=1, backend="local", start_time=10.0, job_dir="/j/0")
m.transition(runs[0], "completed", exit_code=0, return_value="0.9", end_time=12.5)
m.transition(runs[1], "running", host="h", pid=2, backend="local")
m.write_snapshot()
"""
    secrets = dict(WANDB_API_KEY="sekrit-1", HF_TOKEN="sekrit-2", my_password="sekrit-3",
                   AWS_CREDENTIALS_FILE="sekrit-4", HTTPS_PROXY="http://me:sekrit-5@proxy:3128", PLAIN="visible")
    argv = ["-c", script, "wandb.api_key=sekrit-6", "--hf-token", "sekrit-7", "lr=0.1"]
    subprocess.run([sys.executable, *argv], check=True, cwd=tmp_path, env={**os.environ, **secrets})
    snap = load_snapshot(tmp_path)
    text = (tmp_path / SNAPSHOT_NAME).read_text() + (tmp_path / ".mfcl" / "journal.jsonl").read_text()
    assert "sekrit" not in text
    env = snap["env"]
    assert env["WANDB_API_KEY"] == env["HF_TOKEN"] == env["my_password"] == env["AWS_CREDENTIALS_FILE"] == "***"
    assert env["HTTPS_PROXY"] == "http://me:***@proxy:3128" and env["PLAIN"] == "visible"
    assert snap["command"]["argv"] == ["-c", script, "wandb.api_key=***", "--hf-token", "***", "lr=0.1"]
    assert snap["command"]["cwd"] == str(tmp_path) and snap["command"]["python"] == sys.executable
    assert snap["command"]["versions"]["hydra"] == "1.3.8"
    assert snap["cluster"] == "lab" and snap["sweep_dir"] == str(tmp_path)
    assert snap["counts"] == {"total": 3, "pending": 1, "running": 1, "completed": 1}
    assert snap["plans"][0]["count"] == 3
    replayed = SweepManifest(tmp_path).records()
    assert [r["config_hash"] for r in snap["runs"]] == [h for h, _ in sorted(replayed.items(), key=lambda kv: kv[1].index)]
    first = snap["runs"][0]
    assert (first["status"], first["start_time"], first["end_time"], first["job_dir"], first["cluster"]) == \
        ("completed", 10.0, 12.5, "/j/0", "lab")
    assert set(first) >= {"run_id", "config_hash", "index", "group", "name", "overrides", "job_dir", "status",
                          "attempts", "preemptions", "exit_code", "error", "start_time", "end_time", "host",
                          "backend", "backend_job_id", "cluster", "return_value", "budget", "metadata"}
