"""What a Hydra user sees and gets, compared with Hydra's own behaviour (issue 14): job lines,
`--info plugins`, sweep dir vs name, empty sweep files, repeated configs, the git check."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from apprun import APPS, manifest_runs, run_app, side_lines, side_records, status_json


def journal_runs(sweep_dir: Path) -> dict:
    """Records by run id, replayed from the journal (Hydra's sweepers write no snapshot)."""
    from mfcl_sweeps.state.manifest import SweepManifest

    return {r.run_id: r for r in SweepManifest(str(sweep_dir)).records().values()}


def output(proc: subprocess.CompletedProcess) -> str:
    return proc.stdout + proc.stderr


def test_hydra_launcher_job_lines_show_the_users_overrides_only(tmp_path: Path) -> None:
    proc = run_app("behave", tmp_path, "hydra/sweeper=mfcl", "value=1,2")
    assert proc.returncode == 0, output(proc)
    job_lines = [line for line in output(proc).splitlines() if re.search(r"#\d+ : ", line)]
    side = f"side_dir={tmp_path / 'side'}"
    assert [line.split("#", 1)[1] for line in job_lines] == [f"0 : {side} value=1", f"1 : {side} value=2"]
    # the identity still reaches each job, through hydra.job.env_set
    records = side_records(tmp_path)
    assert sorted(records) == ["00000_default_value-1", "00001_default_value-2"]
    for run_id, record in records.items():
        assert record["env"]["MFCL_SWEEP_RUN_ID"] == run_id
        assert record["env"]["MFCL_SWEEP_DIR"] == str(tmp_path / "sweep")


def test_info_plugins_lists_real_plugins_only(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, str(APPS / "behave" / "app.py"), "--info", "plugins"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    listed = {line.strip() for line in proc.stdout.splitlines()}
    ours = {name for name in listed if name.startswith("Mfcl")}
    assert ours == {"MfclSweeper", "MfclLocalLauncher", "MfclTorchrunLauncher", "MfclSlurmLauncher",
                    "MfclPbsLauncher", "MfclSshLauncher", "MfclPoolLauncher"}


def test_an_explicit_sweep_dir_wins_over_the_named_sweep_default(tmp_path: Path) -> None:
    proc = run_app("behave", tmp_path, "hydra/sweeper=mfcl", "hydra.sweeper.name=lr",
                   f"hydra.sweep.dir={tmp_path / 'sweep'}", "value=1,2")
    assert proc.returncode == 0, output(proc)
    assert len(manifest_runs(tmp_path / "sweep")) == 2
    assert not (tmp_path / "multirun").exists()
    assert status_json(tmp_path / "sweep")["sweep_id"] == "lr"


def test_the_name_alone_picks_multirun_name(tmp_path: Path) -> None:
    proc = run_app("behave", tmp_path, "hydra/sweeper=mfcl", "hydra.sweeper.name=lr", "value=1")
    assert proc.returncode == 0, output(proc)
    assert len(manifest_runs(tmp_path / "multirun" / "lr")) == 1


@pytest.mark.parametrize("text", ["{}\n", "", "# nothing yet\n"])
def test_an_empty_sweep_file_is_an_error_naming_the_file(tmp_path: Path, text: str) -> None:
    sweep_file = tmp_path / "sweep.yaml"
    sweep_file.write_text(text)
    proc = run_app("behave", tmp_path, "hydra/sweeper=mfcl", f"hydra.sweeper.sweep_file={sweep_file}")
    assert proc.returncode != 0
    assert re.search(rf"{re.escape(str(sweep_file))}(:\d+)?: the sweep file is empty", output(proc))
    assert "Traceback" not in output(proc)
    assert side_lines(tmp_path, "starts.txt") == []


@pytest.mark.parametrize("launcher", ["basic", "mfcl_local"])
def test_the_mfcl_sweeper_runs_a_repeated_config_once(tmp_path: Path, launcher: str) -> None:
    proc = run_app("behave", tmp_path, "hydra/sweeper=mfcl", f"hydra/launcher={launcher}", "value=1,1,2,1")
    assert proc.returncode == 0, output(proc)
    assert "mfcl: 2 repeated run(s) dropped" in output(proc)
    runs = manifest_runs(tmp_path / "sweep")
    assert sorted(runs) == ["00000_default_value-1", "00001_default_value-2"]
    assert len(side_lines(tmp_path, "completions.txt")) == 2
    totals = status_json(tmp_path / "sweep")
    assert totals["counts"]["total"] == 2 == totals["counts"]["completed"]


def test_under_basic_sweeper_every_job_is_its_own_record(tmp_path: Path) -> None:
    proc = run_app("behave", tmp_path, "hydra/launcher=mfcl_local", "value=1,1,2")
    assert proc.returncode == 0, output(proc)
    runs = journal_runs(tmp_path / "sweep")
    assert sorted(runs) == ["00000_job", "00001_job", "00002_job"]
    assert [runs[r].overrides[-1] for r in sorted(runs)] == ["value=1", "value=1", "value=2"]
    assert status_json(tmp_path / "sweep")["counts"]["total"] == 3


@pytest.mark.slow
def test_optuna_repeating_a_point_gets_a_record_per_trial(tmp_path: Path) -> None:
    # Two possible values, six trials: Optuna repeats points; each trial must stay its own row.
    proc = run_app("behave", tmp_path, "hydra/sweeper=optuna", "hydra/launcher=mfcl_local",
                   "hydra.sweeper.n_trials=6", "hydra.sweeper.n_jobs=2", "value=choice(1,22)")
    assert proc.returncode == 0, output(proc)
    runs = journal_runs(tmp_path / "sweep")
    assert len(runs) == 6
    assert {r.status for r in runs.values()} == {"completed"}


def git(cwd: Path, *args: str) -> None:
    subprocess.run(["git", "-c", "user.email=t@t", "-c", "user.name=t", *args], cwd=cwd, check=True,
                   capture_output=True)


@pytest.fixture
def checkout_behind(tmp_path: Path) -> Path:
    """A clone one fetched commit behind its upstream."""
    git(tmp_path, "init", "-q", "--bare", "-b", "main", "origin.git")
    git(tmp_path, "clone", "-q", "origin.git", "work")
    work = tmp_path / "work"
    (work / "f.txt").write_text("1")
    git(work, "add", "f.txt")
    git(work, "commit", "-qm", "one")
    git(work, "push", "-q", "origin", "HEAD:main")
    git(tmp_path, "clone", "-q", "origin.git", "other")
    (tmp_path / "other" / "f.txt").write_text("2")
    git(tmp_path / "other", "commit", "-qam", "two")
    git(tmp_path / "other", "push", "-q", "origin", "HEAD:main")
    git(work, "fetch", "-q")
    return work


def test_behind_upstream_only_warns_for_a_local_sweep(checkout_behind: Path) -> None:
    proc = run_app("behave", checkout_behind, "hydra/sweeper=mfcl", "value=1,2")
    assert proc.returncode == 0, output(proc)
    assert "1 commit(s) behind origin/main" in output(proc)
    assert len(side_lines(checkout_behind, "completions.txt")) == 2
    plan = json.loads((checkout_behind / "sweep" / "sweep_manifest.json").read_text())
    assert plan["git"]["behind"] == 1


@pytest.mark.parametrize("option", ["hydra.sweeper.require_up_to_date=true", "hydra.sweeper.claim=true",
                                    "hydra.sweeper.cluster=a100"])
def test_behind_upstream_refuses_where_checkouts_share_a_sweep(checkout_behind: Path, option: str) -> None:
    proc = run_app("behave", checkout_behind, "hydra/sweeper=mfcl", "value=1,2", option)
    assert proc.returncode != 0
    assert "1 commit(s) behind origin/main; pull first, or set hydra.sweeper.allow_behind=true" in output(proc)
    assert side_lines(checkout_behind, "starts.txt") == []
    assert run_app("behave", checkout_behind, "hydra/sweeper=mfcl", "value=1,2", option,
                   "hydra.sweeper.allow_behind=true").returncode == 0
