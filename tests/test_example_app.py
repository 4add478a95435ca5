"""example_app/train.py for real: Hydra composition, torch training, telemetry, checkpoint/resume,
torchrun DDP, and an mfcl sweep of it ending in a report."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
APP = REPO / "example_app" / "train.py"

torch = pytest.importorskip("torch")
pytest.importorskip("sklearn")


def compose(*overrides: str):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(REPO / "example_app" / "conf"), version_base="1.3"):
        return hydra_compose(config_name="config", overrides=list(overrides))


def train(run_dir: Path, *overrides: str) -> float:
    sys.path.insert(0, str(APP.parent))
    try:
        from train import train as train_fn
    finally:
        sys.path.remove(str(APP.parent))
    return train_fn(compose(*overrides), run_dir=str(run_dir))


def steps_logged(run_dir: Path) -> list[int]:
    return [int(line.split(",", 1)[0]) for line in (run_dir / "timings.csv").read_text().splitlines()[1:]]


def test_run_returns_and_saves_accuracy(tmp_path):
    accuracy = train(tmp_path, "train.epochs=2", "model=mlp_large", "optimizer=adam")
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["accuracy"] == accuracy > 0.8 and result["steps"] == 46
    assert steps_logged(tmp_path) == list(range(1, 47))
    evals = (tmp_path / "eval.csv").read_text().splitlines()
    assert evals[-2].startswith("46,") and evals[-2].split(",")[2:] == ["accuracy", repr(accuracy)]
    declared = json.loads((tmp_path / "telemetry.json").read_text())["artifacts"]
    assert all((tmp_path / f).exists() for f in declared)


def test_budget_stop_then_resume_reproduces_the_uninterrupted_run(tmp_path):
    whole = train(tmp_path / "whole", "train.epochs=3")
    stopped = train(tmp_path / "split", "train.epochs=3", "runtime.budget.enabled=true", "runtime.budget.max_steps=30")
    first = json.loads((tmp_path / "split" / "result.json").read_text())
    assert first["steps"] == 30 and first["stopped_by_budget"] and stopped != whole
    resumed = train(tmp_path / "split", "train.epochs=3", "runtime.budget.enabled=true", "runtime.budget.max_steps=500")
    second = json.loads((tmp_path / "split" / "result.json").read_text())
    assert second["resumed_from_step"] == 30 and second["steps"] == 69
    assert resumed == whole  # same batches, same RNG: bit-identical
    assert steps_logged(tmp_path / "split") == list(range(1, 70))
    assert json.loads((tmp_path / "split" / "budget.json").read_text())["used"] == 69


@pytest.mark.slow
def test_killed_run_resumes_from_its_checkpoint(tmp_path):
    run_dir = tmp_path / "job"
    cmd = [sys.executable, str(APP), "train.epochs=400", "train.checkpoint_every=20", f"hydra.run.dir={run_dir}"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (run_dir / "checkpoint.pt").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    time.sleep(0.2)
    os.kill(proc.pid, signal.SIGKILL)  # preempted: no clean shutdown
    proc.wait()
    saved = torch.load(run_dir / "checkpoint.pt")["step"]
    assert saved % 20 == 0 and saved < 400 * 23
    subprocess.run([*cmd[:-1], f"train.max_steps={saved + 15}", f"hydra.run.dir={run_dir}"], check=True,
                   capture_output=True, timeout=120)
    result = json.loads((run_dir / "result.json").read_text())
    assert result["resumed_from_step"] == saved and result["steps"] == saved + 15
    assert steps_logged(run_dir) == list(range(1, saved + 16))  # no duplicates, no torn rows


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("torchrun") is None, reason="torchrun not installed")
def test_torchrun_two_ranks_average_gradients_and_rank0_writes(tmp_path):
    run_dir = tmp_path / "job"
    proc = subprocess.run(["torchrun", "--standalone", "--nproc_per_node", "2", str(APP), "train.epochs=1",
                           f"hydra.run.dir={run_dir}"], capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    comms = (run_dir / "comms.csv").read_text().splitlines()
    assert comms[0] == "step,time_s,op,bytes,time_ms,world_size"
    nbytes = (64 * 64 + 64 + 64 * 10 + 10) * 4  # mlp_small's fp32 gradients
    rows = [r.split(",") for r in comms[1:]]
    assert len(rows) == 12 and {r[2] for r in rows} == {"all_reduce"}  # 1438 train samples, 719 per rank
    assert {int(r[3]) for r in rows} == {nbytes} and {r[5] for r in rows} == {"2"}
    assert json.loads((run_dir / "result.json").read_text())["samples"] == 1438


def test_shipped_sweep_file_expands():
    proc = subprocess.run([sys.executable, "-m", "mfcl_sweeps.cli", "count", str(REPO / "conf/sweeps/example_iso_time.yaml")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "12"


SMALL_SWEEP = textwrap.dedent("""
    grid:
      - group: sgd
        params: {optimizer: sgd, optimizer.lr: [0.05, 0.1], train.epochs: 500}
        budget: {mode: iso_time, limit: 0.005, target_metric: accuracy, target_value: 0.8}
      - group: adam
        params: {model: mlp_large, optimizer: adam, train.epochs: 500}
        budget: {mode: iso_steps, limit: 40, target_metric: accuracy, target_value: 0.8}
""")


@pytest.mark.slow
def test_example_sweep_report_matches_the_runs_csvs(tmp_path):
    import matplotlib.image
    import pandas as pd

    (tmp_path / "sweep.yaml").write_text(SMALL_SWEEP)
    sweep = tmp_path / "sweep"
    proc = subprocess.run([sys.executable, str(APP), "--multirun", "hydra/sweeper=mfcl", "hydra/launcher=mfcl_local",
                           f"hydra.sweeper.sweep_file={tmp_path / 'sweep.yaml'}", f"hydra.sweep.dir={sweep}",
                           "hydra/callbacks=mfcl"], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    [csv] = (sweep / "reports").glob("summary_*.csv")
    rows = pd.read_csv(csv)
    assert list(rows["group"]) == ["sgd", "sgd", "adam"] and set(rows["status"]) == {"completed"}
    for row in rows.itertuples():
        job = Path(row.job_dir)
        timings = pd.read_csv(job / "timings.csv")
        evals = pd.read_csv(job / "eval.csv")
        budget = json.loads((job / "budget.json").read_text())
        result = json.loads((job / "result.json").read_text())
        assert row.ips_mean == pytest.approx(timings["ips"].mean())
        assert row.step_time_ms == pytest.approx(timings["step_time_ms"].mean())
        assert row.accuracy == evals[evals.metric == "accuracy"]["value"].iloc[-1] == result["accuracy"]
        assert row.budget_used == pytest.approx(budget["used"]) and row.budget_mode == budget["mode"]
        assert float(row.return_value) == pytest.approx(result["accuracy"])
        reached = evals[(evals.metric == "accuracy") & (evals.value >= 0.8)]
        if len(reached):
            assert row.time_to_target_min == pytest.approx(reached["time_s"].iloc[0] / 60)
    assert rows.loc[2, "budget_used"] == 40 and rows.loc[2, "budget_mode"] == "iso_steps"
    plots = sorted(p.name for p in (sweep / "reports").glob("*.png"))
    assert {"accuracy_vs_model.png", "accuracy_vs_optimizer.lr.png", "accuracy_vs_optimizer.png",
            "accuracy_curves.png", "budget_use.png", "step_time_curves.png"} <= set(plots)
    for name in plots:
        assert matplotlib.image.imread(sweep / "reports" / name).shape[1] >= 800
    md = (sweep / "reports" / "summary.md").read_text()
    assert "## Group `sgd` (2 runs)" in md and "## Group `adam` (1 runs)" in md
