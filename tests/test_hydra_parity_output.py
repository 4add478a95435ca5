"""Job output on the terminal with mfcl launchers (issue 14), `hydra.launcher.output`:
stream (default: Hydra's console, in job order; prefixed by run id once jobs running at once
would wait too long), failed, quiet. The run logs get everything in every mode."""
from __future__ import annotations

import io
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

from apprun import APPS

from mfcl_sweeps.launch.output import JobOutput

APP = APPS / "chatty" / "app.py"


def sweep(tmp_path: Path, *overrides: str, progress: str = "log") -> tuple[subprocess.CompletedProcess, Path]:
    sweep_dir = tmp_path / "sweep"
    proc = subprocess.run([sys.executable, str(APP), "-m", "hydra/launcher=mfcl_local", f"hydra.sweep.dir={sweep_dir}",
                           f"hydra.launcher.progress={progress}", *overrides], cwd=tmp_path, capture_output=True,
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


def test_stream_is_hydras_console_in_job_order_when_jobs_run_at_once(tmp_path: Path) -> None:
    # progress=auto off a terminal: the jobs' own lines are the progress, as with Hydra's launcher
    proc, _ = sweep(tmp_path, "hydra.launcher.max_concurrent=3", "+n=1,2,3", progress="auto")
    assert proc.returncode == 0, proc.stderr
    lines = [line.split("[HYDRA] ", 1)[-1] for line in proc.stdout.splitlines()]
    expected = ["Launching 3 jobs locally"]
    for n in (1, 2, 3):
        expected += [f"\t#{n - 1} : +n={n}", f"hello from job {n}",
                     *(line for line in lines if line.endswith(f"logged by job {n}")), f"last words of job {n}"]
    assert lines == expected, proc.stdout


def follow(out: JobOutput, tmp_path: Path, n: int) -> tuple[SimpleNamespace, Path]:
    log = tmp_path / f"{n:05d}_job.log"
    log.touch()
    run = SimpleNamespace(index=n, overrides=(f"n={n}", "hydra.job.id=x"), run_id=f"{n:05d}_job")
    request = SimpleNamespace(run=run, key=f"{run.run_id}.1", log_path=str(log))
    out.submitting(request)
    return request, log


def console(hold_s: float) -> tuple[JobOutput, io.StringIO]:
    text = io.StringIO()
    return JobOutput("stream", out=text, announce=lambda line: text.write(f"[HYDRA] {line}\n"), hold_s=hold_s), text


def test_a_later_jobs_output_waits_for_the_earlier_jobs(tmp_path: Path) -> None:
    out, text = console(hold_s=60)
    (first, log0), (second, log1) = follow(out, tmp_path, 0), follow(out, tmp_path, 1)
    log1.write_text("second job done\n")
    out.finished(second.key, ok=True)
    log0.write_text("first job line\npartial")
    out.pump()
    assert text.getvalue() == "[HYDRA] \t#0 : n=0\nfirst job line\n"
    out.finished(first.key, ok=True)
    assert text.getvalue().splitlines()[2:] == ["partial", "[HYDRA] \t#1 : n=1", "second job done"]
    assert not out.followed


def test_output_waiting_longer_than_the_hold_comes_as_written_prefixed(tmp_path: Path) -> None:
    out, text = console(hold_s=0.2)
    (first, log0), (_, log1) = follow(out, tmp_path, 0), follow(out, tmp_path, 1)
    log0.write_text("a\n")
    log1.write_text("b\n")
    out.pump()
    assert text.getvalue() == "[HYDRA] \t#0 : n=0\na\n"  # b waits for job 0
    time.sleep(0.3)
    out.pump()
    lines = text.getvalue().splitlines()[2:]
    assert lines[0].startswith("[HYDRA] a job's output waited over 0.2s for the jobs before it")
    assert lines[1:] == ["[HYDRA] \t#1 : n=1  [00001_job]", "[00001_job] b"]
    with log0.open("a") as f:
        f.write("c\n")
    out.finished(first.key, ok=True)
    assert text.getvalue().splitlines()[-1] == "[00000_job] c"


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
