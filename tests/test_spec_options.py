"""Command-line sweeps (BasicSweeper semantics), hydra.sweeper.* options, aliases, seeds, exclude,
max_runs and shuffle."""
from __future__ import annotations

from pathlib import Path

import pytest
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser

from mfcl_sweeps.errors import SweepSpecError
from mfcl_sweeps.expand import count, iter_runs
from mfcl_sweeps.spec import SpecOptions, load_spec

APP_CONF = Path(__file__).parent / "fixtures" / "app" / "conf"


def overrides_of(sweep_file=None, cli=(), params=None, **options):
    spec = load_spec(sweep_file, cli_overrides=list(cli), params=params or {}, options=SpecOptions(**options))
    return [list(r.overrides) for r in iter_runs(spec)]


def basic_sweeper(cli, params=None):
    lines = [f"{k}={v}" for k, v in (params or {}).items()] + list(cli)
    parsed = OverridesParser.create().parse_overrides(lines)
    return BasicSweeper.split_arguments(parsed, None)[0]


@pytest.mark.parametrize("cli,params", [
    (["+a=0"], None),
    (["a=1,2", "b=x,y"], None),
    (["a=range(1,4)", "++b=1", "c=[1,2]", "d={x:1}"], None),
    (["a=1,2", "a=3"], None),
    (["b=1,2"], {"a": "x,y", "+c": "0"}),
    (["a=choice('q r',t)", "b='s p'", "c=null"], None),
    ([], None),
])
def test_command_line_sweeps_expand_like_basic_sweeper(cli, params):
    assert overrides_of(cli=cli, params=params) == basic_sweeper(cli, params)


def test_delete_override_is_kept_verbatim():
    assert overrides_of(cli=["~a", "b=1"]) == [["~a", "b=1"]]


def test_command_line_key_wins_over_the_file_and_is_crossed(tmp_path):
    f = tmp_path / "s.yaml"
    f.write_text("grid:\n  lr: [0.1, 0.2]\n  wd: [0, 1]\n")
    assert overrides_of(str(f), cli=["lr=0.5", "x=a,b"]) == [
        ["wd=0", "lr=0.5", "x=a"], ["wd=0", "lr=0.5", "x=b"], ["wd=1", "lr=0.5", "x=a"], ["wd=1", "lr=0.5", "x=b"]]


def test_inline_options_are_the_file_keys():
    inline = overrides_of(grid={"lr": [1, 2]}, paired=[{"a": [1, 2], "b": [3, 4]}], run_defaults={"c": "x"})
    assert inline == [["c=x", "lr=1", "a=1", "b=3"], ["c=x", "lr=1", "a=2", "b=4"],
                      ["c=x", "lr=2", "a=1", "b=3"], ["c=x", "lr=2", "a=2", "b=4"]]
    assert overrides_of(runs=[{"name": "r1", "lr": 1}, {"lr": 2}]) == [["lr=1"], ["lr=2"]]


def test_inline_grid_key_wins_over_the_file(tmp_path):
    f = tmp_path / "s.yaml"
    f.write_text("grid:\n  lr: [0.1, 0.2]\n")
    assert overrides_of(str(f), grid={"lr": [9]}) == [["lr=9"]]


def test_grid_values_may_use_hydra_sweep_grammar():
    assert overrides_of(grid={"a": "range(1,4)", "b": "choice(x,y)", "c": "p,q"})[:3] == [
        ["a=1", "b=x", "c=p"], ["a=1", "b=x", "c=q"], ["a=1", "b=y", "c=p"]]
    assert len(overrides_of(grid={"a": "range(1,4)", "b": "choice(x,y)", "c": "p,q"})) == 12


def test_default_aliases_and_a_custom_table():
    assert overrides_of(grid={"model": ["mlp"], "method": ["simclr"], "batch_size": [8], "amp_dtype": ["fp16"]}) == [
        ["model=mlp", "method=simclr", "data.batch_size=8", "train.loss_fp32=true"]]
    custom = {"batch_size": "loader.bs", "lr": {"target": "optimizer.lr"}, "model": None,
              "prec": {"kind": "amp_dtype", "target": "trainer.fp32_loss", "env": "MY_DTYPE"}}
    spec = load_spec(None, options=SpecOptions(aliases=custom, grid={
        "batch_size": [8], "lr": [0.1], "model": ["mlp"], "prec": ["fp32"]}))
    (run,) = iter_runs(spec)
    assert run.overrides == ("loader.bs=8", "optimizer.lr=0.1", "model=mlp", "trainer.fp32_loss=false")
    assert dict(run.env) == {"MY_DTYPE": "fp32"}


def test_amp_dtype_changes_the_config_hash_through_env():
    runs = list(iter_runs(load_spec(None, options=SpecOptions(grid={"amp_dtype": ["bf16", "fp16"]}))))
    assert runs[0].overrides == runs[1].overrides
    assert runs[0].config_hash != runs[1].config_hash


def test_seeds_count_list_and_key():
    assert overrides_of(grid={"a": [1]}, seeds=2) == [["a=1", "seed=0"], ["a=1", "seed=1"]]
    assert overrides_of(seeds=[7, 9], seed_key="train.seed") == [["train.seed=7"], ["train.seed=9"]]


def test_seeds_clash_with_a_seed_key_in_the_grid():
    with pytest.raises(SweepSpecError, match="seed"):
        load_spec(None, options=SpecOptions(grid={"seed": [1, 2]}, seeds=3))


def test_exclude_drops_runs_matching_every_key_of_an_entry():
    runs = overrides_of(grid={"a": [1, 2], "b": ["x", "y"], "c": [True, False]},
                        exclude=[{"a": 1, "b": "x"}, {"c": False, "b": "y"}])
    assert ["a=1", "b=x", "c=true"] not in runs and ["a=2", "b=y", "c=false"] not in runs
    assert len(runs) == 8 - 2 - 2  # the two entries never match the same run


def test_exclude_uses_alias_names_and_targets():
    runs = overrides_of(grid={"batch_size": [8, 16], "model": ["mlp", "cnn"]},
                        exclude=[{"data.batch_size": 8, "model": "cnn"}, {"batch_size": 16, "model": "mlp"}])
    assert runs == [["data.batch_size=8", "model=mlp"], ["data.batch_size=16", "model=cnn"]]


def test_max_runs_and_shuffle_are_deterministic():
    grid = {"a": list(range(10)), "b": list(range(10))}
    assert overrides_of(grid=grid, max_runs=3) == [["a=0", "b=0"], ["a=0", "b=1"], ["a=0", "b=2"]]
    first = overrides_of(grid=grid, max_runs=5, shuffle=True, seed=1)
    assert first == overrides_of(grid=grid, max_runs=5, shuffle=True, seed=1)
    assert first != overrides_of(grid=grid, max_runs=5, shuffle=True, seed=2)
    assert len({tuple(r) for r in first}) == 5
    everything = overrides_of(grid=grid, shuffle=True, seed=1)
    assert sorted(map(tuple, everything)) == sorted(map(tuple, overrides_of(grid=grid)))


def test_no_sweep_at_all_is_one_run():
    assert overrides_of() == [[]]
    assert overrides_of(cli=["a=1"]) == [["a=1"]]


def test_omegaconf_options_are_accepted():
    from omegaconf import OmegaConf

    opts = OmegaConf.create({"grid": {"a": [1, 2]}, "exclude": [{"a": 1}]})
    spec = load_spec(None, options=SpecOptions(grid=opts.grid, exclude=opts.exclude))
    assert count(spec) == 1


def test_glob_uses_the_config_loaders_group_options():
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    with initialize_config_dir(config_dir=str(APP_CONF), version_base=None):
        loader = GlobalHydra.instance().config_loader()
        cli = load_spec(None, cli_overrides=["model=glob(*)"], config_loader=loader)
        grid = load_spec(None, options=SpecOptions(grid={"model": "glob(c*)"}), config_loader=loader)
    assert [r.overrides for r in iter_runs(cli)] == [("model=cnn",), ("model=mlp",)]
    assert [r.overrides for r in iter_runs(grid)] == [("model=cnn",)]
    with pytest.raises(SweepSpecError, match="glob"):
        load_spec(None, options=SpecOptions(grid={"model": "glob(*)"}))
