"""Stop local runs recorded in a sweep's journal: their process groups, SIGTERM then SIGKILL.

Used by `mfcl-sweeps cancel` through the local and torchrun backends (`cancel_records`).
Linux only: liveness and group membership come from /proc.
"""
from __future__ import annotations

import os
from typing import Any, Iterable, Optional

from mfcl_sweeps.backends.children import stop_gracefully
from mfcl_sweeps.liveness import HOST

DEFAULT_GRACE_S = 10.0


def _stat(pid: int) -> Optional[tuple[str, int]]:
    """(state, process group) of a process, None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return fields[0].decode(), int(fields[2])


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes of process group `pgid`."""
    members = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            st = _stat(int(name))
            if st is not None and st[1] == pgid and st[0] != "Z":
                members.append(int(name))
    return members


def _target(rec: Any) -> Optional[tuple[str, int]]:
    """("group", pgid) or ("pid", pid) to signal for a record, None when nothing of it runs here."""
    if rec.host not in (None, HOST) or not rec.pid:
        return None
    st = _stat(int(rec.pid))
    if st is None or st[0] == "Z":
        return None
    if rec.pgid is not None:
        # a pid whose group is not the recorded one is another process that reused the pid
        return ("group", st[1]) if st[1] == int(rec.pgid) else None
    return ("group", st[1]) if st[1] == int(rec.pid) else ("pid", int(rec.pid))


def _alive(target: tuple[str, int]) -> bool:
    kind, num = target
    if kind == "group":
        return bool(group_members(num))
    st = _stat(num)
    return st is not None and st[0] != "Z"


def _signal(target: tuple[str, int], sig: int) -> None:
    kind, num = target
    try:
        (os.killpg if kind == "group" else os.kill)(num, sig)
    except ProcessLookupError:
        pass


def cancel_records(records: Iterable[Any], grace_s: float = DEFAULT_GRACE_S) -> list[str]:
    """Stop the recorded processes of `records` that run on this host; return the config hashes
    of the runs that no longer run here (stopped now, or already gone). Runs of other hosts are
    left alone and not returned."""
    targets: dict[tuple[str, int], list[str]] = {}
    stopped = []
    for rec in records:
        if rec.host not in (None, HOST):
            continue
        target = _target(rec)
        if target is None:
            stopped.append(rec.config_hash)
        else:
            targets.setdefault(target, []).append(rec.config_hash)
    alive = stop_gracefully(targets, _signal, _alive, grace_s)
    for target, hashes in targets.items():
        if target not in alive:
            stopped.extend(hashes)
    return stopped
