"""A source's health beyond its runs' outcomes: re-enabling a disabled source once it answers,
and whether a scheduler source's controller answers. The pool asks a controller with the
scheduler's own status command (through the source's backend) because the Slurm and PBS
backends, used alone, ride out a failing `squeue`/`qstat` quietly (they report what they still
know): the pool would otherwise never learn that a source's controller is down.
"""
from __future__ import annotations

import getpass
import logging
from typing import Any, Optional

from mfcl_sweeps import events
from mfcl_sweeps.backends.pool.runtime import AllSourcesDown, Source, one_line
from mfcl_sweeps.backends.pool.sources import SCHEDULERS

log = logging.getLogger("mfcl_sweeps.backends.pool.backend")  # one logger for the pool's health lines
ANSWER_TIMEOUT_S = 20.0  # a status command that hangs longer counts as no answer
# the cheapest question each scheduler's controller must answer itself (not its accounting)
QUESTIONS = {"slurm": ["squeue", "-h", "-o", "%i", "-u"], "pbs": ["qstat", "-u"]}


def ask(src: Source) -> Optional[str]:
    """None when `src`'s controller answers; else one line saying how it failed."""
    argv = [*QUESTIONS[src.spec.kind], getpass.getuser()]
    try:
        proc = src.backend.run_command(argv, ANSWER_TIMEOUT_S)
    except Exception as err:  # its command is missing: no controller to ask
        return one_line(err)
    if proc.returncode == 0:
        return None
    said = (proc.stderr.strip() or proc.stdout.strip()).splitlines()
    return f"{argv[0]} exit {proc.returncode}: {said[-1][:300] if said else 'no output'}"


class NoAnswer(Exception):
    """A scheduler source's controller stopped answering: its runs are polled as unreachable."""


def recheck(pool: Any, now: float) -> None:
    """Re-enable a disabled source once its backend answers with a free slot again (and, for a
    scheduler disabled for its controller, once the controller answers)."""
    for src in pool.sources:
        if src.health.enabled or now - max(src.health.since, src.last_check) < pool.opts.health_check_interval_s:
            continue
        src.last_check = now
        try:
            free = src.backend.capacity()
            if src.controller_down:  # a scheduler's capacity asks nothing: its controller is asked
                note(pool, src, ask(src))
                if src.controller_down:
                    raise NoAnswer(src.controller_down)
        except Exception as err:
            pool.logs.health(src.name, "still-disabled", f"reason={one_line(err)!r}")
            continue
        if free is None or free > 0:
            src.health.enable()
            log.warning("mfcl_pool: source %s answers again: re-enabled", src.name)
            pool.logs.health(src.name, "enabled", "reason='answers again'")


def note(pool: Any, src: Source, error: Optional[str]) -> None:
    """Count one answer (the count of errors in a row starts again) or one error of `src`'s
    controller; `max_controller_errors` in a row disable it as unreachable."""
    if error is None:
        src.controller_errors, src.controller_down = 0, None
        return
    src.controller_errors += 1
    if src.controller_down is None:  # once it is unreachable, the health checks say how it stays
        pool.logs.health(src.name, "controller-error", f"count={src.controller_errors} reason={error!r}")
    if src.controller_errors >= pool.opts.max_controller_errors:
        src.controller_down = error
        pool.disable(src, f"unreachable: {src.controller_errors} controller errors in a row, last: {error}")


def down(pool: Any, src: Source, now: float) -> Optional[str]:
    """While polling: ask a scheduler source's controller (at most every poll_max_s of its own
    backend); why it counts as unreachable, or None."""
    if src.spec.kind not in SCHEDULERS:
        return None
    if now - src.last_asked >= src.backend.options.poll_max_s:
        src.last_asked = now
        note(pool, src, ask(src))
    return src.controller_down


def refused_while_down(pool: Any, src: Source) -> bool:
    """After `src` refused a submission: True if its controller does not answer either (the
    controller is at fault, not the runs: they wait in the pool for another source)."""
    if src.spec.kind not in SCHEDULERS:
        return False
    error = ask(src)
    note(pool, src, error)
    return error is not None


def check_all_down(pool: Any, now: float) -> None:
    """Every source disabled: announce it the moment it happens (once per outage, for the
    notifier), then stop the launch once it lasted `all_down_timeout_s` with no run in flight."""
    if any(s.health.enabled for s in pool.sources):
        pool.all_down_since = None
        return
    wait = pool.opts.all_down_timeout_s
    if pool.all_down_since is None:
        pool.all_down_since = now
        events.emit(events.ALL_DOWN, sweep_dir=pool.sweep_dir, launcher="mfcl_pool", wait_s=wait,
                    sources=[{"name": s.name, "reason": s.health.reason} for s in pool.sources])
    if not pool.flying and now - pool.all_down_since > wait:
        raise AllSourcesDown(
            f"every source has been disabled for {wait:g}s ("
            + "; ".join(f"{s.name}: {s.health.reason}" for s in pool.sources)
            + f"); the manifest in {pool.logs.dir.parent} keeps the runs still to do: "
            "finish them with `mfcl-sweeps complete DIR --sources ...`")
