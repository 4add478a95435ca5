"""The replay checkpoint is a cache: with it or without it, the same state."""
from __future__ import annotations

from mfcl_sweeps import model
from mfcl_sweeps.expand import count, iter_runs
from mfcl_sweeps.spec import load_spec
from mfcl_sweeps.state.manifest import SweepManifest
from mfcl_sweeps.state.records import CHECKPOINT_NAME


def sweep_with_history(sweep_dir):
    spec = load_spec(None, cli_overrides=["a=range(0,30)", "b=x,y"])
    manifest = SweepManifest(sweep_dir)
    manifest.record_plan(spec.to_dict(), spec.spec_hash(), count(spec), cluster="c")
    runs = list(manifest.assign(iter_runs(spec)))
    for i, run in enumerate(runs[:40]):
        manifest.transition(run, model.RUNNING, host="h", pid=i, start_time=float(i))
        manifest.transition(run, model.FAILED if i % 7 == 0 else model.COMPLETED, end_time=i + 5.0, exit_code=0)
    return manifest, runs


def state(manifest: SweepManifest):
    return ({h: r.to_dict() for h, r in manifest.records().items()}, manifest.counts(),
            sorted(manifest.summary(), key=repr), [(p.spec_hash, p.base, p.count) for p in manifest.plans()])


def test_checkpoint_then_more_ops_gives_the_same_state_as_a_full_replay(tmp_path):
    manifest, runs = sweep_with_history(tmp_path)
    manifest.checkpoint()
    assert (tmp_path / ".mfcl" / CHECKPOINT_NAME).exists()
    manifest.transition(runs[0], model.RUNNING, start_time=100.0)  # a rerun of a packed record
    manifest.transition(runs[50], model.RUNNING, start_time=101.0)  # a run new to the journal
    manifest.transition(runs[0], model.COMPLETED, end_time=110.0)

    from_checkpoint = SweepManifest(tmp_path)
    assert [r.run_id for r in from_checkpoint.records_with_status(model.RUNNING)] == [runs[50].run_id]
    expected_failed = {r.run_id for i, r in enumerate(runs[:40]) if i % 7 == 0 and i != 0}
    assert {r.run_id for r in from_checkpoint.records_with_status(model.FAILED)} == expected_failed
    (tmp_path / ".mfcl" / CHECKPOINT_NAME).rename(tmp_path / "saved.ckpt")
    full = SweepManifest(tmp_path)
    assert state(full) == state(from_checkpoint)
    assert full.records()[runs[0].config_hash].attempts == 2


def test_a_checkpoint_of_another_journal_is_ignored(tmp_path):
    manifest, runs = sweep_with_history(tmp_path / "a")
    manifest.checkpoint()
    journal = tmp_path / "a" / ".mfcl" / "journal.jsonl"
    lines = journal.read_text().splitlines(keepends=True)
    # same inode, same size, different bytes before the checkpointed offset
    journal.write_text("".join(lines[:-2]) + lines[-1] + lines[-2])
    replayed = SweepManifest(tmp_path / "a").records()
    assert replayed[runs[39].config_hash].status == model.RUNNING  # the reordered lines count, not the cache


def test_write_snapshot_leaves_a_checkpoint_that_status_reads(tmp_path):
    manifest, runs = sweep_with_history(tmp_path)
    manifest.write_snapshot()
    reader = SweepManifest(tmp_path)
    assert reader.counts() == {"total": 60, "pending": 20, "completed": 34, "failed": 6}
    assert reader.journal.lines_read == 81  # resumed at the end: nothing parsed
