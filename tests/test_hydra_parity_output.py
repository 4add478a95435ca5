"""Job output on the terminal with mfcl launchers (issue 14), `hydra.launcher.output`:
stream (default; prefixed by run id when jobs run at once), failed, quiet. The run logs get
everything in every mode."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from apprun import APPS

APP = APPS / "chatty" / "app.py"


def sweep(tmp_path: Path, *overrides: str) -> tuple[subprocess.CompletedProcess, Path]:
    sweep_dir = tmp_path / "sweep"
    proc = subprocess.run([sys.executable, str(APP), "-m", "hydra/launcher=mfcl_local", f"hydra.sweep.dir={sweep_dir}",
                           "hydra.launcher.progress=log", *overrides], cwd=tmp_path, capture_output=True,
                          text=True, timeout=180)
    return proc, sweep_dir


def test_stream_shows_job_output_as_hydra_does_one_job_at_a_time(tmp_path: Path) -> None:
    proc, sweep_dir = sweep(tmp_path, "hydra.launcher.max_concurrent=1", "+n=1,2")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    for n in (1, 2):
        assert f"hello from job {n}" in lines
        assert f"last words of job {n}" in lines  # a last line without newline still comes out
        assert any(line.endswith(f"logged by job {n}") for line in lines)
    assert lines.index("hello from job 1") < lines.index("last words of job 1") < lines.index("hello from job 2")
    assert "hello from job 1" in (sweep_dir / "logs" / "runs" / "00000_job.log").read_text()


def test_stream_prefixes_lines_with_the_run_id_when_jobs_run_at_once(tmp_path: Path) -> None:
    proc, _ = sweep(tmp_path, "hydra.launcher.max_concurrent=2", "+n=1,2")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert "[00000_job] hello from job 1" in lines and "[00001_job] hello from job 2" in lines
    assert "[00001_job] last words of job 2" in lines
    assert not [line for line in lines if line.startswith("hello from")]


def test_failed_prints_only_a_failed_runs_last_lines(tmp_path: Path) -> None:
    proc, sweep_dir = sweep(tmp_path, "hydra.launcher.output=failed", "+n=1,2", "+fail=false")
    assert "hello from job" not in proc.stdout
    proc, sweep_dir = sweep(tmp_path, "hydra.launcher.output=failed", "+n=1", "+fail=true")
    assert "[00000_job] failed; its last" in proc.stdout
    assert "[00000_job] hello from job 1" in proc.stdout
    assert "[00000_job] RuntimeError: job 1 fails" in proc.stdout


def test_quiet_prints_no_job_output_but_logs_keep_it(tmp_path: Path) -> None:
    proc, sweep_dir = sweep(tmp_path, "hydra.launcher.output=quiet", "+n=1,2")
    assert proc.returncode == 0, proc.stderr
    assert "hello from job" not in proc.stdout + proc.stderr
    for run_id, n in (("00000_job", 1), ("00001_job", 2)):
        log_text = (sweep_dir / "logs" / "runs" / f"{run_id}.log").read_text()
        assert f"hello from job {n}" in log_text and f"logged by job {n}" in log_text


def test_a_bad_output_mode_is_one_line_before_anything_runs(tmp_path: Path) -> None:
    proc, sweep_dir = sweep(tmp_path, "hydra.launcher.output=loud", "+n=1")
    assert proc.returncode != 0
    assert "hydra.launcher.output='loud': must be one of stream, failed, quiet" in proc.stderr
    assert "Traceback" not in proc.stderr and not (sweep_dir / "logs").exists()
