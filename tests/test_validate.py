"""Validation against a real Hydra app (tests/fixtures/app): real composition, typed nodes."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
from hydra import initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.singleton import Singleton
from hydra.types import RunMode

from mfcl_sweeps.errors import SweepSpecError
from mfcl_sweeps.spec import SpecOptions, load_spec
from mfcl_sweeps.validate import validate_spec

APP = Path(__file__).parent / "fixtures" / "app"
sys.path.insert(0, str(APP))
import schema  # noqa: E402  (the app's typed schema, registered for this module's tests only)


class CountingLoader:
    """The real config loader, counting how many full compositions validation asks for."""

    def __init__(self, loader):
        self.loader, self.compositions = loader, 0

    def load_sweep_config(self, master, overrides):
        self.compositions += 1
        return self.loader.load_sweep_config(master, overrides)

    def get_group_options(self, *args, **kwargs):
        return self.loader.get_group_options(*args, **kwargs)


@pytest.fixture(scope="module")
def app():
    # Registered here, not at import: a ConfigStore node from this test-only module would
    # otherwise reach every later test's pickled session, and fresh job interpreters cannot
    # import it.
    before = Singleton.get_state()
    schema.register()
    with initialize_config_dir(config_dir=str(APP / "conf"), version_base=None):
        loader = GlobalHydra.instance().config_loader()
        master = loader.load_configuration("config", overrides=[], run_mode=RunMode.MULTIRUN)
        yield loader, master
    Singleton.set_state(before)


def check(app, cli=(), **options):
    loader, master = app
    counting = CountingLoader(loader)
    validate_spec(load_spec(None, cli_overrides=list(cli), options=SpecOptions(**options)), counting, master)
    return counting.compositions


def test_a_good_sweep_passes(app):
    check(app, grid={"optimizer.lr": [0.1, 0.01], "model": ["mlp", "cnn"], "batch_size": [16, 32],
                     "amp_dtype": ["bf16", "fp32"]}, seeds=2, cli=["+extra=1", "train.epochs=3"])


def test_a_typo_in_the_37th_value_is_caught_and_named(app):
    values = list(range(36)) + ["3O"] + list(range(37, 50))
    with pytest.raises(SweepSpecError) as err:
        check(app, grid={"train.epochs": values})
    assert "train.epochs='3O'" in str(err.value) and "Integer" in str(err.value)
    assert "\n" not in str(err.value)


def test_unknown_key_is_named(app):
    with pytest.raises(SweepSpecError, match="train.epochz"):
        check(app, grid={"train.epochz": [1, 2]})


def test_unknown_group_option_lists_the_options(app):
    with pytest.raises(SweepSpecError, match=r"'vitt' is not an option of config group 'model' \(options: cnn, mlp\)"):
        check(app, grid={"model": ["mlp", "vitt"]})


def test_budget_keys_must_fit_the_app(app):
    check(app, run_defaults={"budget": {"mode": "iso_steps", "limit": 10}})
    with pytest.raises(SweepSpecError, match="max_steps"):
        check(app, run_defaults={"budget": {"mode": "iso_steps", "limit": 2.5}})  # typed int node


def test_paired_settings_are_composed_together(app):
    check(app, paired=[{"model": ["cnn", "mlp"], "optimizer": ["adam", "sgd"], "optimizer.lr": [0.1, 0.2]}])
    with pytest.raises(SweepSpecError, match="model=mlp model.channels=2"):
        check(app, paired=[{"model": ["cnn", "mlp"], "model.channels": [1, 2]}])


def test_runs_are_composed_each_and_group_is_named(app, tmp_path):
    f = tmp_path / "s.yaml"
    f.write_text("grid:\n  - group: ok\n    params: {model: cnn, model.channels: [1, 2]}\n"
                 "  - group: bad\n    params: {model: mlp, model.channels: [1, 2]}\n")
    loader, master = app
    with pytest.raises(SweepSpecError, match="group 'bad'"):
        validate_spec(load_spec(str(f)), loader, master)


def test_cost_grows_with_the_sum_of_values_not_the_product(app):
    grid = {"train.epochs": list(range(40)), "optimizer.lr": [i / 100 for i in range(40)],
            "data.batch_size": list(range(1, 41)), "model": ["mlp", "cnn"]}
    # 40 * 40 * 40 * 2 = 128,000 runs: one composition for the first run, one per other group option.
    assert check(app, grid=grid) == 2


def test_added_keys_may_vary(app):
    check(app, cli=["+extra=1,2", "++train.epochs=4,5"])
    with pytest.raises(SweepSpecError, match=r"\+\+train.epochs=x"):
        check(app, cli=["++train.epochs=4,x"])


def test_command_line_values_are_checked_too(app):
    with pytest.raises(SweepSpecError, match="seed=abc"):
        check(app, cli=["seed=1,abc"])


def test_checking_values_in_place_leaves_the_config_as_it_was():
    """Values are checked on one shared config (no copy per value): each check must put the
    node back as it was, interpolations and typed nodes included, even when the value fails."""
    from types import SimpleNamespace

    from omegaconf import OmegaConf

    from mfcl_sweeps.validate import _BlockCheck

    task = OmegaConf.create({"train": OmegaConf.structured(schema.Train), "name": "${other}", "other": "x",
                             "anything": 1, "nested": {"lr": 0.1}})
    OmegaConf.set_struct(task, True)
    before = OmegaConf.to_yaml(task)
    nodes = {k: task._get_node(k) for k in ("name", "anything")}
    nodes["train.epochs"] = task.train._get_node("epochs")
    check_one = SimpleNamespace(where="")
    for text in ["train.epochs=5", "name=plain", "other=y", "anything=abc", "anything=null", "nested.lr=2",
                 "++nested.lr=3", "++anything=true"]:
        _BlockCheck.apply_one(check_one, text, task, "src")
    with pytest.raises(SweepSpecError, match="train.epochs=abc.*Integer"):
        _BlockCheck.apply_one(check_one, "train.epochs=abc", task, "src")
    assert OmegaConf.to_yaml(task) == before
    assert task.name == "x" and OmegaConf.is_interpolation(task, "name")
    assert task.train._get_node("epochs") is nodes.pop("train.epochs")
    assert all(task._get_node(k) is node for k, node in nodes.items())


def test_a_bad_value_among_a_thousand_is_caught_with_one_composition(app):
    values = [i / 1000 for i in range(999)] + ["fast"]
    with pytest.raises(SweepSpecError, match="train.epochs=fast"):
        check(app, grid={"train.epochs": list(range(999)) + ["fast"], "optimizer.lr": values[:-1]})
    assert check(app, grid={"train.epochs": list(range(1000)), "optimizer.lr": values[:-1]}) == 1


@pytest.mark.parametrize("text", [
    "a.b=5", "++a.b=0.001", "+a=1e-05", "a=true", "a=True", "a=null", "a=NULL", "a=-3", "a=+7", "a=-0", "a=1.",
    "a=.5", "a=1.e3", "a=1.5E+3", "a=0", "a=01", "a=00.5", "a=1_000", "a=abc", "a=x1", "a=_y", "a=inf", "a=NaN",
    "a=1.2.3", "a=", "a=1e", "a=.", "a=false", "a=é", "hydra.job.name=x", "model/opt=adam", "a=[1,2]", "a=' 1'"])
def test_literal_values_parse_as_hydra_parses_them(text):
    """validate.parse_literal skips Hydra's parser for plain literals; where it answers, it must
    give Hydra's Override exactly (type, key, value and the value's Python type)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from mfcl_sweeps.validate import parse_literal

    mine = parse_literal(text)
    if mine is None:
        return
    hydras = OverridesParser.create().parse_override(text)
    assert mine == hydras and type(mine.value()) is type(hydras.value())


def test_plain_literals_skip_hydras_parser():
    from mfcl_sweeps.validate import parse_literal

    assert [parse_literal(t) is not None for t in ("lr=0.001", "++seed=3", "model=mlp", "a=TRUE", "a=1_0")] == \
        [True, True, True, False, False]
