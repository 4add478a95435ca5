"""Status and counters are true: per-group counts from the plan's own groups (no phantom
`default`), progress counting what actually launches, `count`/`plan` agreeing with the sweeper."""
from __future__ import annotations

import re
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
