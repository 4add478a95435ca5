"""Which planned runs a driver launches: what its resume mode leaves, or the runs chosen by id
(`mfcl-sweeps resume DIR --run RUN_ID`, i.e. `hydra.sweeper.only_runs`); counted, and said with
reasons, before anything launches."""
from __future__ import annotations

import logging
from collections import Counter
from typing import Any, Collection, Iterable

from mfcl_sweeps.errors import MfclError
from mfcl_sweeps.model import PlannedRun

log = logging.getLogger("mfcl_sweeps")

SHOWN = 5  # runs named in one line; the rest are counted
NEW = "new"  # should_run's reason for a config the journal has never seen


def wanted(manifest: Any, run: PlannedRun, resume: str, chosen: Collection[str]) -> bool:
    """Whether this driver launches `run`: a chosen run (by run id or config hash) whatever its
    state, no other; with none chosen, as the resume mode says."""
    if chosen:
        return run.run_id in chosen or run.config_hash in chosen
    return manifest.should_run(run, resume)[0]


def _named(runs: list[PlannedRun]) -> str:
    shown = ", ".join(f"{r.run_id} ({' '.join(r.overrides)})" for r in runs[:SHOWN])
    return shown + (f" and {len(runs) - SHOWN} more" if len(runs) > SHOWN else "")


def survey(manifest: Any, runs: Iterable[PlannedRun], resume: str, chosen: Collection[str]) -> int:
    """How many of `runs` (numbered by the manifest) this driver launches. Logs what a resume
    skips and why, naming the new configs `rerun_failed_only` leaves out (a changed override
    makes every run a new config: none of them failed before). A chosen id that is no run of
    the sweep is an error, before anything launches."""
    skipped: Counter = Counter()
    new: list[PlannedRun] = []
    todo, found = 0, set()
    for run in runs:
        if chosen:
            hit = {run.run_id, run.config_hash} & set(chosen)
            found |= hit
            todo += bool(hit)
            continue
        ok, why = manifest.should_run(run, resume)
        todo += ok
        if not ok:
            skipped[why] += 1
            if why == NEW:
                new.append(run)
    if chosen:
        missing = sorted(set(chosen) - found)
        if missing:
            raise MfclError(f"hydra.sweeper.only_runs: {', '.join(missing)} is no run of this sweep; "
                            f"`mfcl-sweeps status {manifest.sweep_dir} --json` lists its runs")
        log.info("mfcl: running the %d chosen run(s) whatever their state (hydra.sweeper.only_runs)", todo)
        return todo
    log.info("mfcl: resume=%s: skipping %d run(s)%s", resume, sum(skipped.values()),
             "".join(f"; {n} {why}" for why, n in skipped.items()))
    if new:
        log.warning("mfcl: resume=%s: %d config(s) are new to this sweep (no run of the journal has their "
                    "overrides) and do not run, as this mode reruns failed runs only; run them with "
                    "hydra.sweeper.resume=skip_completed: %s", resume, len(new), _named(new))
    return todo
