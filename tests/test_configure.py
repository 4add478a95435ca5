"""`mfcl-sweeps configure`: the sweep builder on its own, then the real screen driven in tmux
(send-keys, capture-pane): the count shown must be the count `mfcl-sweeps count` gives the
saved file."""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from tmuxdrive import Tmux

from mfcl_sweeps.expand import count
from mfcl_sweeps.project.configure_model import Builder, ValueSyntaxError, log_values, parse_values
from mfcl_sweeps.spec import load_spec

REPO = Path(__file__).resolve().parent.parent
COUNT_ON_SCREEN = re.compile(r"count: (\d+) run\(s\)")


def builder() -> Builder:
    return Builder(leaves={"optimizer.lr": 0.1, "train.epochs": 5, "seed": 0},
                   groups={"model": ["mlp_large", "mlp_small"]}, choices={"model": "mlp_small"})


def saved_count(b: Builder, tmp_path: Path) -> int:
    path = tmp_path / "s.yaml"
    path.write_text(b.text("train.py"))
    return count(load_spec(str(path)))


# -- the builder ----------------------------------------------------------------------------------
def test_values_syntax():
    assert parse_values("0.1, 1e-3, 'a b', true", None) == [0.1, 0.001, "a b", True]
    assert parse_values("[64, 64]", None) == [[64, 64]]  # one list value
    assert parse_values("range(1,4)", None) == "range(1,4)"  # kept: Hydra's sweep, read by count
    assert parse_values("log(1e-4, 1e-1, 4)", None) == log_values(1e-4, 1e-1, 4) == [0.0001, 0.001, 0.01, 0.1]
    assert parse_values("*", ["a", "b"]) == ["a", "b"] and parse_values("glob(mlp_*)", ["mlp_x", "cnn"]) == ["mlp_x"]
    for bad in ("log(0, 1, 3)", "glob(z*)", "range(1,", "interval(0,1)"):
        with pytest.raises(ValueSyntaxError):
            parse_values(bad, ["a"])


def test_screen_count_is_the_saved_files_count(tmp_path):
    b = builder()
    b.set_values("model", "*")
    b.set_values("optimizer.lr", "log(1e-3,1e-1,3)")
    b.set_values("train.epochs", "range(1,4)")
    assert b.preview("train.py").count == saved_count(b, tmp_path) == 2 * 3 * 3
    b.toggle_paired("optimizer.lr")
    b.toggle_paired("train.epochs")
    b.set_seeds("7,11")
    b.add_exclude("model=mlp_large optimizer.lr=0.001")
    assert b.preview("train.py").count == saved_count(b, tmp_path) == (2 * 3 - 1) * 2
    b.set_budget("iso_time 2.5")
    b.set_max_runs("4")
    preview = b.preview("train.py")
    assert preview.count == saved_count(b, tmp_path) == 4
    assert "runtime.budget.max_minutes=2.5" in preview.runs[0] and preview.runs[0].endswith("seed=7")


def test_a_bad_sweep_shows_the_error_instead_of_a_count():
    b = builder()
    b.set_values("optimizer.lr", "0.1,0.2")
    b.set_values("train.epochs", "1,2,3")
    b.toggle_paired("optimizer.lr")
    b.toggle_paired("train.epochs")
    preview = b.preview("train.py")
    assert preview.count is None and "paired lists must have equal lengths" in preview.error
    with pytest.raises(ValueSyntaxError, match="budget 'fast 2'"):
        b.set_budget("fast 2")


# -- the screen, in tmux --------------------------------------------------------------------------
@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "example_app"
    shutil.copytree(REPO / "example_app", root)
    return root


@pytest.fixture
def tui(project: Path):
    sessions = []

    def start(*args: str) -> Tmux:
        sessions.append(Tmux(f"{sys.executable} -m mfcl_sweeps.cli configure {' '.join(args)}", project))
        sessions[-1].wait_for("count: 1 run(s)")
        return sessions[-1]

    yield start
    for s in sessions:
        s.close()


def pick(t: Tmux, key: str, values: str) -> None:
    t.keys("/")
    t.type(key)
    t.keys("Enter")
    t.wait_for(f">  {key} =" if "." in key else f">  [group] {key} =")
    t.keys("Enter")
    t.wait_for(f"{key} values:")
    t.type(values)
    t.keys("Enter")
    t.wait_for(f"-> {values}")


def screen_count(screen: str) -> int:
    return int(COUNT_ON_SCREEN.search(screen).group(1))


def cli_count(project: Path, sweep_file: str) -> int:
    proc = subprocess.run([sys.executable, "-m", "mfcl_sweeps.cli", "count", sweep_file], cwd=project,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return int(proc.stdout)


def test_tmux_two_parameters_grid_save(tui, project):
    t = tui("--out", "sweeps/lr.yaml")
    assert "[group] model = mlp_small  (options: mlp_large, mlp_small)" in t.screen()
    assert "optimizer.lr = 0.1" in t.screen()  # leaf keys with the composed values
    pick(t, "model", "*")
    pick(t, "optimizer.lr", "0.1,0.01,0.001")
    t.keys("w")
    screen = t.wait_for("saved sweeps/lr.yaml")
    shown = screen_count(screen)
    assert shown == cli_count(project, "sweeps/lr.yaml") == 2 * 3
    assert "0: model=mlp_large optimizer.lr=0.1" in screen  # the first runs
    t.keys("q")
    t.wait_for("saved sweeps/lr.yaml\n")
    assert yaml.safe_load((project / "sweeps" / "lr.yaml").read_text())["grid"] == {
        "model": ["mlp_large", "mlp_small"], "optimizer.lr": [0.1, 0.01, 0.001]}


@pytest.mark.slow
def test_tmux_paired_seeds_exclude_and_a_typo(tui, project):
    (project / "sweeps").mkdir()
    (project / "sweeps" / "p.yaml").write_text("# mine\n")
    t = tui("--out", "sweeps/p.yaml")
    pick(t, "optimizer.lr", "log(1e-3,1e-1,3)")
    pick(t, "train.epochs", "range(1,4)")
    t.keys("p")  # train.epochs is selected: paired
    t.keys("/")
    t.type("optimizer.lr")
    t.keys("Enter")
    t.keys("p")
    t.wait_for(">P optimizer.lr")
    t.keys("s")
    t.type("3")
    t.keys("Enter")
    t.wait_for("seeds: 3")
    t.keys("x")
    t.type("train.epochs=2")
    t.keys("Enter")
    t.wait_for("excludes: 1")
    t.keys("b")
    t.type("soon 2")
    t.keys("Enter")
    t.wait_for("error: budget 'soon 2'")
    t.keys("w")
    t.wait_for("sweeps/p.yaml exists: press w again")
    t.keys("w")
    screen = t.wait_for("saved sweeps/p.yaml")
    assert screen_count(screen) == cli_count(project, "sweeps/p.yaml") == (3 - 1) * 3
    doc = yaml.safe_load((project / "sweeps" / "p.yaml").read_text())
    assert doc["paired"] == [{"optimizer.lr": [0.001, 0.01, 0.1], "train.epochs": "range(1,4)"}]


def test_configure_needs_a_terminal(project):
    proc = subprocess.run([sys.executable, "-m", "mfcl_sweeps.cli", "configure"], cwd=project,
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert proc.returncode == 2 and "configure needs a terminal" in proc.stderr and "Traceback" not in proc.stderr


def test_ctrl_c_quits_without_saving(tui, project):
    t = tui("--out", "sweeps/never.yaml")
    pick(t, "optimizer.lr", "0.1,0.01")
    t.keys("C-c")
    screen = t.wait_for("configure: nothing saved")
    assert "Traceback" not in screen and not (project / "sweeps" / "never.yaml").exists()
