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
