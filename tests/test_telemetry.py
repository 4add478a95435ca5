"""Telemetry streams, budget tracker and resume, on real files and processes."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from mfcl_sweeps.budget import BudgetConfigError, BudgetTracker
from mfcl_sweeps.model import ENV_RUN_DIR
from mfcl_sweeps.telemetry import Telemetry, TelemetryError


class FakeClock:
    """Deterministic seconds, advanced by the test."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def lines(path) -> list[str]:
    return path.read_text().splitlines()


def test_streams_write_exact_rows_and_declare_artifacts(tmp_path):
    clock = FakeClock()
    budget = BudgetTracker("iso_steps", 10, clock=clock)
    tel = Telemetry(tmp_path, budget=budget, streams=("timings", "comms"), world_size=2)
    for _ in range(2):
        clock.now += 0.5
        tel.log_step(samples=32, tokens=64, bytes_per_step=1024)
        tel.log_comms("all_reduce", 1024, 1.5)
    tel.log_eval({"accuracy": 0.75, "val_loss": 0.5})
    tel.log_energy(7.2)
    tel.log_fidelity({"cosine": 0.99})
    tel.close()

    assert lines(tmp_path / "timings.csv") == [
        "step,time_s,step_time_ms,samples,tokens,ips,bytes_per_step",
        "1,0.5,500.0,32,64,64.0,1024", "2,1.0,500.0,32,64,64.0,1024"]
    assert lines(tmp_path / "comms.csv")[1:] == ["1,0.5,all_reduce,1024,1.5,2", "2,1.0,all_reduce,1024,1.5,2"]
    assert lines(tmp_path / "eval.csv")[1:] == ["2,1.0,accuracy,0.75", "2,1.0,val_loss,0.5"]
    assert lines(tmp_path / "energy.csv")[1:] == ["2,1.0,7.2"]
    assert lines(tmp_path / "fidelity.csv")[1:] == ["2,1.0,cosine,0.99"]
    declared = json.loads((tmp_path / "telemetry.json").read_text())
    assert declared["artifacts"] == ["timings.csv", "comms.csv", "eval.csv", "energy.csv", "fidelity.csv",
                                     "budget.json"]
    budget_json = json.loads((tmp_path / "budget.json").read_text())
    assert budget_json | {"elapsed_min": 0} == {
        "mode": "iso_steps", "limit": 10.0, "unit": "steps", "used": 2.0, "exhausted": False, "steps": 2,
        "samples": 64, "tokens": 128, "elapsed_min": 0, "target_metric": None, "target_value": None}


def test_declared_streams_exist_before_any_row(tmp_path):
    Telemetry(tmp_path, streams=("timings", "comms", "eval"))
    assert lines(tmp_path / "eval.csv") == ["step,time_s,metric,value"]
    assert json.loads((tmp_path / "telemetry.json").read_text())["artifacts"] == [
        "timings.csv", "comms.csv", "eval.csv", "budget.json"]


@pytest.mark.parametrize("key, value, steps_until_stop", [
    ("max_minutes", 0.05, 6),   # 6 steps of 0.5 s = 3 s = 0.05 min
    ("max_steps", 4, 4),
    ("max_samples", 100, 4),    # 32 samples per step
    ("max_tokens", 300, 5),     # 64 tokens per step
])
def test_budget_modes_stop_at_the_limit(tmp_path, key, value, steps_until_stop):
    clock = FakeClock()
    cfg = {"runtime": {"budget": {"enabled": True, key: value}}}
    tel = Telemetry.from_config(cfg, run_dir=str(tmp_path), clock=clock)
    steps = 0
    while not tel.should_stop():
        clock.now += 0.5
        tel.log_step(samples=32, tokens=64)
        steps += 1
    tel.close()
    assert steps == steps_until_stop
    written = json.loads((tmp_path / "budget.json").read_text())
    assert written["exhausted"] is True and written["limit"] == value
    assert written["mode"] == {"max_minutes": "iso_time", "max_steps": "iso_steps",
                               "max_samples": "iso_samples", "max_tokens": "iso_tokens"}[key]


def test_disabled_budget_counts_but_never_stops(tmp_path):
    tel = Telemetry.from_config({"runtime": {"budget": {"enabled": False, "max_steps": 1}}}, run_dir=str(tmp_path))
    for _ in range(3):
        tel.log_step(samples=1)
    assert not tel.should_stop() and tel.budget.usage.steps == 3 and tel.budget.used() is None


@pytest.mark.parametrize("budget, message", [
    ({"enabled": True}, "none of runtime.budget.max_minutes"),
    ({"enabled": True, "max_steps": 3, "max_minutes": 1}, "runtime.budget.max_minutes, runtime.budget.max_steps"),
    ({"enabled": True, "max_steps": 0}, "runtime.budget.max_steps=0 must be > 0"),
    ({"enabled": True, "max_samples": "lots"}, "runtime.budget.max_samples='lots' is not a number"),
])
def test_bad_budget_config_is_one_clear_error(budget, message):
    with pytest.raises(BudgetConfigError, match=message.replace(".", r"\.").replace("(", r"\(")):
        BudgetTracker.from_config(budget)


def test_bad_stream_and_values_are_rejected(tmp_path):
    tel = Telemetry(tmp_path)
    with pytest.raises(TelemetryError, match="unknown telemetry stream 'gpu'"):
        tel.declare("gpu")
    with pytest.raises(TelemetryError, match="contains a comma"):
        tel.log_comms("all,reduce", 1, 1.0)


def test_run_dir_from_env_else_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv(ENV_RUN_DIR, str(tmp_path / "job"))
    assert Telemetry().run_dir == str(tmp_path / "job")
    monkeypatch.delenv(ENV_RUN_DIR)
    with pytest.raises(TelemetryError, match="no run dir"):
        Telemetry()


def test_only_rank_zero_writes_but_every_rank_counts(tmp_path):
    clock = FakeClock()
    tel = Telemetry(tmp_path / "r1", budget=BudgetTracker("iso_steps", 2, clock=clock), rank=1)
    tel.log_step(samples=8)
    tel.log_step(samples=8)
    tel.close()
    assert tel.should_stop()
    assert not (tmp_path / "r1").exists()


def test_resume_drops_rows_after_checkpoint_and_keeps_budget(tmp_path):
    clock = FakeClock()
    tel = Telemetry(tmp_path, budget=BudgetTracker("iso_time", 1.0, clock=clock), streams=("timings", "eval"))
    for step in range(1, 11):
        clock.now += 1.0
        tel.log_step(samples=4)
        if step == 6:
            state = tel.state_dict()
            tel.log_eval({"accuracy": 0.5})
            tel.checkpoint()
    tel.log_eval({"accuracy": 0.9})
    # killed here; the restarted job starts a fresh clock and restores the checkpoint
    clock2 = FakeClock()
    tel2 = Telemetry(tmp_path, budget=BudgetTracker("iso_time", 1.0, clock=clock2), streams=("timings",))
    tel2.load_state_dict(state)
    assert [ln.split(",")[0] for ln in lines(tmp_path / "timings.csv")[1:]] == ["1", "2", "3", "4", "5", "6"]
    assert lines(tmp_path / "eval.csv")[1:] == ["6,6.0,accuracy,0.5"]
    clock2.now += 1.0
    tel2.log_step(samples=4)
    tel2.close()
    assert lines(tmp_path / "timings.csv")[-1] == "7,7.0,1000.0,4,0,4.0,"
    assert json.loads((tmp_path / "budget.json").read_text())["steps"] == 7
    # eval was declared by the first attempt only: still required
    assert "eval.csv" in json.loads((tmp_path / "telemetry.json").read_text())["artifacts"]


WRITER = textwrap.dedent("""
    import sys
    from mfcl_sweeps.telemetry import Telemetry
    tel = Telemetry(sys.argv[1], streams=("timings", "eval"))
    print("ready", flush=True)
    while True:
        tel.log_step(samples=1000000, tokens=123456789, bytes_per_step=987654321)
        tel.log_eval({"accuracy": 0.123456789, "val_loss": 1.23456789})
""")


def test_kill_leaves_only_complete_rows(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    time.sleep(0.5)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    timings = (tmp_path / "timings.csv").read_text()
    evals = (tmp_path / "eval.csv").read_text()
    assert timings.endswith("\n") and evals.endswith("\n")
    rows = timings.splitlines()[1:]
    assert len(rows) > 100
    assert all(len(r.split(",")) == 7 for r in rows)
    assert [int(r.split(",")[0]) for r in rows] == list(range(1, len(rows) + 1))
    assert all(len(r.split(",")) == 4 for r in evals.splitlines()[1:])
