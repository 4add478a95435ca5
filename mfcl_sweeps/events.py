"""Sweep events raised by a launcher's backend for whoever listens in the same process (the
notifier: mfcl_sweeps.notify). A backend sits below the sweeper and is built by the launcher,
out of the notifier's reach, so it announces what happened here instead of calling anyone.

    ALL_DOWN: every source (pool) or host (SSH launcher) of the sweep just went down; fields:
    sweep_dir, launcher, sources ([{name, reason}]), wait_s (all_down_timeout_s). Raised once
    per outage: again only after one came back and all went down again.

A listener that raises is logged: an event never fails the launch.
"""
from __future__ import annotations

import logging
from typing import Any, Callable

log = logging.getLogger("mfcl_sweeps")

ALL_DOWN = "all_down"
Listener = Callable[[str, dict], None]
_LISTENERS: list[Listener] = []


def listen(listener: Listener) -> Callable[[], None]:
    """Call `listener(event, fields)` for each event from now on; returns what stops it."""
    _LISTENERS.append(listener)
    return lambda: _LISTENERS.remove(listener) if listener in _LISTENERS else None


def emit(event: str, **fields: Any) -> None:
    for listener in list(_LISTENERS):
        try:
            listener(event, fields)
        except Exception as err:
            log.warning("mfcl: a listener of %s failed (%s: %s)", event, type(err).__name__, err)
