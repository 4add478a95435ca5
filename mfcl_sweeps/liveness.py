"""Is a recorded process still the one we started? Host name, pid and the pid's start time.

A pid alone is reused; with its start time (from /proc) it names one process. A process of
another host cannot be checked from here: callers then judge by heartbeats.
"""
from __future__ import annotations

import os
import socket
from typing import Any, Iterable, Optional

HOST = socket.gethostname()


def proc_stat(pid: int) -> Optional[list[bytes]]:
    """The fields of /proc/<pid>/stat after the command name (state first), None when gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    # the command name (field 2) may hold spaces and ')'; fields after the last ')' are fixed
    return stat[stat.rindex(b")") + 2:].split()


def pid_start_time(pid: int) -> Optional[str]:
    """Start time of `pid` in clock ticks since boot (None when it is gone)."""
    fields = proc_stat(pid)
    return fields[19].decode() if fields else None


def process_alive(host: Optional[str], pid: Optional[int], start: Optional[str]) -> Optional[bool]:
    """True/False for a process of this host (a zombie counts as dead), None when it lives
    elsewhere (cannot be checked)."""
    if host != HOST or not pid:
        return None
    fields = proc_stat(int(pid))
    if fields is None or fields[0] == b"Z":
        return False
    return start is None or fields[19].decode() == start


def me() -> dict:
    """This process as a record names it: host, pid and the pid's start time."""
    return {"host": HOST, "pid": os.getpid(), "pid_start": pid_start_time(os.getpid())}


def run_alive(record: Any) -> Optional[bool]:
    """Whether a claimed/running run's recorded process (a driver holding the claim, or the job's
    worker) still lives: None when it cannot be told here (another host, no pid recorded)."""
    return process_alive(record.host, record.pid, (record.extra or {}).get("pid_start"))


def mark_lost(records: Iterable[Any]) -> int:
    """Show claimed/running runs whose process is dead as `lost` (in place; nothing journaled)."""
    from mfcl_sweeps import model

    lost = 0
    for rec in records:
        if rec.status in (model.CLAIMED, model.RUNNING) and run_alive(rec) is False:
            rec.status = model.LOST
            lost += 1
    return lost
