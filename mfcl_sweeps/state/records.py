"""Run records as replayed from the journal, and the replay checkpoint that makes reading a
100,000-run sweep fast.

Parsing a 100,000-run journal (~50 MB of JSON) takes seconds; `mfcl-sweeps status` must take
less than one. So a replay can be checkpointed to `.mfcl/replay.ckpt` (marshal): the journal
position it covers, and each record packed as bytes next to the few columns a summary needs
(status, group, start, end). A reader loads the checkpoint, unpacks only the records it is asked
for or that new journal ops touch, and replays the rest of the journal as usual. The checkpoint
is a cache: it is used only if the journal still holds the very bytes it was taken after.
"""
from __future__ import annotations

import marshal
import os
import sys
from dataclasses import dataclass, field, fields, make_dataclass
from pathlib import Path
from typing import Iterable, Iterator, Optional

from mfcl_sweeps import model
from mfcl_sweeps.fsio import atomic_write

CHECKPOINT_NAME = "replay.ckpt"
_FORMAT = (2, sys.version_info[:2])  # marshal's format follows the Python version
_TAIL_BYTES = 256


# What a run's transition ops set (replay applies these and keeps any other field in `extra`),
# each None until one does. In RunRecord they stand between the counters and `extra`, in this
# order: the order of the replay checkpoint's columns (a new field goes last, after `extra`).
TRANSITION_FIELDS: dict[str, type] = {
    "attempt": int,  # the launcher's attempt number of the latest start
    "exit_code": int, "error": str, "start_time": float, "end_time": float,
    "host": str, "pid": int, "pgid": int, "owner": str, "backend": str, "backend_job_id": str,
    "job_dir": str, "cluster": str, "return_value": str,
    "stderr_tail": str,  # a failed run's last log lines
}


@dataclass(slots=True)
class _RunCounts:
    """Who a run is (its first transition's identity) and what its transitions counted."""

    config_hash: str
    run_id: str = ""
    index: int = -1
    group: str = "default"
    name: Optional[str] = None
    overrides: list = field(default_factory=list)
    budget: Optional[dict] = None
    metadata: dict = field(default_factory=dict)
    status: str = model.PENDING
    attempts: int = 0  # starts (RUNNING transitions)
    preemptions: int = 0


_RunTransitions = make_dataclass(
    "_RunTransitions", [(name, Optional[kind], None) for name, kind in TRANSITION_FIELDS.items()],
    bases=(_RunCounts,), slots=True, namespace={"__module__": __name__})


@dataclass(slots=True)
class RunRecord(_RunTransitions):
    """One run's state as replayed from the journal: _RunCounts' fields, TRANSITION_FIELDS, extra."""

    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        out = {k: getattr(self, k) for k in (
            "run_id", "config_hash", "index", "group", "name", "overrides", "job_dir", "status", "attempts",
            "preemptions", "exit_code", "error", "start_time", "end_time", "host", "backend", "backend_job_id",
            "cluster", "return_value", "stderr_tail", "budget", "metadata", "pid", "pgid", "owner")}
        if self.extra:
            out["extra"] = self.extra
        return out

    def duration(self) -> Optional[float]:
        if self.start_time is None or self.end_time is None:
            return None
        return max(0.0, self.end_time - self.start_time)


_NAMES = tuple(f.name for f in fields(RunRecord))


def _pack(rec: RunRecord) -> bytes:
    return marshal.dumps(tuple(getattr(rec, n) for n in _NAMES))


def _unpack(data: bytes) -> RunRecord:
    return RunRecord(*marshal.loads(data))


class RecordStore:
    """config hash -> RunRecord; records loaded from a checkpoint stay packed until used."""

    def __init__(self) -> None:
        self._live: dict[str, RunRecord] = {}
        self._packed: dict[str, tuple[bytes, str, str, Optional[float], Optional[float]]] = {}

    def get(self, config_hash: str) -> Optional[RunRecord]:
        rec = self._live.get(config_hash)
        if rec is None and config_hash in self._packed:
            rec = self._live[config_hash] = _unpack(self._packed.pop(config_hash)[0])
        return rec

    def add(self, rec: RunRecord) -> None:
        self._live[rec.config_hash] = rec

    def __contains__(self, config_hash: str) -> bool:
        return config_hash in self._live or config_hash in self._packed

    def __len__(self) -> int:
        return len(self._live) + len(self._packed)

    def hashes(self) -> set[str]:
        return self._live.keys() | self._packed.keys()

    def all(self) -> dict[str, RunRecord]:
        for config_hash in list(self._packed):
            self.get(config_hash)
        return dict(self._live)

    def summary(self) -> Iterator[tuple[str, str, Optional[float], Optional[float]]]:
        """(status, group, start_time, end_time) of every record, without unpacking any."""
        for rec in self._live.values():
            yield rec.status, rec.group, rec.start_time, rec.end_time
        for _, status, group, start, end in self._packed.values():
            yield status, group, start, end

    def with_status(self, statuses: Iterable[str]) -> list[RunRecord]:
        wanted = set(statuses)
        chosen = [h for h, row in self._packed.items() if row[1] in wanted]
        return [r for r in self._live.values() if r.status in wanted] + [self.get(h) for h in chosen]

    def dump(self) -> dict:
        rows = dict(self._packed)
        for h, rec in self._live.items():
            rows[h] = (_pack(rec), rec.status, rec.group, rec.start_time, rec.end_time)
        return {"hashes": list(rows), "rows": list(rows.values())}

    @classmethod
    def load(cls, data: dict) -> "RecordStore":
        store = cls()
        store._packed = dict(zip(data["hashes"], data["rows"]))
        return store


@dataclass
class Checkpoint:
    """A replay state (`state`: whatever the manifest keeps besides records) at a journal position."""

    ino: int
    offset: int
    lines: int
    tail: bytes  # the journal's bytes just before `offset`: proves it is the same journal
    state: dict
    records: RecordStore


def write_checkpoint(state_dir: Path, cp: Checkpoint) -> None:
    payload = marshal.dumps({"format": _FORMAT, "ino": cp.ino, "offset": cp.offset, "lines": cp.lines,
                             "tail": cp.tail, "state": cp.state, **cp.records.dump()})
    atomic_write(state_dir / CHECKPOINT_NAME, payload, fsync=False)  # a cache: a lost one is rebuilt


def journal_tail(journal_path: Path, offset: int) -> bytes:
    with open(journal_path, "rb") as f:
        start = max(0, offset - _TAIL_BYTES)
        f.seek(start)
        return f.read(offset - start)


def load_checkpoint(state_dir: Path) -> Optional[Checkpoint]:
    """The checkpoint file as it is (its store checks that it still agrees), or None."""
    try:
        data = marshal.loads((state_dir / CHECKPOINT_NAME).read_bytes())
    except (OSError, ValueError, EOFError, TypeError):
        return None
    if not isinstance(data, dict) or data.get("format") != _FORMAT:
        return None
    try:  # a cache: one that is damaged is ignored, and the journal replayed
        if not {"plans", "next_free", "plan_cluster"} <= set(data["state"]):
            return None
        return Checkpoint(data["ino"], data["offset"], data["lines"], data["tail"], data["state"],
                          RecordStore.load(data))
    except (KeyError, TypeError, ValueError):
        return None


def read_checkpoint(state_dir: Path, journal_path: Path) -> Optional[Checkpoint]:
    """The checkpoint, if there is one that the journal still agrees with; else None."""
    data = load_checkpoint(state_dir)
    try:
        st = os.stat(journal_path)
    except OSError:
        return None
    if data is None or data.ino != st.st_ino or data.offset > st.st_size \
            or journal_tail(journal_path, data.offset) != data.tail:
        return None
    return data
