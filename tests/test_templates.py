"""A job's config finished from a shared template equals Hydra's own composition of it.

Real Hydra loader, real app (tests/fixtures/app: config groups, a typed schema, `_self_`); each
case composes the job both ways and compares the whole config, `hydra.*` included, or the error.
"""
from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from hydra import initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.singleton import Singleton
from hydra.errors import ConfigCompositionException
from hydra.types import RunMode
from omegaconf import OmegaConf

from mfcl_sweeps.job.config_templates import ConfigTemplates

APP = Path(__file__).parent / "fixtures" / "app"
sys.path.insert(0, str(APP))
import schema  # noqa: E402  (the app's typed schema, registered for this module's tests only)

MASTER_OVERRIDES = ["hydra.sweep.dir=/tmp/mfcl-templates", "hydra.job.env_copy=[MFCL_TEMPLATE_TEST]",
                    "hydra.job.config.override_dirname.exclude_keys=[seed]"]


@pytest.fixture(scope="module")
def session():
    before = Singleton.get_state()
    schema.register()
    with pytest.MonkeyPatch.context() as env, initialize_config_dir(config_dir=str(APP / "conf"), version_base=None):
        env.setenv("MFCL_TEMPLATE_TEST", "driver")
        loader = GlobalHydra.instance().config_loader()
        master = loader.load_configuration("config", overrides=MASTER_OVERRIDES, run_mode=RunMode.MULTIRUN)
        yield SimpleNamespace(hydra_context=SimpleNamespace(config_loader=loader), master_config=master)
    Singleton.set_state(before)


def prepare(session, overrides):
    """A template as the driver prepares it for a fork (fresh cache: compose() mutates it)."""
    templates = ConfigTemplates(session)
    assert templates.prepare(overrides) is None  # a choice of groups seen once composes in its job
    prepared = templates.prepare(overrides)
    assert prepared is not None, f"no template for {overrides}"
    return prepared


def by_hydra(session, overrides):
    return session.hydra_context.config_loader.load_sweep_config(session.master_config, list(overrides))


SAME = [
    ["seed=3"],
    ["+x=5"],
    ["seed=3", "model=cnn", "+x=1"],
    ["model=cnn", "model.channels=8", "train.epochs=4", "++train.log_every=5"],
    ["optimizer=adam", "seed=1", "data.batch_size=64", "+tags=[a,b]", "+extra={k: 1, v: [2]}"],
    ["~model", "seed=2"],
    ["~model.hidden", "seed=2"],
    ["hydra.job.chdir=true", "seed=2", "+weird='; $(touch x) \" \\\\'"],
    ["seed=2", "model={name: inline}"],
]


@pytest.mark.parametrize("overrides", SAME, ids=lambda o: " ".join(o))
def test_template_composition_equals_hydras(session, overrides, monkeypatch):
    monkeypatch.setenv("MFCL_TEMPLATE_TEST", "driver")
    prepared = prepare(session, overrides)
    monkeypatch.setenv("MFCL_TEMPLATE_TEST", "job")  # env_copy takes the job's environment
    expected = by_hydra(session, overrides)
    actual = prepared.compose()
    assert actual.hydra.job.env_set.MFCL_TEMPLATE_TEST == "job"
    assert OmegaConf.to_container(actual) == OmegaConf.to_container(expected)
    assert OmegaConf.to_yaml(actual) == OmegaConf.to_yaml(expected)


ERRORS = [
    ["train.epochs=many"],  # typed node
    ["+seed=1"],  # append onto an existing key
    ["train.epochz=1"],  # unknown key in a struct
    ["~nothing"],
    ["seed=1,2"],  # a sweep in a single job
    ["seed@pkg=1"],  # package on a non-group key
    ["~train.loss_fp32"],  # typed node
]


@pytest.mark.parametrize("overrides", ERRORS, ids=lambda o: " ".join(o))
def test_template_composition_fails_like_hydras(session, overrides, monkeypatch):
    monkeypatch.setenv("MFCL_TEMPLATE_TEST", "job")
    with pytest.raises(ConfigCompositionException) as hydra_error:
        by_hydra(session, overrides)
    prepared = prepare(session, overrides)
    with pytest.raises(ConfigCompositionException) as template_error:
        prepared.compose()
    assert str(template_error.value) == str(hydra_error.value)


def test_jobs_share_one_template_per_choice_of_groups(session):
    templates = ConfigTemplates(session)
    first = [templates.prepare([f"seed={i}", "model=cnn"]) for i in range(3)]
    other = [templates.prepare([f"seed={i}", "model=mlp"]) for i in range(3)]
    assert first[0] is None and other[0] is None
    assert first[1].base is first[2].base
    assert other[1].base is other[2].base and other[1].base is not first[1].base
    assert [o.input_line for o in first[2].value_overrides] == ["seed=2"]


def test_no_template_where_composition_itself_fails_or_the_search_path_moves(session):
    templates = ConfigTemplates(session)
    for overrides in (["model=vitt", "seed=1"], ["hydra.searchpath=[/nowhere]", "seed=1"], ["seed=(("]):
        assert templates.prepare(overrides) is None
        assert templates.prepare(overrides) is None, overrides
