"""Hydra's own launchers get growing batches from the mfcl sweeper (issue 18): the first job of a
large sweep waits only for the first batch's identities."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from apprun import APPS, manifest_runs, side_records

from mfcl_sweeps.batches import FIRST_BATCH, growing_batches


def test_batches_double_and_take_runs_only_when_launched():
    taken = []

    def runs():
        for i in range(1000):
            taken.append(i)
            yield i

    batches = growing_batches(runs())
    first = next(batches)
    assert first == list(range(FIRST_BATCH)) and len(taken) == FIRST_BATCH  # nothing beyond the first batch built
    assert [len(first)] + [len(b) for b in batches] == [100, 200, 400, 300]
    assert taken == list(range(1000))


# The sweep below runs with a first batch of 2, not FIRST_BATCH (100): Hydra's BasicLauncher
# composes each job's config again (~0.2 s a job on 2 cores), and 7 jobs cross two boundaries
# where 101 crossed one. The sweeper's own growing_batches is used, with its default `first`
# replaced; a sweeper that passed its own `first` or cut batches another way fails the test.
FIRST = 2
WITH_FIRST_BATCH = f"""
import functools, runpy, sys
import mfcl_sweeps.sweeper as sweeper
sweeper.growing_batches = functools.partial(sweeper.growing_batches, first={FIRST})
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def test_a_sweep_past_the_first_batch_runs_every_run_once_with_its_index(tmp_path: Path):
    runs_n = FIRST + 2 * FIRST + 1  # batches of 2, 4, 1
    proc = subprocess.run([sys.executable, "-c", WITH_FIRST_BATCH, str(APPS / "behave" / "app.py"), "--multirun",
                           f"hydra.sweep.dir={tmp_path / 'sweep'}", f"side_dir={tmp_path / 'side'}",
                           "hydra/sweeper=mfcl", "hydra/launcher=basic", f"value=range(0,{runs_n})"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert re.findall(r"Launching (\d+) jobs locally", proc.stdout + proc.stderr) == [str(FIRST), str(2 * FIRST), "1"]
    runs = manifest_runs(tmp_path / "sweep")
    assert len(runs) == runs_n and {r["status"] for r in runs.values()} == {"completed"}
    seen = {rec["env"]["MFCL_SWEEP_RUN_ID"]: rec["value"] for rec in side_records(tmp_path).values()}
    # each run got its own identity (value i is the run at index i), and its job dir is numbered
    # by its index (hydra.job.num), across the batch boundaries too
    assert seen == {rid: r["index"] for rid, r in runs.items()}
    assert sorted(int(p.name) for p in (tmp_path / "sweep").iterdir() if p.name.isdigit()) == \
        sorted(r["index"] for r in runs.values())
