"""A failed run's traceback (issue 14): whole in its run log and its manifest record under every
launcher, Hydra's own included; the ends of the first few printed at the end of the sweep, whole
with HYDRA_FULL_ERROR=1."""
from __future__ import annotations

from pathlib import Path

import pytest
from apprun import run_app

# (sweeper/launcher overrides, the run ids the sweep gives)
SETUPS = {
    "mfcl-sweeper+hydra-launcher": (["hydra/sweeper=mfcl"], ["00000_default_value-1", "00001_default_value-2"]),
    "mfcl-sweeper+mfcl_local": (["hydra/sweeper=mfcl", "hydra/launcher=mfcl_local"],
                                ["00000_default_value-1", "00001_default_value-2"]),
    "basic-sweeper+mfcl_local": (["hydra/launcher=mfcl_local"], ["00000_job", "00001_job"]),
    # joblib runs jobs in worker processes and pickles their returns back (the traceback is lost
    # in the pickle unless kept where the job ran)
    "mfcl-sweeper+joblib": (["hydra/sweeper=mfcl", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2"],
                            ["00000_default_value-1", "00001_default_value-2"]),
}
USER_FRAME = 'behave/app.py", line'


def records(sweep_dir: Path) -> dict:
    from mfcl_sweeps.state.manifest import SweepManifest

    return {r.run_id: r for r in SweepManifest(str(sweep_dir)).records().values()}


@pytest.mark.parametrize("setup", list(SETUPS))
def test_traceback_in_run_log_record_and_end_summary(tmp_path: Path, setup: str) -> None:
    overrides, run_ids = SETUPS[setup]
    proc = run_app("behave", tmp_path, *overrides, "mode=raise", "value=1,2")
    assert proc.returncode != 0
    sweep = tmp_path / "sweep"
    recs = records(sweep)
    for run_id, value in zip(run_ids, (1, 2)):
        log_text = (sweep / "logs" / "runs" / f"{run_id}.log").read_text()
        assert USER_FRAME in log_text and f"ValueError: boom on value {value}" in log_text
        tb = recs[run_id].extra["traceback"]
        assert tb.startswith("Traceback (most recent call last)")
        assert USER_FRAME in tb and 'raise ValueError(f"boom on value {cfg.value}")' in tb
    out = proc.stdout + proc.stderr
    summary = out[out.index("2 run(s) failed\n"):]
    assert f"--- run {run_ids[0]} (last 6 lines)" in summary
    assert "ValueError: boom on value 1" in summary and USER_FRAME in summary
    assert f"full log: {sweep / 'logs' / 'runs' / run_ids[1]}.log" in summary
    assert "HYDRA_FULL_ERROR=1 prints the tracebacks whole" in summary


def test_hydra_full_error_prints_them_whole_and_chains_the_jobs_frames(tmp_path: Path) -> None:
    proc = run_app("behave", tmp_path, "hydra/launcher=mfcl_local", "mode=raise", "value=1,2",
                   env={"HYDRA_FULL_ERROR": "1"})
    out = proc.stdout + proc.stderr
    summary = out[out.index("2 run(s) failed\n"):]
    assert "--- run 00000_job\nTraceback (most recent call last):" in summary
    # Hydra's BasicSweeper re-raises the first failure in the driver: the job's frames come with it
    assert "RemoteTraceback" in out and "The above exception was the direct cause" in out
    assert out.count(USER_FRAME) >= 3


def test_only_the_first_few_failures_are_shown(tmp_path: Path) -> None:
    proc = run_app("behave", tmp_path, "hydra/sweeper=mfcl", "mode=raise", "value=1,2,3,4,5")
    out = proc.stdout + proc.stderr
    assert out.count("--- run ") == 3
    assert f"--- 2 more failed run(s): their logs are in {tmp_path / 'sweep' / 'logs' / 'runs'}/" in out
