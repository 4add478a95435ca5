"""Hydra's own launchers get growing batches from the mfcl sweeper (issue 18): the first job of a
large sweep waits only for the first batch's identities."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
from apprun import manifest_runs, run_app, side_records

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


@pytest.mark.slow
def test_a_sweep_past_the_first_batch_runs_every_run_once_with_its_index(tmp_path: Path):
    proc = run_app("behave", tmp_path, "hydra/sweeper=mfcl", "hydra/launcher=basic",
                   f"value=range(0,{FIRST_BATCH + 1})", timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert re.findall(r"Launching (\d+) jobs locally", proc.stdout + proc.stderr) == [str(FIRST_BATCH), "1"]
    runs = manifest_runs(tmp_path / "sweep")
    assert len(runs) == FIRST_BATCH + 1 and {r["status"] for r in runs.values()} == {"completed"}
    seen = {rec["env"]["MFCL_SWEEP_RUN_ID"]: rec["value"] for rec in side_records(tmp_path).values()}
    # each run got its own identity (value i is the run at index i), and its job dir is numbered
    # by its index (hydra.job.num), across the batch boundary too
    assert seen == {rid: r["index"] for rid, r in runs.items()}
    assert sorted(int(p.name) for p in (tmp_path / "sweep").iterdir() if p.name.isdigit()) == \
        sorted(r["index"] for r in runs.values())
