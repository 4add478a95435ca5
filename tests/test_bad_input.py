"""Malformed sweeps: each is refused with SweepSpecError, one line naming the key or value and,
for sweep files, `file:line` where the offending text is."""
from __future__ import annotations

import subprocess
import sys

import pytest

from mfcl_sweeps.cli import main
from mfcl_sweeps.errors import SweepSpecError
from mfcl_sweeps.expand import check_not_empty
from mfcl_sweeps.spec import SpecOptions, load_spec

# (id, sweep file text, words the message must hold, line or None)
FILES = [
    ("paired-length", "paired:\n  - {lr: [1, 2], wd: [1]}\n", ["paired[0]", "lr=2, wd=1"], 2),
    ("paired-named-length", "sweep:\n  paired:\n    - pair:\n        a: [1, 2]\n        b: [3]\n",
     ["sweep.paired[0].pair", "a=2, b=1"], 3),
    ("scalar-for-list", "grid:\n  lr: 0.1\n", ["'grid.lr'", "expected a list", "0.1"], 2),
    ("paired-scalar", "paired:\n  - {a: 1, b: [2]}\n", ["'paired[0].a'", "expected a list"], 2),
    ("budget-limit-zero", "grid: {a: [1]}\nbudget: {mode: iso_time, limit: 0}\n", ["'budget.limit'", "> 0"], 2),
    ("budget-limit-negative", "grid: {a: [1]}\nbudget:\n  mode: iso_steps\n  limit: -5\n",
     ["'budget.limit'", "-5"], 4),
    ("budget-mode", "grid: {a: [1]}\nbudget: {mode: iso_flops, limit: 1}\n", ["'budget.mode'", "iso_flops"], 2),
    ("budget-field", "grid: {a: [1]}\nbudget: {mode: iso_time, limit: 1, target: 3}\n",
     ["'budget.target'", "unknown budget field"], 2),
    ("unknown-top-key", "grid: {a: [1]}\ngrdi: {b: [2]}\n", ["'grdi'", "unknown top-level key"], 2),
    ("not-a-mapping", "- a\n- b\n", ["must be a mapping"], 1),
    ("empty-file", "", ["empty"], 1),
    ("empty-grid", "grid: {}\n", ["'grid'", "empty grid"], 1),
    ("empty-values", "grid:\n  a: [1]\n  b: []\n", ["'grid.b'", "empty list"], 3),
    ("duplicate-run-names", "runs:\n  - {name: a, x: 1}\n  - {name: b, x: 2}\n  - {name: a, x: 3}\n",
     ["'runs[2].name'", "duplicate run name 'a'"], 4),
    ("exclude-everything", "grid: {a: [1, 2]}\nexclude:\n  - {a: 1}\n  - {a: 2}\n",
     ["'exclude'", "remove every run"], 2),
    ("exclude-unknown-key", "grid: {a: [1, 2]}\nexclude:\n  - {b: 1}\n", ["'exclude[0]'", "'b' is not set"], 3),
    ("max-runs-zero", "grid: {a: [1]}\nmax_runs: 0\n", ["'max_runs'", "positive integer"], 2),
    ("max-runs-text", "grid: {a: [1]}\nmax_runs: many\n", ["'max_runs'", "many"], 2),
    ("yaml-syntax", "grid:\n  a: [1, 2\n  b: [3]\n", ["YAML syntax error"], 3),
    ("yaml-duplicate-key", "grid:\n  a: [1]\n  a: [2]\n", ["'a'", "duplicate key (first at line 2)"], 3),
    ("alias-target", "aliases:\n  bs: {target: 'data..bs'}\ngrid: {bs: [1]}\n",
     ["'aliases.bs'", "unknown alias target"], 2),
    ("alias-kind", "aliases:\n  bs: {kind: rename, target: data.bs}\ngrid: {bs: [1]}\n",
     ["'aliases.bs'", "unknown alias kind 'rename'"], 2),
    ("group-option-name", "grid:\n  model: [mlp, 'a b']\n", ["'grid.model[1]'", "not a config group option"], 2),
    ("wandb-bayes", "method: bayes\nparameters: {lr: {min: 0.1, max: 1}}\n", ["'method'", "optuna"], 1),
    ("wandb-random-no-cap", "method: random\nparameters: {lr: {values: [1, 2]}}\n", ["'method'", "run_cap"], 1),
    ("wandb-distribution", "method: random\nrun_cap: 2\nparameters:\n  lr: {distribution: q_uniform, min: 0, max: 1}\n",
     ["'parameters.lr.distribution'", "q_uniform"], 4),
    ("wandb-grid-range", "method: grid\nparameters:\n  lr: {min: 0.1, max: 1}\n", ["'parameters.lr'", "values"], 3),
    ("runs-not-list", "runs: {a: 1}\n", ["'runs'", "must be a list"], 1),
    ("run-not-mapping", "runs:\n  - a=1\n", ["'runs[0]'", "must be a mapping"], 2),
    ("seeds-zero", "grid: {a: [1]}\nseeds: 0\n", ["'seeds'", "positive"], 2),
    ("seeds-and-seed-key", "grid: {seed: [1, 2]}\nseeds: 2\n", ["'seeds'", "also set by"], 2),
    ("key-in-grid-and-paired", "grid: {a: [1]}\npaired:\n  - {a: [1], b: [2]}\n", ["'a'", "set by both"], None),
    ("ttl", '{"defaults": {"ttl": "soon"}, "params": [{"a": 1}]}', ["'defaults.ttl'", "soon"], 1),
    ("nnodes", "grid:\n  - group: g\n    nnodes: two\n    params: {a: 1}\n", ["'grid[0].nnodes'", "two"], 3),
    ("interval", "grid:\n  lr: interval(0, 1)\n", ["'grid.lr'", "interval()"], 2),
    ("amp-dtype", "grid:\n  amp_dtype: [16]\n", ["'grid.amp_dtype[0]'", "dtype name"], 2),
    ("shuffle-text", "grid: {a: [1]}\nshuffle: maybe\n", ["'shuffle'", "true or false"], 2),
    ("entry-not-mapping", "grid:\n  - [1, 2]\n", ["'grid[0]'", "must be a mapping"], 2),
    ("entry-unknown-key", "grid:\n  - group: g\n    parmas: {a: [1]}\n", ["'grid[0].parmas'", "unknown key"], 3),
    ("rendezvous", "nnodes: 2\nrendezvous: {backend: c10d, port: 1}\ngrid: {a: [1]}\n", ["'rendezvous'"], 2),
]


@pytest.mark.parametrize("name,text,words,line", FILES, ids=[f[0] for f in FILES])
def test_malformed_sweep_file(tmp_path, name, text, words, line):
    path = tmp_path / ("bad.json" if text.startswith("{") else "bad.yaml")
    path.write_text(text)
    with pytest.raises(SweepSpecError) as err:
        check_not_empty(load_spec(str(path)))
    message = str(err.value)
    assert "\n" not in message
    for word in words:
        assert word in message, message
    if line is not None:
        assert message.startswith(f"{path}:{line}: "), message


def test_the_matrix_is_large_enough():
    assert len(FILES) >= 20


@pytest.mark.parametrize("path_kind", ["missing", "directory"])
def test_unreadable_file(tmp_path, path_kind):
    path = tmp_path / "nope.yaml"
    if path_kind == "directory":
        path.mkdir()
    with pytest.raises(SweepSpecError, match=f"^{path}: cannot read sweep file"):
        load_spec(str(path))


@pytest.mark.parametrize("cli,options,words", [
    (["a=[1,"], {}, ["'a=[1,'", "cannot parse override"]),
    (["a=interval(0,1)"], {}, ["interval()"]),
    ([], {"grid": {"a": 1}}, ["'hydra.sweeper.grid.a'", "expected a list"]),
    ([], {"max_runs": -1}, ["'hydra.sweeper.max_runs'"]),
    ([], {"seeds": [1, "x"]}, ["'hydra.sweeper.seeds'"]),
    ([], {"aliases": {"x": {"kind": "group"}}}, ["'hydra.sweeper.aliases.x'", "unknown alias target"]),
    ([], {"run_defaults": {"budget": {"mode": "iso_time", "limit": "fast"}}},
     ["'hydra.sweeper.run_defaults.budget.limit'"]),
    ([], {"paired": [{"a": [1, 2], "b": [1, 2, 3]}]}, ["'hydra.sweeper.paired[0]'", "a=2, b=3"]),
])
def test_malformed_options_and_overrides(cli, options, words):
    with pytest.raises(SweepSpecError) as err:
        load_spec(None, cli_overrides=cli, options=SpecOptions(**options))
    for word in words:
        assert word in str(err.value), str(err.value)


@pytest.mark.parametrize("name,text,words,line", FILES[:6], ids=[f[0] for f in FILES[:6]])
def test_cli_exits_2_with_one_line(tmp_path, capsys, name, text, words, line):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    assert main(["count", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("mfcl-sweeps count: error: ") and words[0] in err


def test_cli_in_a_real_process(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("grid:\n  lr: 0.1\n")
    done = subprocess.run([sys.executable, "-m", "mfcl_sweeps.cli", "plan", str(path)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr == f"mfcl-sweeps plan: error: {path}:2: 'grid.lr': expected a list of values " \
                          "(or a Hydra sweep like 'range(1,4)'), got 0.1\n"
