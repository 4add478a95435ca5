"""Who drives a sweep dir: one driver without claims, or any number of claim workers.

Two drivers without claims would both run every run of the plan (nothing tells them apart), so
a driver registers itself in `.mfcl/drivers/` (host, pid, pid start time, claim or not) for as
long as it runs, and a new driver is refused while a live one of this host is registered,
unless both are claim workers (claims keep them apart) or each runs its own part of every run
(torchrun's one driver per node: `part` is `node_rank=K`). A driver of another host cannot be
checked from here and does not block; a file of a dead driver is dropped.
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Callable, Optional

from mfcl_sweeps.errors import MfclError
from mfcl_sweeps.fsio import write_json
from mfcl_sweeps.layout import SweepLayout
from mfcl_sweeps.liveness import me, process_alive
from mfcl_sweeps.state.journal import read_json_file

JOIN = "hydra.sweeper.claim=true"


def live_drivers(drivers_dir: Path) -> list[dict]:
    """The registered drivers of this host that are alive; files of dead ones are removed."""
    alive = []
    for path in sorted(drivers_dir.glob("*.json")):
        info = read_json_file(path) or {}
        state = process_alive(info.get("host"), info.get("pid"), info.get("pid_start"))
        if state:
            alive.append(info)
        elif state is False:
            path.unlink(missing_ok=True)
    return alive


def refusal(sweep_dir: str, other: dict, claim: bool, part: Optional[str]) -> Optional[str]:
    """The line refusing a new driver (claim worker or not, running `part` of each run) beside
    the live driver `other`."""
    if part is not None and other.get("part") is not None:
        if part != other["part"]:
            return None
        return (f"{sweep_dir}: another driver runs {part} of this sweep's runs (pid {other['pid']} on "
                f"{other['host']}); give each driver its own hydra.launcher.node_rank")
    who = f"pid {other['pid']} on {other['host']}, started {time.strftime('%H:%M:%S', time.localtime(other['t']))}"
    if not other.get("claim"):
        return (f"{sweep_dir}: another driver is running this sweep without claims ({who}); wait for it to end, "
                f"or stop it and start every driver with {JOIN} to share the runs")
    if not claim:
        return (f"{sweep_dir}: claim workers are running this sweep ({who}); "
                f"to join them add {JOIN}, or wait for them to end")
    return None


def enter(sweep_dir: str, claim: bool, part: Optional[str] = None) -> Callable[[], None]:
    """Register this process as a driver of `sweep_dir`, or raise MfclError (one line) when a live
    driver already runs it and the two cannot share it; returns the function that unregisters."""
    drivers_dir = Path(SweepLayout(sweep_dir).drivers)
    drivers_dir.mkdir(parents=True, exist_ok=True)
    check(sweep_dir, drivers_dir, claim, part, None)
    info = {**me(), "claim": claim, "part": part, "t": time.time()}
    path = drivers_dir / f"{info['host']}-{info['pid']}.json"
    write_json(path, info)
    try:  # two drivers that started together both passed the first check: the later one yields
        check(sweep_dir, drivers_dir, claim, part, (info["t"], info["pid"]))
    except MfclError:
        path.unlink(missing_ok=True)
        raise
    return lambda: path.unlink(missing_ok=True)


def check(sweep_dir: str, drivers_dir: Path, claim: bool, part: Optional[str], registered: Optional[tuple]) -> None:
    """Raise the refusal for the first live driver this one cannot share the sweep with (only
    drivers registered before `registered`, this driver's own (time, pid), once it is registered)."""
    for other in live_drivers(drivers_dir):
        if other.get("pid") == os.getpid():
            continue
        if registered is not None and (other.get("t", 0), other.get("pid")) > registered:
            continue
        line = refusal(sweep_dir, other, claim, part)
        if line:
            raise MfclError(line)
