"""SIGINT, SIGTERM and SIGHUP as one thing for the driver: a request to stop.

Ctrl-C, Slurm's/Kubernetes' SIGTERM and a closed terminal's SIGHUP all end a sweep the same way:
the driver stops launching, stops its running jobs, journals them `interrupted`, writes the
manifest, prints one line and exits 128 + the signal's number. The handler only records the
signal, so a signal can never tear a journal append or be dropped by an after-fork hook; it
raises (to cut a wait short) only inside `interruptible()` regions. A second signal asks for a
forced stop: jobs are killed at once instead of being given their grace period.
"""
from __future__ import annotations

import contextlib
import signal
import sys
import threading
from typing import Any, Iterator, Optional

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Interrupted(BaseException):
    """Raised out of an `interruptible()` region when a stop signal arrives."""


class SweepInterrupted(SystemExit):
    """The driver was stopped by a signal and has cleaned up: exit 128 + signal, no traceback.

    A SystemExit, so that Hydra (which reports every Exception with exit code 1) lets it through
    with its own exit code."""

    def __init__(self, signum: int, message: str) -> None:
        super().__init__(128 + signum)
        self.signum, self.message = signum, message


class StopSignals:
    """Between `install()` and `restore()`, stop signals are recorded instead of killing the driver."""

    def __init__(self) -> None:
        self.signum: Optional[int] = None  # the first stop signal
        self.count = 0  # stop signals received
        self.seen = 0  # of which the driver has acted upon
        self._raising = False
        self._old: dict[int, Any] = {}

    @property
    def pending(self) -> bool:
        """A stop signal the driver has not acted upon yet."""
        return self.count > self.seen

    def acknowledge(self) -> None:
        self.seen = self.count

    def _handle(self, signum: int, frame: Any) -> None:
        self.count += 1
        if self.signum is None:
            self.signum = signum
        if self._raising:
            self._raising = False
            raise Interrupted()

    @contextlib.contextmanager
    def interruptible(self) -> Iterator[None]:
        """A region (a wait, a grace period) that a new stop signal ends at once by `Interrupted`."""
        if self.pending:
            raise Interrupted()
        self._raising = True
        try:
            yield
        finally:
            self._raising = False

    def install(self) -> None:
        """Record stop signals from now on (in the main thread only: Python cannot install
        handlers elsewhere, and a launch from another thread keeps the caller's handling)."""
        if threading.current_thread() is threading.main_thread():
            for sig in STOP_SIGNALS:
                self._old[sig] = signal.signal(sig, self._handle)

    def restore(self) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)
        self._old.clear()


def say(line: str) -> None:
    """The driver's one line about an interruption, on stderr whatever logging is set to."""
    try:
        sys.stderr.write(line + "\n")
        sys.stderr.flush()
    except (OSError, ValueError):  # a closed terminal (SIGHUP): nothing to tell
        pass
