"""Sweep progress: a live line on a terminal (done / running / failed / ETA), plain log lines
otherwise (`log_runs=False`: failed runs only, where the jobs' own output shows the progress).
Rendering happens in the caller's thread: no refresh thread, so forking job processes from the
driver never copies a lock held by another thread."""
from __future__ import annotations

import logging
import sys
import time
from typing import Optional

log = logging.getLogger("mfcl_sweeps")


def format_eta(seconds: Optional[float]) -> str:
    if seconds is None:
        return "?"
    seconds = int(seconds)
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


class Progress:
    def __init__(self, total: int, *, live: Optional[bool] = None, label: str = "sweep",
                 log_every_s: float = 10.0, log_runs: bool = True) -> None:
        self.total, self.label, self.log_runs = total, label, log_runs
        self.done = self.failed = self.running = 0
        self.t0 = time.monotonic()
        self.live = sys.stderr.isatty() if live is None else live
        self._console = None
        self._last_log = 0.0
        self.log_every_s = log_every_s

    def eta(self) -> Optional[float]:
        if not self.done or not self.total:
            return None
        rate = self.done / max(time.monotonic() - self.t0, 1e-9)
        return max(0, self.total - self.done) / rate

    def of_total(self) -> str:
        """`done/total`, or just `done` when how many will launch is not known (total 0: a claim
        worker) or more ended than were counted (a caller's miscount is never shown as 13/12)."""
        return f"{self.done}/{self.total}" if self.total >= self.done and self.total else str(self.done)

    def line(self) -> str:
        return (f"{self.label}: {self.of_total()} done, {self.running} running, "
                f"{self.failed} failed, ETA {format_eta(self.eta())}")

    def update(self, *, running: Optional[int] = None) -> None:
        if running is not None:
            self.running = running
        self._render()

    def finished(self, ok: bool, run_id: str, outcome: Optional[str] = None) -> None:
        """A run ended: completed (`ok`), FAILED, or the `outcome` given (e.g. cancelled: no failure)."""
        self.done += 1
        self.running = max(0, self.running - 1)  # it no longer runs (never "1/1 done, 1 running")
        self.failed += 0 if ok or outcome else 1
        if not ok or (not self.live and self.log_runs):
            log.info("run %s %s (%s)", run_id, outcome or ("completed" if ok else "FAILED"), self.of_total())
        self._render(force=not self.live)

    def _render(self, force: bool = False) -> None:
        now = time.monotonic()
        if self.live:
            if now - self._last_log >= 0.2 or self.done == self.total:
                self._last_log = now
                sys.stderr.write("\r\x1b[2K" + self.line())
                sys.stderr.flush()
        elif force and self.log_runs and now - self._last_log >= self.log_every_s:
            self._last_log = now
            log.info(self.line())

    def clear(self) -> None:
        """Wipe the live line so that job output printed next starts on a clean line."""
        if self.live:
            sys.stderr.write("\r\x1b[2K")
            sys.stderr.flush()

    def close(self) -> None:
        if self.live:
            sys.stderr.write("\r\x1b[2K" + self.line() + "\n")
            sys.stderr.flush()
