"""The aggregator and report on sweep dirs whose runs wrote real telemetry (with a deterministic
clock) and whose `sweep_manifest.json` follows docs/internals.md."""
from __future__ import annotations

import json
import math

import pytest

from mfcl_sweeps.aggregate import AggregationError, summarize
from mfcl_sweeps.budget import BudgetTracker
from mfcl_sweeps.cli import main as cli_main
from mfcl_sweeps.report import write_report
from mfcl_sweeps.telemetry import Telemetry


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def write_run(job_dir, *, lr: float, steps: int = 4, seconds_per_step: float = 3.0, energy: bool = False,
              metric: str = "accuracy") -> None:
    """A run of `steps` steps of 64 samples; `metric` = lr * step after each step."""
    clock = FakeClock()
    tel = Telemetry(job_dir, budget=BudgetTracker("iso_steps", steps, clock=clock), streams=("timings", "comms"))
    for _ in range(steps):
        clock.now += seconds_per_step
        tel.log_step(samples=64, bytes_per_step=2048)
        tel.log_comms("all_reduce", 2048, 1.0)
        tel.log_eval({metric: round(lr * tel.step, 6)})
        if energy:
            tel.log_energy(360.0)
            tel.log_fidelity({"cosine": 0.5 + 0.1 * tel.step})
    tel.close()


def record(index, job_dir, *, status="completed", group="default", overrides=(), budget=None, **extra):
    return {"run_id": f"{index:05d}_{group}", "config_hash": f"h{index}", "index": index, "group": group,
            "name": None, "overrides": list(overrides), "job_dir": str(job_dir) if job_dir else None,
            "status": status, "attempts": 1, "preemptions": 0, "exit_code": 0 if status == "completed" else 1,
            "error": None, "return_value": None, "budget": budget, "metadata": {}, **extra}


def write_manifest(sweep_dir, runs) -> None:
    sweep_dir.mkdir(parents=True, exist_ok=True)
    (sweep_dir / "sweep_manifest.json").write_text(json.dumps(
        {"version": 1, "sweep_id": "s1", "sweep_dir": str(sweep_dir), "cluster": "local", "spec": {},
         "plans": [], "command": {}, "git": {}, "env": {}, "counts": {}, "runs": runs}))


BUDGET = {"mode": "iso_steps", "limit": 4, "target_metric": "accuracy", "target_value": 0.5}


@pytest.fixture
def sweep(tmp_path):
    """Three telemetry runs (lr 0.1/0.2/0.3), a failed run and a run without telemetry."""
    root = tmp_path / "sweep"
    runs = []
    for i, lr in enumerate((0.1, 0.2, 0.3)):
        write_run(root / str(i), lr=lr, energy=(i == 2))
        runs.append(record(i, root / str(i), overrides=[f"lr={lr}", "model=mlp"], budget=BUDGET,
                           return_value=repr(lr * 4), group="sgd" if i < 2 else "adam"))
    write_run(root / "3", lr=0.4, steps=1)
    runs.append(record(3, root / "3", status="failed", overrides=["lr=0.4", "model=mlp"], budget=BUDGET,
                       error="Traceback (most recent call last):\n  ...\nValueError: diverged"))
    (root / "4").mkdir()
    runs.append(record(4, root / "4", overrides=["lr=0.5", "model=cnn"], return_value="0.77"))
    write_manifest(root, runs)
    return root


def test_summary_values_are_exact(sweep):
    rows = summarize(str(sweep)).set_index("index")
    assert list(rows["status"]) == ["completed", "completed", "completed", "error", "completed"]
    first = rows.loc[0]
    assert first["ips_mean"] == pytest.approx(64 / 3.0)
    assert first["step_time_ms"] == 3000.0 and first["bytes_per_step"] == 2048.0
    assert first["accuracy"] == 0.4
    assert math.isnan(first["time_to_target_min"])  # 0.4 < 0.5: never reached
    assert rows.loc[1, "accuracy"] == 0.8
    assert rows.loc[1, "time_to_target_min"] == pytest.approx(9.0 / 60)  # 0.6 at step 3, 9 s
    assert rows.loc[2, "time_to_target_min"] == pytest.approx(6.0 / 60)  # 0.6 at step 2, 6 s
    assert (rows.loc[0, "budget_mode"], rows.loc[0, "budget_limit"], rows.loc[0, "budget_used"]) == ("iso_steps", 4.0, 4.0)
    assert rows.loc[2, "energy_Wh"] == pytest.approx(4 * 360.0 / 3600)
    assert rows.loc[2, "fidelity_mean"] == pytest.approx(0.75)
    assert math.isnan(rows.loc[0, "energy_Wh"])
    assert rows.loc[2, "return_value"] == repr(0.3 * 4) and rows.loc[2, "group"] == "adam"
    assert rows.loc[0, "overrides"] == "lr=0.1 model=mlp"


def test_failed_run_stays_with_status_error_and_its_error_line(sweep):
    failed = summarize(str(sweep)).set_index("index").loc[3]
    assert failed["status"] == "error" and failed["error"] == "ValueError: diverged"
    assert failed["overrides"] == "lr=0.4 model=mlp"


def test_run_without_telemetry_contributes_status_overrides_return_value(sweep):
    bare = summarize(str(sweep)).set_index("index").loc[4]
    assert (bare["status"], bare["overrides"], bare["return_value"]) == ("completed", "lr=0.5 model=cnn", "0.77")
    assert math.isnan(bare["ips_mean"])
    assert bare["accuracy"] == 0.77  # no eval.csv: the number it returned is its metric


def test_completed_run_missing_declared_artifact_fails_naming_run_and_file(sweep, capsys):
    (sweep / "1" / "timings.csv").unlink()
    with pytest.raises(AggregationError, match=r"completed run 00001_sgd is missing timings\.csv in .*/1"):
        summarize(str(sweep))
    assert cli_main(["aggregate", str(sweep)]) == 2
    err = capsys.readouterr().err
    assert "00001_sgd" in err and "timings.csv" in err
    assert not (sweep / "reports").exists()


def test_failed_run_missing_artifacts_is_not_an_error(sweep):
    (sweep / "3" / "timings.csv").unlink()
    assert summarize(str(sweep)).set_index("index").loc[3, "status"] == "error"


def test_torn_last_row_is_dropped(sweep):
    with open(sweep / "0" / "timings.csv", "a") as fh:
        fh.write("5,15.0,999")  # a writer killed mid-row (telemetry itself never leaves one)
    assert summarize(str(sweep)).set_index("index").loc[0, "step_time_ms"] == 3000.0


def test_lower_is_better_metric_reaches_target_from_above(tmp_path):
    root = tmp_path / "sweep"
    write_run(root / "0", lr=-0.1, metric="val_loss")  # -0.1, -0.2, ...
    write_manifest(root, [record(0, root / "0", budget={**BUDGET, "target_metric": "val_loss", "target_value": -0.25})])
    row = summarize(str(root)).iloc[0]
    assert row["val_loss"] == -0.4 and row["time_to_target_min"] == pytest.approx(9.0 / 60)


def test_target_from_budget_json_when_the_manifest_has_none(tmp_path):
    root = tmp_path / "sweep"
    clock = FakeClock()
    tel = Telemetry(root / "0", budget=BudgetTracker(target_metric="acc", target_value=0.3, clock=clock))
    for step in (1, 2):
        clock.now += 30.0
        tel.log_step(samples=1)
        tel.log_eval({"acc": 0.2 * step})
    tel.close()
    write_manifest(root, [record(0, root / "0")])
    row = summarize(str(root)).iloc[0]
    assert (row["target_metric"], row["acc"], row["time_to_target_min"]) == ("acc", 0.4, 1.0)


def test_moved_sweep_dir_finds_its_runs(sweep, tmp_path):
    moved = tmp_path / "elsewhere"
    sweep.rename(moved)
    assert summarize(str(moved)).set_index("index").loc[1, "accuracy"] == 0.8


def test_no_manifest_is_a_clear_error(tmp_path):
    with pytest.raises(AggregationError, match="no sweep_manifest.json in"):
        summarize(str(tmp_path))


def test_report_has_tables_failures_plots_and_html(sweep):
    import matplotlib.image
    import pandas as pd

    files = write_report(str(sweep), html=True)
    csv = pd.read_csv(files.csv)
    assert len(csv) == 5 and csv.loc[1, "time_to_target_min"] == pytest.approx(0.15)
    md = open(files.markdown).read()
    assert "## Group `sgd` (2 runs)" in md and "## Group `adam` (1 runs)" in md
    assert "| run_id | status | lr | model | accuracy | time to target |" in md
    assert "| [00000_sgd](../0/) | completed | 0.1 | mlp | 0.4 |  | 21.33 | 3 s | 2048 | 4 / 4 steps |" in md
    assert "## Best runs" in md and md.index("00002_adam") < md.index("| [00001_sgd]")  # 1.2 beats 0.8
    assert "- `00003_default` (lr=0.4 model=mlp): ValueError: diverged" in md
    names = sorted(p.rsplit("/", 1)[1] for p in files.plots)
    assert names == ["accuracy_curves.png", "accuracy_vs_lr.png", "accuracy_vs_model.png", "budget_use.png",
                     "parallel_coordinates.png", "step_time_curves.png"]
    for path in files.plots:
        image = matplotlib.image.imread(path)
        assert image.ndim == 3 and image.shape[1] >= 800
        assert f"]({path.rsplit('/', 1)[1]})" in md
    page = open(files.html).read()
    assert page.count('<figure class="plot"') == len(files.plots) and 'id="data-runs"' in page
