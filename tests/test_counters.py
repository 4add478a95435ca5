"""Status and counters are true: per-group counts from the plan's own groups (no phantom
`default`), progress counting what actually launches, `count`/`plan` agreeing with the sweeper."""
from __future__ import annotations

import re
import subprocess
import sys
from collections import Counter

import pytest
from apprun import run_app, status_json

from mfcl_sweeps import model
from mfcl_sweeps.commands.status import status_report
from mfcl_sweeps.duplicates import count_repeats, runs_by_group
from mfcl_sweeps.expand import iter_runs
from mfcl_sweeps.launch.progress import Progress
from mfcl_sweeps.spec import SpecOptions, load_spec
from mfcl_sweeps.state.manifest import SweepManifest
from mfcl_sweeps.state.replay import UNSEEN_GROUP

TWO_GROUPS = """\
grid:
  - group: small
    params:
      value: [1, 2]
  - group: large
    params:
      value: [3]
      mode: [ok, fail_once]
seeds: 2
"""


def _spec(tmp_path, text=TWO_GROUPS, **options):
    path = tmp_path / "grid.yaml"
    path.write_text(text)
    return load_spec(str(path), options=SpecOptions(**options))


@pytest.mark.parametrize("options", [{}, {"max_runs": 5}, {"max_runs": 3, "shuffle": True, "seed": 7},
                                     {"shuffle": True}])
def test_runs_by_group_is_what_the_runs_say(tmp_path, options):
    spec = _spec(tmp_path, **options)
    expected = Counter(r.group for r in iter_runs(spec))
    assert runs_by_group(spec, count_repeats(spec)) == dict(expected)


def test_a_huge_random_sample_is_not_listed_to_count_its_groups():
    from mfcl_sweeps.duplicates import MAX_LISTED

    spec = load_spec(None, cli_overrides=["a=range(1000)", "b=range(1000)"],
                     options=SpecOptions(max_runs=MAX_LISTED + 1, shuffle=True))
    assert runs_by_group(spec, 0) == {}  # status shows such runs in the "(not started)" row


def test_a_plan_without_group_counts_shows_no_phantom_group(tmp_path):
    """Journals written before plans counted per group say {"default": N} for any sweep: the
    unstarted runs are shown as not started, never as a `default` group the sweep does not have."""
    spec = _spec(tmp_path)
    manifest = SweepManifest(tmp_path / "sweep")
    manifest.record_plan(spec.to_dict(), spec.spec_hash(), 8)  # an int: the old {"default": 8}
    runs = list(manifest.assign(iter_runs(spec)))
    manifest.transition(runs[0], model.COMPLETED)
    groups = status_report(manifest)["groups"]
    assert groups == {"small": {model.COMPLETED: 1}, UNSEEN_GROUP: {model.PENDING: 7}}


def test_group_counts_of_a_plan_counted_per_group(tmp_path):
    spec = _spec(tmp_path)
    manifest = SweepManifest(tmp_path / "sweep")
    manifest.record_plan(spec.to_dict(), spec.spec_hash(), {**runs_by_group(spec, 0), "total": 8})
    runs = list(manifest.assign(iter_runs(spec)))
    manifest.transition(runs[0], model.COMPLETED)
    manifest.transition(runs[5], model.FAILED)
    report = status_report(manifest)
    assert report["groups"] == {"small": {model.COMPLETED: 1, model.PENDING: 3},
                                "large": {model.FAILED: 1, model.PENDING: 3}}
    assert sum(sum(g.values()) for g in report["groups"].values()) == report["counts"]["total"] == 8


def test_progress_counts_a_finished_run_out_of_running():
    progress = Progress(1, live=False)
    progress.update(running=1)
    progress.finished(True, "r0")
    assert progress.line().startswith("sweep: 1/1 done, 0 running, 0 failed")
    unknown = Progress(0, live=False)  # a claim worker: how many it launches is not known ahead
    unknown.finished(False, "r1")
    assert unknown.line().startswith("sweep: 1 done, 0 running, 1 failed")


@pytest.mark.slow  # three real sweeps (~15 s); the fast tests above check each piece
def test_status_and_counters_of_a_multi_group_sweep_and_its_resume(tmp_path):
    """As a user: the README's kind of sweep (two groups, seeds), some runs failing; status shows
    the two groups only; the rerun says it launches the failed runs and counts to that number."""
    (tmp_path / "grid.yaml").write_text(TWO_GROUPS)
    args = ("hydra/sweeper=mfcl", "hydra/launcher=mfcl_local", "hydra.sweeper.sweep_file=grid.yaml",
            "hydra.sweeper.name=two", "seconds=0", "hydra.launcher.progress=log")
    first = run_app("behave", tmp_path, *args)
    assert first.returncode == 1, first.stderr  # the fail_once runs failed
    assert "Launching 8 jobs" in first.stdout and "(8/8)" in first.stdout
    report = status_json(tmp_path / "multirun" / "two")
    assert report["groups"] == {"small": {model.COMPLETED: 4},
                                "large": {model.COMPLETED: 2, model.FAILED: 2}}
    again = run_app("behave", tmp_path, *args)
    assert again.returncode == 0, again.stderr
    assert "skipping 6 run(s); 6 completed" in again.stdout
    assert "Launching 2 jobs" in again.stdout
    assert re.findall(r"completed \((\d+/\d+)\)", again.stdout) == ["1/2", "2/2"]
    done = run_app("behave", tmp_path, *args)  # nothing left: nothing said to launch
    assert done.returncode == 0 and "Launching" not in done.stdout, done.stdout


def test_count_and_plan_know_every_option_of_the_sweeper():
    import dataclasses

    from hydra_plugins.mfcl_sweeps.mfcl_sweeper import MfclSweeperConf
    from mfcl_sweeps.commands._spec_args import RUN_OPTIONS

    knobs = {f.name for f in dataclasses.fields(SpecOptions)}
    assert {f.name for f in dataclasses.fields(MfclSweeperConf)} - {"_target_"} == \
        knobs | set(RUN_OPTIONS) | {"sweep_file", "params"}


@pytest.mark.slow  # a Hydra dry run (~4 s idle); the test below checks the same reading in-process
def test_count_and_plan_read_the_command_line_as_the_sweeper_does(tmp_path, monkeypatch):
    """`++`/`+` sweeper knobs count, sweep_file may be an override, other hydra overrides are
    accepted and kept out of the runs: `plan` lists exactly the runs the sweeper's dry run does."""
    from apprun import APPS, mfcl_sweeps

    (tmp_path / "grid.yaml").write_text(TWO_GROUPS)
    args = ["hydra.sweeper.sweep_file=grid.yaml", "++hydra.sweeper.seeds=3", "+hydra.sweeper.max_runs=7",
            "hydra/launcher=mfcl_local", "hydra.launcher.max_concurrent=2", "hydra.sweeper.name=x", "seconds=0"]
    dry = subprocess.run([sys.executable, str(APPS / "behave" / "app.py"), "-m", "hydra/sweeper=mfcl",
                          "hydra.sweeper.dry_run=true", "hydra.sweeper.validate=false", *args, "side_dir=s"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert dry.returncode == 0, dry.stderr
    swept = [line.split()[1:] for line in dry.stdout.splitlines() if re.match(r"\s+\d+  ", line)]
    monkeypatch.chdir(tmp_path)  # mfcl_sweeps() runs in this process's cwd
    plan = mfcl_sweeps("plan", *args, "side_dir=s")
    assert plan.returncode == 0, plan.stderr
    assert [line.split()[1:] for line in plan.stdout.splitlines()[1:]] == swept
    assert len(swept) == 7 and mfcl_sweeps("count", *args).stdout.strip() == "7"
    bad = mfcl_sweeps("count", "grid.yaml", "++hydra.sweeper.seedz=3")
    assert bad.returncode == 2 and "'hydra.sweeper.seedz': not an option of the mfcl sweeper" in bad.stderr


def test_sweeper_overrides_reach_count_with_plus_and_hydra_ones_stay_out(tmp_path, monkeypatch):
    import argparse

    from mfcl_sweeps.commands import count
    from mfcl_sweeps.commands._spec_args import load_from_args
    from mfcl_sweeps.expand import count as count_runs

    (tmp_path / "grid.yaml").write_text(TWO_GROUPS)
    monkeypatch.chdir(tmp_path)
    parser = argparse.ArgumentParser()
    count.add_arguments(parser)
    spec = load_from_args(parser.parse_args([
        "hydra.sweeper.sweep_file=grid.yaml", "++hydra.sweeper.seeds=3", "+hydra.sweeper.max_runs=7",
        "hydra/launcher=mfcl_local", "++hydra.launcher.max_concurrent=2", "hydra.sweeper.resume=none", "seconds=0",
        "hydra.sweeper.grid={}"]))  # {}: not given, as the sweeper reads its options
    assert count_runs(spec) == 7
    assert {o.split("=")[0] for r in iter_runs(spec) for o in r.overrides} == {"value", "mode", "seconds", "seed"}
    assert {r.overrides[-1] for r in iter_runs(spec)} == {"seed=0", "seed=1", "seed=2"}


# one key spelled twice in one mapping (each spelling would silently drop the other's values), and
# an entry's params that sweep nothing (as `grid: {}`, already refused)
SAME_KEY_TWICE = [
    ("plus", "grid:\n  lr: [1, 2]\n  +lr: [3]\n", "'grid.+lr': sets 'lr' again (also set as 'lr' on line 2)", 3),
    ("plus-plus", "grid:\n  lr: [1, 2]\n  ++lr: [3]\n", "'grid.++lr': sets 'lr' again", 3),
    ("dotted-and-nested", "grid:\n  model.hidden: [1, 2]\n  model: {hidden: [3, 4]}\n",
     "sets 'model.hidden' again (also set as 'model.hidden' on line 2)", 3),
    ("params-fixed-and-swept", "grid:\n  - group: g\n    params:\n      model.hidden: 1\n      model: {hidden: [2]}\n",
     "'grid[0].params.model.hidden': sets 'model.hidden' again", 5),
    ("paired", "paired:\n  - {lr: [1, 2], +lr: [3, 4]}\n", "'paired[0].+lr': sets 'lr' again", 2),
    ("run", "runs:\n  - {lr: 1, ++lr: 2}\n", "'runs[0].++lr': sets 'lr' again", 2),
    ("empty-params", "grid:\n  - group: g\n    params: {}\n", "'grid[0].params': empty params: nothing to sweep", 3),
    ("alias-and-target", "aliases:\n  lr: {target: optimizer.lr}\ngrid:\n  lr: [1]\n  optimizer.lr: [2]\n",
     "'grid.optimizer.lr': sets 'optimizer.lr' again (also set as 'lr' on line 4)", 5),
]


@pytest.mark.parametrize("name,text,words,line", SAME_KEY_TWICE, ids=[c[0] for c in SAME_KEY_TWICE])
def test_a_key_twice_or_an_empty_entry_is_an_error_naming_it(tmp_path, name, text, words, line):
    from mfcl_sweeps.errors import SweepSpecError

    path = tmp_path / "twice.yaml"
    path.write_text(text)
    with pytest.raises(SweepSpecError) as err:
        load_spec(str(path))
    assert str(err.value).startswith(f"{path}:{line}: ") and words in str(err.value), str(err.value)
    assert "\n" not in str(err.value)


def _journaled(tmp_path, overrides, failed=()):
    """A sweep dir whose runs of `overrides` ended: completed, or failed for those in `failed`."""
    spec = load_spec(None, cli_overrides=list(overrides))
    manifest = SweepManifest(tmp_path / "sweep")
    manifest.record_plan(spec.to_dict(), spec.spec_hash(), {**runs_by_group(spec, 0), "total": 4})
    runs = list(manifest.assign(iter_runs(spec)))
    for run in runs:
        manifest.transition(run, model.FAILED if run.index in failed else model.COMPLETED)
    return manifest, runs


def test_rerun_failed_only_names_the_configs_it_leaves_out_as_new(tmp_path, caplog):
    from mfcl_sweeps.state.todo import survey

    manifest, _ = _journaled(tmp_path, ["a=1,2", "b=x,y"], failed={1})
    changed = load_spec(None, cli_overrides=["a=1,2", "b=x,y", "c=0"])  # a task override added: all new
    manifest.record_plan(changed.to_dict(), changed.spec_hash(), {**runs_by_group(changed, 0), "total": 4})
    with caplog.at_level("INFO", logger="mfcl_sweeps"):
        todo = survey(manifest, manifest.assign(iter_runs(changed)), "rerun_failed_only", [])
    assert todo == 0
    text = caplog.text
    assert "skipping 4 run(s); 4 new" in text
    assert "4 config(s) are new to this sweep" in text and "hydra.sweeper.resume=skip_completed" in text
    assert "(a=1 b=x c=0)" in text and "(a=2 b=y c=0)" in text
    caplog.clear()
    with caplog.at_level("INFO", logger="mfcl_sweeps"):  # unchanged: the failed run reruns, nothing is new
        same = load_spec(None, cli_overrides=["a=1,2", "b=x,y"])
        assert survey(manifest, manifest.assign(iter_runs(same)), "rerun_failed_only", []) == 1
    assert "3 completed" in caplog.text and "new" not in caplog.text


def test_chosen_runs_run_whatever_their_state_and_unknown_ones_are_refused(tmp_path):
    from mfcl_sweeps.commands.resume import chosen_runs, resume_command
    from mfcl_sweeps.errors import MfclError
    from mfcl_sweeps.state.todo import survey, wanted

    manifest, runs = _journaled(tmp_path, ["a=1,2", "b=x,y"], failed={1})
    chosen = [runs[0].run_id, runs[3].config_hash]  # a completed run by id, another by hash
    assert [wanted(manifest, r, "skip_completed", chosen) for r in runs] == [True, False, False, True]
    assert survey(manifest, iter(runs), "skip_completed", chosen) == 2
    with pytest.raises(MfclError, match="00009_nope is no run of this sweep"):
        survey(manifest, iter(runs), "skip_completed", ["00009_nope"])
    override = chosen_runs(manifest, chosen)
    assert override == f"hydra.sweeper.only_runs=['{runs[0].run_id}','{runs[3].config_hash}']"
    with pytest.raises(MfclError, match="--run 00009_nope: no such run"):
        chosen_runs(manifest, ["00009_nope"])
    recorded = {"sweep_dir": "/s", "command": {"python": "py", "argv": [
        "train.py", "-m", "hydra.sweeper.only_runs=[old]", "a=1,2"]}}
    cmd = resume_command(recorded, [override])
    assert [a for a in cmd if "only_runs" in a] == [override]  # an earlier choice is not kept


@pytest.mark.slow  # two real sweeps (~8 s)
def test_resume_run_reruns_a_completed_run(tmp_path):
    from apprun import mfcl_sweeps, side_lines

    args = ("hydra/sweeper=mfcl", "hydra/launcher=mfcl_local", "hydra.sweeper.name=pick", "value=1,2,3", "seconds=0")
    assert run_app("behave", tmp_path, *args).returncode == 0
    sweep = tmp_path / "multirun" / "pick"
    first = sorted(side_lines(tmp_path, "starts.txt"))
    proc = mfcl_sweeps("resume", str(sweep), "--run", first[1])
    assert proc.returncode == 0, proc.stderr
    assert sorted(side_lines(tmp_path, "starts.txt")) == sorted([*first, first[1]])


def test_resume_of_a_callback_only_sweep_reruns_its_command_under_its_own_sweeper(tmp_path, monkeypatch):
    """A sweep dir the mfcl callback recorded under BasicSweeper: resume gives no mfcl sweeper
    option (BasicSweeperConf has none: Hydra refused the command) and says every run runs again."""
    from apprun import mfcl_sweeps

    manifest = SweepManifest(tmp_path / "sweep")
    spec = {"sweeper": "hydra._internal.core_plugins.basic_sweeper.BasicSweeper", "launcher": "x", "arguments": []}
    manifest.record_plan(spec, "cb", {"total": 0}, command={"python": sys.executable, "cwd": str(tmp_path),
                                                             "argv": ["app.py", "-m", "hydra/callbacks=mfcl", "a=1,2"]})
    proc = mfcl_sweeps("resume", str(tmp_path / "sweep"), "--dry-run")
    assert proc.returncode == 0, proc.stderr
    assert "hydra.sweep.dir=" in proc.stdout and "hydra.sweeper" not in proc.stdout
    assert "ran under BasicSweeper, which skips nothing: every run runs again" in proc.stderr
    chosen = mfcl_sweeps("resume", str(tmp_path / "sweep"), "--run", "00000_job", "--dry-run")
    assert chosen.returncode == 2 and "cannot run chosen runs" in chosen.stderr
