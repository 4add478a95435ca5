"""`hydra/callbacks=mfcl` with sweepers that know nothing of mfcl: real `--multirun` subprocesses
of a deterministic telemetry stub task (its clock is simulated: 6 s per step)."""
from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from hydra.core.utils import JobReturn, JobStatus
from omegaconf import OmegaConf

from mfcl_sweeps.callbacks import MfclCallback
from mfcl_sweeps.state.manifest import SweepManifest

STUB_APP = textwrap.dedent("""
    import hydra
    from mfcl_sweeps.telemetry import Telemetry

    @hydra.main(config_path="conf", config_name="config", version_base="1.3")
    def main(cfg):
        now = [0.0]
        tel = Telemetry.from_config(cfg, clock=lambda: now[0], streams=("timings", "comms", "eval"))
        while not tel.should_stop():
            now[0] += 6.0
            tel.log_step(samples=32, bytes_per_step=int(1000 * cfg.lr))
            tel.log_comms("all_reduce", int(1000 * cfg.lr), 2.0)
            tel.log_eval({"accuracy": min(1.0, round(cfg.lr * tel.step, 6))})
        tel.close()
        if cfg.lr > 0.35:
            raise ValueError(f"diverged at lr={cfg.lr}")
        return cfg.lr * 10

    if __name__ == "__main__":
        main()
""")
STUB_CONFIG = textwrap.dedent("""
    lr: 0.1
    runtime:
      budget: {enabled: true, max_minutes: 0.5, target_metric: accuracy, target_value: 0.5}
""")
MINE = "mine:\n  _target_: hydra.experimental.callbacks.PickleJobInfoCallback\n"


def run_stub(tmp_path: Path, *overrides: str, check: bool = True) -> subprocess.CompletedProcess:
    (tmp_path / "conf" / "hydra" / "callbacks").mkdir(parents=True, exist_ok=True)
    (tmp_path / "app.py").write_text(STUB_APP)
    (tmp_path / "conf" / "config.yaml").write_text(STUB_CONFIG)
    (tmp_path / "conf" / "hydra" / "callbacks" / "mine.yaml").write_text(MINE)
    proc = subprocess.run([sys.executable, "app.py", "--multirun", "hydra.sweep.dir=sweep", *overrides],
                          cwd=tmp_path, capture_output=True, text=True, timeout=180)
    if check:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def summary(sweep: Path):
    import pandas as pd

    [csv] = sorted((sweep / "reports").glob("summary_*.csv"))
    return pd.read_csv(csv).set_index("index")


def test_basic_sweeper_sweep_gets_manifest_and_exact_report(tmp_path):
    run_stub(tmp_path, "lr=0.1,0.2,0.3", "hydra/callbacks=mfcl")
    sweep = tmp_path / "sweep"
    manifest = json.loads((sweep / "sweep_manifest.json").read_text())
    assert manifest["counts"] == {"total": 3, "completed": 3}
    assert [r["job_dir"] for r in manifest["runs"]] == [str(sweep / str(i)) for i in range(3)]
    assert manifest["command"]["argv"][-1] == "hydra/callbacks=mfcl"
    rows = summary(sweep)
    assert list(rows["overrides"]) == ["lr=0.1", "lr=0.2", "lr=0.3"]
    assert list(rows["status"]) == ["completed"] * 3
    assert list(rows["ips_mean"]) == pytest.approx([32 / 6.0] * 3)
    assert list(rows["step_time_ms"]) == [6000.0] * 3
    assert list(rows["bytes_per_step"]) == [100.0, 200.0, 300.0]
    # 5 steps of 6 s exhaust 0.5 minutes; accuracy = lr * step, target 0.5
    assert list(rows["accuracy"]) == [0.5, 1.0, 1.0]
    assert list(rows["time_to_target_min"]) == pytest.approx([0.5, 0.3, 0.2])
    assert list(rows["budget_mode"]) == ["iso_time"] * 3
    assert list(rows["budget_limit"]) == [0.5] * 3 and list(rows["budget_used"]) == pytest.approx([0.5] * 3)
    assert list(rows["return_value"]) == [1.0, 2.0, float(repr(0.3 * 10))]
    assert (sweep / "reports" / "summary.md").exists() and (sweep / "reports" / "accuracy_vs_lr.png").exists()


def test_failed_job_journaled_and_reported_by_aggregate_command(tmp_path):
    proc = run_stub(tmp_path, "lr=0.2,0.4", "hydra/callbacks=mfcl", check=False)
    assert proc.returncode != 0  # BasicSweeper raises, so Hydra never calls on_multirun_end
    sweep = tmp_path / "sweep"
    assert not (sweep / "reports" / "summary.md").exists()  # only the live page (reports/index.html)
    cli = subprocess.run([sys.executable, "-m", "mfcl_sweeps.cli", "aggregate", str(sweep)],
                         capture_output=True, text=True, timeout=120)
    assert cli.returncode == 0, cli.stderr
    rows = summary(sweep)
    assert list(rows["status"]) == ["completed", "error"]
    assert rows.loc[1, "error"] == "ValueError: diverged at lr=0.4"
    assert rows.loc[1, "accuracy"] == 1.0  # its telemetry is still read
    assert "ValueError: diverged at lr=0.4" in (sweep / "reports" / "summary.md").read_text()


def test_optuna_sweeper_sweep_gets_manifest_and_report(tmp_path):
    run_stub(tmp_path, "hydra/sweeper=optuna", "lr=interval(0.05,0.3)", "hydra.sweeper.n_trials=3",
             "hydra.sweeper.direction=maximize", "hydra.sweeper.sampler.seed=7", "hydra/callbacks=mfcl")
    sweep = tmp_path / "sweep"
    manifest = json.loads((sweep / "sweep_manifest.json").read_text())
    assert manifest["counts"] == {"total": 3, "completed": 3}
    rows = summary(sweep)
    lrs = [float(o.split("=")[1]) for o in rows["overrides"]]
    assert list(rows["return_value"]) == pytest.approx([lr * 10 for lr in lrs])
    assert list(rows["bytes_per_step"]) == [float(int(1000 * lr)) for lr in lrs]
    assert list(rows["accuracy"]) == pytest.approx([min(1.0, round(lr * 5, 6)) for lr in lrs])


def test_user_callbacks_and_mfcl_together(tmp_path):
    run_stub(tmp_path, "lr=0.1,0.2", "hydra/callbacks=[mine,mfcl]")
    sweep = tmp_path / "sweep"
    assert all((sweep / str(i) / ".hydra" / "job_return.pickle").exists() for i in range(2))  # mine ran
    assert list(summary(sweep)["status"]) == ["completed", "completed"]  # mfcl ran


def job_config(tmp_path: Path, **env_set: str):
    return OmegaConf.create({"hydra": {
        "runtime": {"cwd": str(tmp_path), "output_dir": str(tmp_path / "sweep" / "0")},
        "sweep": {"dir": "sweep"}, "job": {"num": 0, "env_set": env_set},
        "overrides": {"task": ["lr=0.1"]}, "sweeper": {"_target_": "x.BasicSweeper"},
        "launcher": {"_target_": "x.BasicLauncher"}}})


def completed(value) -> JobReturn:
    ret = JobReturn()
    ret.status, ret.return_value = JobStatus.COMPLETED, value
    return ret


def test_callback_journals_foreign_jobs_only(tmp_path):
    callback = MfclCallback()
    mfcl_job = job_config(tmp_path, MFCL_SWEEP_ID="s")
    callback.on_job_start(config=mfcl_job, task_function=None)
    callback.on_job_end(config=mfcl_job, job_return=completed(1.0))
    assert not (tmp_path / "sweep" / ".mfcl").exists()  # the mfcl worker journals these itself

    foreign = job_config(tmp_path)
    callback.on_job_start(config=foreign, task_function=None)
    [rec] = SweepManifest(tmp_path / "sweep").records().values()
    assert (rec.status, rec.run_id, rec.pid) == ("running", "00000_job", os.getpid())
    callback.on_job_end(config=foreign, job_return=completed(1.5))
    [rec] = SweepManifest(tmp_path / "sweep").records().values()
    assert (rec.status, rec.return_value, rec.job_dir) == ("completed", "1.5", str(tmp_path / "sweep" / "0"))


def test_detached_launch_gets_snapshot_but_no_report(tmp_path):
    callback = MfclCallback()
    config = job_config(tmp_path)
    callback.on_job_start(config=config, task_function=None)
    config.hydra.launcher.detach = True
    callback.on_multirun_end(config=config)
    assert json.loads((tmp_path / "sweep" / "sweep_manifest.json").read_text())["runs"][0]["status"] == "running"
    assert not (tmp_path / "sweep" / "reports").exists()


def test_callback_is_picklable():
    import cloudpickle

    callback = MfclCallback(html=True, metric="val_loss")
    for module in (pickle, cloudpickle):
        copy = pickle.loads(module.dumps(callback))
        assert (copy.html, copy.metric, copy.report) == (True, "val_loss", True)


@pytest.mark.slow
def test_submitit_launcher_jobs_journal_from_their_own_processes(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    run_stub(tmp_path, "lr=0.1,0.2", "hydra/launcher=submitit_local", "hydra/callbacks=mfcl")
    sweep = tmp_path / "sweep"
    runs = json.loads((sweep / "sweep_manifest.json").read_text())["runs"]
    assert [r["status"] for r in runs] == ["completed", "completed"]
    assert len({r["pid"] for r in runs}) == 2  # each journaled by its own submitit job process
    assert list(summary(sweep)["accuracy"]) == [0.5, 1.0]
