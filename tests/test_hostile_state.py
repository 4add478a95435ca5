"""A damaged sweep dir: a journal line that is JSON but not a journal op, an unknown run state, a
damaged replay checkpoint. Readers stop with one line naming file:line and what to do (or, for
the checkpoint, a cache, replay the journal without it)."""
from __future__ import annotations

import marshal
import subprocess
import sys
from pathlib import Path

import pytest

from mfcl_sweeps.errors import ManifestError
from mfcl_sweeps.model import PlannedRun
from mfcl_sweeps.state.manifest import SweepManifest
from mfcl_sweeps.state.records import _FORMAT, CHECKPOINT_NAME


def sweep_with_one_run(tmp_path: Path) -> Path:
    sweep = tmp_path / "sweep"
    m = SweepManifest(str(sweep))
    m.record_plan({"blocks": []}, "spec1", 2)
    run = PlannedRun(overrides=("a=1",), config_hash="h1", index=0, run_id="00000_default_a-1")
    m.transition(run, "running", pid=1)
    m.transition(run, "completed")
    return sweep


@pytest.mark.parametrize("line,words", [
    ('{"op":"t","h":"h2"}', ["lacks its run hash 'h' or time 't'"]),
    ('{"op":"t","h":"h2","s":"zombie","t":1.0}', ["unknown run state 'zombie'", "interrupted"]),
    ('{"op":"t","h":"h2","s":"running","t":1.0,"f":[1]}', ["not objects"]),
    ('{"op":"plan","spec_hash":"x"}', ["lacks its 'spec_hash' or run 'count'"]),
    ('[1, 2]', ["not an object"]),
    ('{"op":"t","h":', ["corrupt journal line"]),
])
def test_a_bad_journal_line_is_named_with_what_to_do(tmp_path, line, words):
    sweep = sweep_with_one_run(tmp_path)
    journal = sweep / ".mfcl" / "journal.jsonl"
    lines = journal.read_text().splitlines()
    journal.write_text("\n".join([lines[0], line, *lines[1:]]) + "\n")
    with pytest.raises(ManifestError) as err:
        SweepManifest(str(sweep)).records()
    message = str(err.value)
    assert message.startswith(f"{journal}:2: ") and "remove or repair that line" in message, message
    assert all(w in message for w in words), message
    assert "\n" not in message


def test_status_says_it_in_one_line(tmp_path):
    sweep = sweep_with_one_run(tmp_path)
    with open(sweep / ".mfcl" / "journal.jsonl", "a") as f:
        f.write('{"op":"t","h":"h1","s":"exploded","t":2.0}\n')
    done = subprocess.run([sys.executable, "-m", "mfcl_sweeps.cli", "status", str(sweep)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode != 0 and done.stderr.count("\n") == 1, done.stderr
    assert ":4: journal line has an unknown run state 'exploded'" in done.stderr


@pytest.mark.parametrize("payload", [
    b"garbage",
    marshal.dumps({"format": _FORMAT}),
    marshal.dumps({"format": _FORMAT, "ino": 1, "offset": 0, "lines": 0, "tail": b"", "state": {},
                   "hashes": [], "rows": []}),
    marshal.dumps({"format": _FORMAT, "ino": 1, "offset": 0, "lines": 0, "tail": b"", "state": None}),
])
def test_a_damaged_checkpoint_is_ignored(tmp_path, payload):
    sweep = sweep_with_one_run(tmp_path)
    (sweep / ".mfcl" / CHECKPOINT_NAME).write_bytes(payload)
    assert SweepManifest(str(sweep)).records()["h1"].status == "completed"
