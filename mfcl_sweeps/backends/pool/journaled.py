"""What `mfcl-sweeps status`, `cancel` and claim takeover ask of a pool's journaled runs: each
record names the kind of source that ran it (`source_kind`), whose backend answers for it."""
from __future__ import annotations

from collections import defaultdict
from typing import Any, Sequence

from mfcl_sweeps import backends


def kind_of(record: Any) -> Any:
    kind = (getattr(record, "extra", None) or {}).get("source_kind")
    return kind if kind in backends.BACKENDS and kind != "pool" else None


def by_kind(records: Sequence[Any]) -> dict[str, list[Any]]:
    groups: dict[str, list[Any]] = defaultdict(list)
    for rec in records:
        if kind_of(rec):
            groups[kind_of(rec)].append(rec)
    return groups


def refresh_records(records: Sequence[Any]) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for kind, recs in by_kind(records).items():
        out.update(backends.get(kind).refresh_records(recs) or {})
    return out


def cancel_records(records: Sequence[Any]) -> list[str]:
    out: list[str] = []
    for kind, recs in by_kind(records).items():
        out.extend(backends.get(kind).cancel_records(recs) or [])
    return out


def still_running(record: Any) -> bool:
    kind = kind_of(record)
    return bool(kind) and backends.get(kind).still_running(record)
