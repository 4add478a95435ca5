"""Properties of expansion and run identity, and of writing values as Hydra overrides."""
from __future__ import annotations

import math
import re

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mfcl_sweeps.expand import check_not_empty, config_hash, count, iter_runs, make_run_id
from mfcl_sweeps.spec import SpecOptions, load_spec
from mfcl_sweeps.spec import overrides as ov

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

keys = st.sampled_from(["a", "b", "c", "opt.lr", "model.depth", "x_y"])
scalars = st.one_of(st.integers(-5, 5), st.booleans(), st.sampled_from(["p", "q", "r s", "1", "null"]),
                    st.floats(-2, 2, allow_nan=False).map(lambda f: round(f, 2)))
value_lists = st.lists(scalars, min_size=1, max_size=4)


@st.composite
def specs(draw):
    grid = draw(st.dictionaries(keys, value_lists, min_size=0, max_size=3))
    free = [k for k in ["p1", "p2", "p3"]]
    paired = []
    if draw(st.booleans()):
        n = draw(st.integers(1, 3))
        paired.append({k: draw(st.lists(scalars, min_size=n, max_size=n)) for k in free[:draw(st.integers(1, 2))]})
    exclude = []
    for _ in range(draw(st.integers(0, 3))):
        if grid:
            k = draw(st.sampled_from(sorted(grid)))
            exclude.append({k: draw(st.sampled_from(grid[k]))})
    options = dict(grid=grid or None, paired=paired or None, exclude=exclude or None,
                   seeds=draw(st.sampled_from([None, 1, 2])),
                   max_runs=draw(st.sampled_from([None, 1, 5, 50])),
                   shuffle=draw(st.booleans()), seed=draw(st.integers(0, 3)))
    cli = draw(st.sampled_from([[], ["z=1,2"], ["+w=0"]]))
    return options, cli


def load(options, cli):
    from mfcl_sweeps.errors import SweepSpecError

    try:
        spec = load_spec(None, cli_overrides=cli, options=SpecOptions(**options))
        check_not_empty(spec)
        return spec
    except SweepSpecError as err:
        assert "remove every run" in str(err)
        return None


@FAST
@given(specs())
def test_count_equals_the_length_of_the_expansion(case):
    spec = load(*case)
    if spec is not None:
        runs = list(iter_runs(spec))
        assert count(spec) == len(runs)
        assert [r.position for r in runs] == list(range(len(runs)))


CAP_CLI = [[], ["z=1,2"], ["z=1,2,3", "y=range(0,5)"], ["y=range(0,7)", "z=1,1,1,2"], ["z=1,1,1,1,1,3", "+w=0"],
           ["y=range(0,4)", "z=1,2", "y=range(0,9)"]]


@FAST
@given(specs(), st.integers(1, 40), st.sampled_from(CAP_CLI))
def test_max_runs_keeps_the_first_runs_of_the_whole_sweep(case, cap, cli):
    """max_runs cuts the spec's axes to what its runs use (spec.cli._reachable while the command
    line is parsed, spec.blocks.capped_blocks after): the runs, their slugs and positions are
    those the whole sweep starts with."""
    options, _ = case
    options = {**options, "exclude": None, "shuffle": False}
    whole = load({**options, "max_runs": None}, cli)
    capped = load({**options, "max_runs": cap}, cli)
    key = [(r.overrides, r.combo, r.group, r.position, r.config_hash) for r in iter_runs(capped)]
    assert key == [(r.overrides, r.combo, r.group, r.position, r.config_hash) for r in iter_runs(whole)][:cap]


@FAST
@given(specs())
def test_run_ids_are_unique_safe_and_short(case):
    spec = load(*case)
    if spec is not None:
        ids = [make_run_id(r.position, r.group, r.combo) for r in iter_runs(spec)]
        assert len(set(ids)) == len(ids)
        assert all(len(i) <= 100 and re.fullmatch(r"[A-Za-z0-9._+\-]+", i) for i in ids)


@FAST
@given(st.lists(st.tuples(keys, scalars), min_size=1, max_size=6, unique_by=lambda kv: kv[0]), st.randoms())
def test_config_hash_ignores_order(items, rnd):
    overrides = [ov.format_override(k, v) for k, v in items]
    shuffled = overrides[:]
    rnd.shuffle(shuffled)
    assert config_hash(overrides) == config_hash(shuffled)
    assert config_hash(overrides, {"E": "1"}) == config_hash(shuffled, {"E": "1"}) != config_hash(overrides)
    assert re.fullmatch(r"[0-9a-f]{16}", config_hash(overrides))


def test_config_hash_is_independent_of_key_order_in_the_file(tmp_path):
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    a.write_text("grid:\n  lr: [1, 2]\n  wd: [3]\n")
    b.write_text("grid:\n  wd: [3]\n  lr: [1, 2]\n")
    hashes = [{r.config_hash for r in iter_runs(load_spec(str(p)))} for p in (a, b)]
    assert hashes[0] == hashes[1] and len(hashes[0]) == 2


def test_large_grids_count_without_expanding():
    spec = load_spec(None, options=SpecOptions(grid={f"k{i}": list(range(10)) for i in range(6)},
                                               exclude=[{"k0": 1}, {"k1": 2, "k2": 3}]))
    assert count(spec) == 10 ** 6 - 10 ** 5 - 10 ** 4 + 10 ** 3


def test_make_run_id_pads_and_truncates():
    assert make_run_id(12, "default", "lr-0.1") == "00012_default_lr-0.1"
    assert make_run_id(123456, "g", "") == "123456_g"
    assert make_run_id(3, "my group/x", "") == "00003_my-group-x"
    assert len(make_run_id(1, "g", "k-" + "v" * 300)) == 100


# ----------------------------------------------------------------------------- value formatting

text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=20)
tricky = st.sampled_from(["; $(touch /tmp/x)", "it's", 'say "hi"', "back\\slash", "end\\", "\\'", "a\nb",
                          "true", "null", "1e-3", "007", "a,b", "x=y", "[1]", "{a:1}", " pad ", "", "inf", "-inf",
                          "glob(*)", "range(1,3)", "a b", "dir/name", "${oc.env:HOME}"])
plain = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), tricky, text)
dict_keys = st.from_regex(r"[A-Za-z_][A-Za-z0-9_\-]{0,8}", fullmatch=True)
values = st.recursive(plain, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                     st.dictionaries(dict_keys, inner, max_size=3)), max_leaves=8)


def same(a, b):
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a):
        return math.isnan(b)
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return a == b and type(a) is type(b)


@settings(max_examples=400, deadline=None)
@given(values)
def test_formatted_values_parse_back_to_the_same_value(value):
    parsed = ov.parse_override(ov.format_override("k", value))
    assert not parsed.is_sweep_override()
    assert same(parsed.value(), value), (value, ov.format_value(value))


def test_nan_and_shell_text_survive():
    assert math.isnan(ov.parse_override("k=" + ov.format_value(float("nan"))).value())
    assert ov.format_value("; $(touch /tmp/x)") == "'; $(touch /tmp/x)'"
    assert ov.format_value("resnet18") == "resnet18" and ov.format_value("true") == "'true'"
