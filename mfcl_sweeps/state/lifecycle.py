"""Has a sweep ended? Judged from its state alone, so `watch`, the live page and the report agree
(and work from another machine on the shared filesystem)."""
from __future__ import annotations

import os
from typing import Any

from mfcl_sweeps import model
from mfcl_sweeps.layout import SweepLayout
from mfcl_sweeps.liveness import process_alive

ACTIVE = (model.PENDING, model.CLAIMED, model.RUNNING, model.PREEMPTED)


def sweep_ended(manifest: Any) -> bool:
    """Every planned run has ended. A sweep whose sweeper planned no runs ahead (the callback's
    plan of 0 runs) has ended when its process (recorded in the plan) is gone from this host, or
    when sweep_manifest.json is newer than the journal's last line (the end of a multirun writes
    it; a BasicSweeper whose job raised writes none)."""
    counts = manifest.counts()
    if counts["total"] == 0 or any(counts.get(s) for s in ACTIVE):
        return False
    plans = manifest.plans()
    if plans and plans[-1].count:
        return True
    command = (plans[-1].op.get("command") or {}) if plans else {}
    if command.get("pid") and process_alive(command.get("host"), int(command["pid"]), None) is False:
        return True
    layout = SweepLayout(manifest.sweep_dir)
    try:
        return os.stat(layout.snapshot).st_mtime_ns >= os.stat(layout.journal).st_mtime_ns
    except FileNotFoundError:
        return False
