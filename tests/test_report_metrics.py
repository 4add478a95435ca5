"""Priority 1 and 2 of the report: a metric from any app (return value, eval.csv), clean tables,
and seeds aggregated per config with exact statistics."""
from __future__ import annotations

import math
import statistics
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from test_aggregate import BUDGET, record, write_manifest, write_run

from mfcl_sweeps.aggregate import load_sweep, parse_return_value, summarize
from mfcl_sweeps.report import params as params_mod
from mfcl_sweeps.report import stats, tables, write_report

APP = Path(__file__).parent / "apps" / "metrics" / "app.py"


def run_metrics_app(tmp_path: Path, *overrides: str) -> Path:
    sweep = tmp_path / "sweep"
    proc = subprocess.run([sys.executable, str(APP), "--multirun", f"hydra.sweep.dir={sweep}",
                           "hydra/callbacks=mfcl", "hydra.callbacks.mfcl.live=false", *overrides],
                          cwd=tmp_path, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return sweep


def score(lr: float, seed: int = 0) -> float:  # the app's formula
    return round(1.0 - (lr - 0.1) ** 2 * 10 + 0.01 * seed, 6)


def markdown_rows(text: str) -> list[dict]:
    """The rows of the first Markdown table in `text`, as {header: cell}."""
    lines = [ln for ln in text.splitlines() if ln.startswith("|")]
    cells = [[c.strip() for c in ln.strip("|").split("|")] for ln in lines]
    return [dict(zip(cells[0], row)) for row in cells[2:]]


def png_width(path: Path) -> int:
    import matplotlib.image

    return matplotlib.image.imread(path).shape[1]


@pytest.mark.slow
def test_plain_hydra_app_returning_a_float_gets_best_runs_and_plots(tmp_path):
    sweep = run_metrics_app(tmp_path, "lr=0.01,0.1,0.3,1.0")
    md = (sweep / "reports" / "summary.md").read_text()
    assert "- metric: `return_value` (higher is better)" in md
    best = md.split("## Best runs (by `return_value`)")[1].split("##")[0]
    expected = sorted((0.01, 0.1, 0.3, 1.0), key=lambda lr: -score(lr))
    table = markdown_rows(best)
    assert [float(r["lr"]) for r in table] == expected
    assert [float(r["return_value"]) for r in table] == pytest.approx([score(lr) for lr in expected])
    plot = sweep / "reports" / "return_value_vs_lr.png"
    assert plot.exists() and png_width(plot) >= 800
    assert "![return_value vs lr](return_value_vs_lr.png)" in md


@pytest.mark.slow
def test_plain_hydra_app_returning_a_dict_ranks_by_the_callbacks_metric(tmp_path):
    sweep = run_metrics_app(tmp_path, "lr=0.01,0.1,0.3", "ret=dict", "hydra.callbacks.mfcl.metric=val_loss")
    md = (sweep / "reports" / "summary.md").read_text()
    assert "- metric: `val_loss` (lower is better)" in md
    [csv] = (sweep / "reports").glob("summary_*.csv")
    rows = pd.read_csv(csv).set_index("index")
    assert list(rows["val_loss"]) == pytest.approx([round(1 - score(lr), 6) for lr in (0.01, 0.1, 0.3)])
    assert list(rows["acc"]) == pytest.approx([score(lr) for lr in (0.01, 0.1, 0.3)])
    best = md.split("## Best runs (by `val_loss`)")[1].split("##")[0]
    assert best.index("| 0.1 |") < best.index("| 0.01 |") < best.index("| 0.3 |")
    assert (sweep / "reports" / "val_loss_vs_lr.png").exists()
    assert "{'val_loss'" not in md  # the dict is shown as its metric columns, not as a repr


def test_return_value_parsing():
    assert parse_return_value("0.25") == 0.25
    assert parse_return_value("np.float64(0.5)") == 0.5
    assert parse_return_value("tensor(0.75, dtype=torch.float64)") == 0.75
    assert parse_return_value("{'a': 1, 'b': np.float32(2.5), 'c': 'x', 'd': True}") == {"a": 1.0, "b": 2.5}
    assert parse_return_value("'text'") is None and parse_return_value(None) is None
    assert parse_return_value("<object at 0x7f>") is None


def test_eval_csv_wins_over_the_return_value(tmp_path):
    root = tmp_path / "sweep"
    write_run(root / "0", lr=0.1)  # eval.csv: accuracy 0.1 .. 0.4
    write_manifest(root, [record(0, root / "0", return_value="{'accuracy': 0.99, 'other': 3}"),
                          record(1, None, return_value="{'accuracy': 0.5, 'other': 4}")])
    sweep = load_sweep(str(root))
    assert sweep.metric == "accuracy" and not sweep.lower_is_better
    assert list(sweep.runs["accuracy"]) == [0.4, 0.5]  # run 1 has no eval.csv: its dict
    assert list(sweep.runs["other"]) == [3.0, 4.0]


def test_metric_choice_and_direction(tmp_path):
    root = tmp_path / "sweep"
    write_manifest(root, [record(i, None, return_value=repr(v)) for i, v in enumerate((0.3, 0.1, 0.2))])
    assert load_sweep(str(root)).metric == "return_value"
    low = load_sweep(str(root), mode="min")
    assert low.lower_is_better and list(low.runs["return_value"]) == [0.3, 0.1, 0.2]
    budgeted = tmp_path / "b"
    write_manifest(budgeted, [record(0, None, budget={**BUDGET, "target_metric": "val_loss"}, return_value="0.4")])
    chosen = load_sweep(str(budgeted))
    assert (chosen.metric, chosen.lower_is_better, chosen.runs["val_loss"][0]) == ("val_loss", True, 0.4)
    assert load_sweep(str(budgeted), metric="x").metric == "x"  # an explicit metric wins


SIMPLE_OVERRIDES = ["lr=0.1", "lr=1e-3", "lr=-2", "+n=3", "++m=4.5", "opt=adam", "model=dir/name", "x=.5",
                    "name='a b'", "x=[1, 2]", "flag=true", "v=null", "s=\"q r\"", "d={a:1}", "~gone", "t=nan",
                    "k=1_000", "path=/a/b"]


@pytest.mark.parametrize("text", SIMPLE_OVERRIDES)
def test_override_values_equal_hydras_parse(text):
    from mfcl_sweeps.spec import overrides as ov

    hydra = ov.parse_override(text)
    mine = params_mod.parse(text)
    assert mine.key == hydra.key_or_group and mine.deleted == hydra.is_delete()
    if not hydra.is_delete():
        expected = params_mod._hashable(ov.plain_value(hydra.value()))
        assert mine.value == expected or (isinstance(expected, float) and math.isnan(expected)
                                          and math.isnan(mine.value))
        assert type(mine.value) is type(expected)


def test_value_with_a_space_stays_one_parameter_and_injected_overrides_are_hidden(tmp_path):
    root = tmp_path / "sweep"
    injected = ["runtime.budget.enabled=true", "runtime.budget.max_steps=4"]
    write_manifest(root, [record(0, None, overrides=["name='a b'", "x=[1, 2]", *injected], return_value="1.0"),
                          record(1, None, overrides=["name=c", "x=[3]", "runtime.budget.enabled=true",
                                                     "runtime.budget.max_steps=8"], return_value="2.0")])
    sweep = load_sweep(str(root))
    params = params_mod.swept(sweep.overrides, sweep.manifest, sweep.runs.index)
    assert list(params.values.columns) == ["name", "x"]
    assert list(params.values["name"]) == ["a b", "c"] and list(params.values["x"]) == ["[1,2]", "[3]"]
    table = tables.run_table(sweep, params)
    assert list(table["overrides"]) == ["name='a b' x=[1, 2]", "name=c x=[3]"]


def test_tables_drop_empty_zero_and_duplicate_columns_and_show_human_times():
    frame = pd.DataFrame({"run_id": ["a", "b"], "acc": [0.5, 0.25], "return_value": ["0.5", "0.25"],
                          "bytes_per_step": [0.0, 0.0], "energy_Wh": [None, None], "group": ["g", "g"],
                          "duration_s": [0.25, 4000.0], "time_to_target_min": [1.5, float("nan")]})
    kept = tables.clean(frame, keep=("run_id",))
    assert list(kept.columns) == ["run_id", "acc", "duration_s", "time_to_target_min"]
    md = tables.markdown(kept)
    assert "| run_id | acc | duration | time to target |" in md
    assert "| a | 0.5 | 250 ms | 1 min 30 s |" in md and "| b | 0.25 | 1 h 07 min |  |" in md


@pytest.fixture
def seeded(tmp_path):
    """2 lrs x 3 seeds returning known numbers, plus a failed seed that must not count."""
    root = tmp_path / "sweep"
    values = {(0.1, 0): 0.80, (0.1, 1): 0.84, (0.1, 2): 0.79, (0.3, 0): 0.60, (0.3, 1): 0.70, (0.3, 2): 0.62}
    runs = [record(i, None, overrides=[f"lr={lr}", f"seed={seed}"], return_value=repr(v))
            for i, ((lr, seed), v) in enumerate(values.items())]
    runs.append(record(6, None, status="failed", overrides=["lr=0.3", "seed=3"], error="boom"))
    write_manifest(root, runs)
    return root, values


def test_seeds_are_aggregated_per_config_with_exact_statistics(seeded):
    root, values = seeded
    sweep = load_sweep(str(root))
    params = params_mod.swept(sweep.overrides, sweep.manifest, sweep.runs.index)
    assert params.seed_keys == ["seed"] and params.config_keys == ["lr"]
    configs = stats.per_config(sweep.runs, params, sweep.metric, sweep.lower_is_better).set_index("lr")
    t2 = 4.302652729911275  # Student t, 97.5% quantile, 2 degrees of freedom
    for lr in (0.1, 0.3):
        xs = [v for (rate, _), v in values.items() if rate == lr]
        mean, std = statistics.mean(xs), statistics.stdev(xs)
        row = configs.loc[lr]
        assert row["return_value_mean"] == pytest.approx(mean, abs=1e-12)
        assert row["return_value_std"] == pytest.approx(std, abs=1e-12)
        assert row["return_value_n"] == 3
        assert row["return_value_ci95_low"] == pytest.approx(mean - t2 * std / math.sqrt(3), rel=1e-9)
        assert row["return_value_ci95_high"] == pytest.approx(mean + t2 * std / math.sqrt(3), rel=1e-9)
    assert configs.loc[0.3, "n_runs"] == 4 and configs.loc[0.3, "n_failed"] == 1
    assert list(configs.sort_values("rank").index) == [0.1, 0.3]  # best mean first


def test_seed_report_ranks_configs_and_never_plots_the_seed(seeded):
    root, _ = seeded
    files = write_report(str(root))
    md = Path(files.markdown).read_text()
    best = md.split("## Best configs (mean `return_value` over seeds)")[1].split("##")[0]
    assert best.index("| 1 | 0.1 |") < best.index("| 2 | 0.3 |")
    names = sorted(Path(p).name for p in files.plots)
    assert names == ["return_value_vs_lr.png"]  # no seed axis
    assert "seeds: `seed`; 2 configs" in md


def test_seed_key_from_the_spec(tmp_path):
    root = tmp_path / "sweep"
    write_manifest(root, [record(i, None, overrides=["lr=0.1", f"init={i}"], return_value=str(i)) for i in range(3)])
    manifest_path = root / "sweep_manifest.json"
    import json

    data = json.loads(manifest_path.read_text())
    data["spec"] = {"blocks": [{"axes": [{"source": "seeds", "settings": [{"overrides": [f"init={i}"]}
                                                                          for i in range(3)]}]}]}
    manifest_path.write_text(json.dumps(data))
    sweep = load_sweep(str(root))
    params = params_mod.swept(sweep.overrides, sweep.manifest, sweep.runs.index)
    assert params.seed_keys == ["init"] and params.config_keys == []
    assert summarize(str(root))["return_value"].tolist() == [0.0, 1.0, 2.0]


@pytest.mark.parametrize("options, key", [({"mode": "lowest"}, "hydra.callbacks.mfcl.mode"),
                                          ({"live_interval_s": 0}, "hydra.callbacks.mfcl.live_interval_s")])
def test_bad_callback_options_name_the_key_before_anything_runs(options, key):
    from mfcl_sweeps.callbacks import MfclCallback
    from mfcl_sweeps.errors import OptionError

    with pytest.raises(OptionError, match=rf"^{key} must be "):
        MfclCallback(**options)


def test_bad_mode_on_the_command_line_is_one_line(tmp_path, capsys):
    from mfcl_sweeps.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["aggregate", str(tmp_path), "--mode", "lowest"])
    assert exit_.value.code == 2
    assert "argument --mode: invalid choice: 'lowest'" in capsys.readouterr().err


def test_runs_without_a_swept_key_are_labelled_default(tmp_path):
    root = tmp_path / "sweep"
    write_manifest(root, [record(0, None, overrides=["lr=0.1", "opt=adam"], return_value="0.9"),
                          record(1, None, overrides=["lr=0.2", "opt=sgd"], return_value="0.8"),
                          record(2, None, overrides=["lr=0.3"], return_value="0.7")])
    sweep = load_sweep(str(root))
    params = params_mod.swept(sweep.overrides, sweep.manifest, sweep.runs.index)
    assert list(params_mod.labels(params.values["opt"])) == ["adam", "sgd", "(default)"]
    configs = stats.per_config(sweep.runs, params, sweep.metric, sweep.lower_is_better)
    assert list(tables.config_table(configs, sweep.metric)["opt"]) == ["adam", "sgd", "(default)"]
    files = write_report(str(root))
    import matplotlib

    matplotlib.use("Agg")
    from mfcl_sweeps.report import plots

    fig = plots.metric_vs_param(sweep.runs, params, stats.config_labels(sweep.runs, params), sweep.metric, "opt")[2]
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["(default)", "adam", "sgd"]
    plots.close(fig)
    assert any(p.endswith("return_value_vs_opt.png") for p in files.plots)
