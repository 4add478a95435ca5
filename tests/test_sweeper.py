"""The mfcl sweeper end to end on a real app: dry runs, bad input, identity, per-run resources."""
import json
import subprocess
import sys
from pathlib import Path

from apprun import manifest_runs, run_app, side_records

MFCL = ["hydra/sweeper=mfcl", "hydra/launcher=mfcl_local", "hydra.launcher.progress=log"]


def test_dry_run_prints_runs_and_launches_nothing(tmp_path: Path) -> None:
    proc = run_app("behave", tmp_path, *MFCL, "value=1,2,3", "mode=ok,raise", "hydra.sweeper.dry_run=true")
    assert proc.returncode == 0, proc.stderr
    lines = [ln for ln in proc.stdout.splitlines() if ln.split(" ", 1)[0] == "" and "_default_" in ln]
    assert len(lines) == 6
    assert "6 run(s); nothing launched" in proc.stdout
    assert "-m mfcl_sweeps.worker" in proc.stdout  # the exact command each run would get
    # ... naming session and job files only a launch writes: said before the commands
    assert "# illustrative, not runnable as printed: a launch first writes the session and job files" in proc.stdout
    assert not (tmp_path / "sweep").exists() and not (tmp_path / "side").exists()


def test_bad_sweep_file_fails_before_anything_is_written(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("paired:\n  - {value: [1, 2], seconds: [1]}\n")
    proc = run_app("behave", tmp_path, *MFCL, f"hydra.sweeper.sweep_file={bad}")
    assert proc.returncode != 0
    first = proc.stderr.strip().splitlines()[0]
    assert "bad.yaml:2" in first and "paired" in first and "Traceback" not in proc.stderr
    assert not (tmp_path / "sweep").exists()


def test_a_typo_in_a_late_value_is_rejected_before_the_first_job(tmp_path: Path) -> None:
    spec = tmp_path / "grid.yaml"
    spec.write_text(json.dumps({"grid": {"train.lr": [0.001 * i for i in range(1, 40)],
                                         "model": ["mlp_small", "mlp_large", "mlp_lagre"]}}))
    app = Path(__file__).parent.parent / "example_app" / "train.py"
    proc = subprocess.run([sys.executable, str(app), "--multirun", "hydra/sweeper=mfcl", "hydra/launcher=mfcl_local",
                           f"hydra.sweeper.sweep_file={spec}", f"hydra.sweep.dir={tmp_path / 'sweep'}"],
                          capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert proc.returncode != 0
    assert "mlp_lagre" in proc.stderr.splitlines()[0]
    assert not (tmp_path / "sweep").exists()


def test_failed_runs_named_after_all_ran(tmp_path: Path) -> None:
    proc = run_app("behave", tmp_path, *MFCL, "mode=raise,ok", "value=1,2")
    assert proc.returncode != 0
    runs = manifest_runs(tmp_path / "sweep")
    assert sorted(r["status"] for r in runs.values()) == ["completed", "completed", "failed", "failed"]
    failed = sorted(r["run_id"] for r in runs.values() if r["status"] == "failed")
    assert f"2 run(s) failed: {', '.join(failed)}" in proc.stderr


def test_per_run_timeout_travels_outside_the_task_overrides(tmp_path: Path) -> None:
    spec = tmp_path / "groups.yaml"
    spec.write_text(json.dumps({"grid": [
        {"group": "quick", "params": {"mode": "sleep", "seconds": 30}, "ttl": "3s"},
        {"group": "free", "params": {"mode": "ok"}},
    ]}))
    proc = run_app("behave", tmp_path, *MFCL, f"hydra.sweeper.sweep_file={spec}", "hydra.sweeper.fail_on_error=false")
    assert proc.returncode == 0, proc.stderr
    runs = {r["group"]: r for r in manifest_runs(tmp_path / "sweep").values()}
    assert runs["free"]["status"] == "completed"
    assert runs["quick"]["status"] == "failed" and "timed out after 3s" in runs["quick"]["error"]
    keys = {o.split("=", 1)[0] for o in runs["quick"]["overrides"]}
    assert keys == {"mode", "seconds", "side_dir"}


def test_named_sweep_resumes_and_seeds_repeat_configs(tmp_path: Path) -> None:
    env = {"MFCL_STORAGE_ROOT": str(tmp_path / "store")}
    args = [*MFCL, "value=1,2", "hydra.sweeper.name=seeded", "hydra.sweeper.seeds=2"]
    proc = run_app("behave", tmp_path, *args, env=env)
    assert proc.returncode == 0, proc.stderr
    assert len(side_records(tmp_path)) == 4
    proc = run_app("behave", tmp_path, *args, "value=1,2,3", env=env)  # one new value
    assert proc.returncode == 0, proc.stderr
    assert "skipping 4 run(s); 4 completed" in proc.stdout + proc.stderr
    runs = manifest_runs(tmp_path / "store" / "seeded")
    indices = sorted(r["index"] for r in runs.values())
    assert len(runs) == 6 and indices[:4] == [0, 1, 2, 3] and min(indices[4:]) > 3  # old runs keep theirs
