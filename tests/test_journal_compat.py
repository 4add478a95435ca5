"""A journal written by an earlier release replays to the same records and snapshot today (as
Optuna keeps for its journal storage): the format is a promise to sweeps already on disk."""
from __future__ import annotations

import json
import marshal
import os
import shutil
from pathlib import Path

import pytest

from mfcl_sweeps.state.manifest import SweepManifest

FIXTURE = Path(__file__).parent / "fixtures" / "journal_v1"


@pytest.fixture
def old_sweep(tmp_path):
    sweep = tmp_path / "sweep"
    shutil.copytree(FIXTURE, sweep)
    return sweep


def expected_snapshot(sweep: Path) -> dict:
    snap = json.loads((FIXTURE / "sweep_manifest.json").read_text())
    snap["sweep_dir"] = str(sweep)
    return snap


def written_snapshot(manifest: SweepManifest) -> dict:
    return json.loads(manifest.write_snapshot().read_text())


def test_an_old_journal_replays_to_the_same_snapshot(old_sweep):
    (old_sweep / ".mfcl" / "replay.ckpt").unlink()
    assert written_snapshot(SweepManifest(old_sweep)) == expected_snapshot(old_sweep)


def test_an_old_checkpoint_is_read_and_the_lines_after_it_replayed(old_sweep):
    # the checkpoint names the journal's inode; the copy has another one, as after a restore
    ckpt = old_sweep / ".mfcl" / "replay.ckpt"
    data = marshal.loads(ckpt.read_bytes())
    data["ino"] = os.stat(old_sweep / ".mfcl" / "journal.jsonl").st_ino
    ckpt.write_bytes(marshal.dumps(data))
    manifest = SweepManifest(old_sweep)
    manifest.refresh()
    total = len((old_sweep / ".mfcl" / "journal.jsonl").read_text().splitlines())
    assert 0 < data["lines"] < total and manifest.journal.lines_read == total
    assert written_snapshot(manifest) == expected_snapshot(old_sweep)


def test_old_plan_index_files_keep_their_indices(old_sweep):
    from mfcl_sweeps.expand import count, iter_runs
    from mfcl_sweeps.spec import load_spec

    manifest = SweepManifest(old_sweep)
    spec = load_spec(None, cli_overrides=["a=range(0,8)", "b=x,'y z'"])
    manifest.record_plan(spec.to_dict(), spec.spec_hash(), count(spec), command={"argv": [], "cwd": "/w"}, git={})
    old = {r["config_hash"]: (r["index"], r["run_id"]) for r in expected_snapshot(old_sweep)["runs"]}
    assigned = {run.config_hash: (run.index, run.run_id) for run in manifest.assign(iter_runs(spec))}
    assert all(assigned[h] == ix for h, ix in old.items() if h in assigned)
    assert len(set(i for i, _ in assigned.values())) == len(assigned)


def test_an_old_checkpoints_packed_records_unpack_to_the_records_a_replay_gives(old_sweep):
    # replay_ckpt_v2: the whole journal checkpointed by an earlier release, every record packed as
    # RunRecord's columns in that release's field order (journal_v1's own one packs none)
    from mfcl_sweeps.state.records import read_checkpoint

    state = old_sweep / ".mfcl"
    data = marshal.loads((FIXTURE.parent / "replay_ckpt_v2" / "replay.ckpt").read_bytes())
    data["ino"] = os.stat(state / "journal.jsonl").st_ino
    (state / "replay.ckpt").write_bytes(marshal.dumps(data))
    checkpoint = read_checkpoint(state, state / "journal.jsonl")
    assert checkpoint is not None and len(checkpoint.records) == len(data["rows"]) == 12
    packed = {h: r.to_dict() for h, r in checkpoint.records.all().items()}
    (state / "replay.ckpt").unlink()
    replayed = {h: r.to_dict() for h, r in SweepManifest(old_sweep).records().items()}
    assert packed == replayed
