"""Host health: when a host is disabled and re-enabled (pure rules), and the logs that say so.

A host is disabled when it is unreachable, fails `max_consecutive_failures` jobs in a row, or
its failure rate passes `max_failure_rate` once it has run `min_jobs_for_rate` jobs. A disabled
host is re-enabled (its counts reset) when a periodic check finds it answering again.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional


@dataclass(frozen=True)
class HealthRules:
    max_consecutive_failures: int = 3  # 0: never disable for failures
    max_failure_rate: float = 0.4
    min_jobs_for_rate: int = 5


@dataclass
class HostHealth:
    enabled: bool = True
    finished: int = 0
    failed: int = 0
    consecutive: int = 0
    reason: Optional[str] = None  # why it is disabled
    since: float = 0.0  # when it was disabled

    def record(self, ok: bool, rules: HealthRules) -> Optional[str]:
        """Count one finished job; the reason to disable the host, if this job gives one."""
        self.finished += 1
        if ok:
            self.consecutive = 0
            return None
        self.failed += 1
        self.consecutive += 1
        if rules.max_consecutive_failures and self.consecutive >= rules.max_consecutive_failures:
            return f"{self.consecutive} consecutive failed jobs"
        rate = self.failed / self.finished
        if self.finished >= rules.min_jobs_for_rate and rate > rules.max_failure_rate:
            return f"failure rate {rate:.0%} over {self.finished} jobs (limit {rules.max_failure_rate:.0%})"
        return None

    def disable(self, reason: str, now: float) -> bool:
        """True if this newly disables the host."""
        was = self.enabled
        self.enabled, self.reason, self.since = False, reason, now if was else self.since
        return was

    def enable(self) -> None:
        self.enabled, self.reason = True, None
        self.finished = self.failed = self.consecutive = 0


class SweepLogs:
    """`<sweep_dir>/logs/health_status.log` (health events) and `logs/sources/<host>.log`."""

    def __init__(self, sweep_dir: str) -> None:
        self.dir = Path(sweep_dir) / "logs"
        self._lock = threading.Lock()

    def _append(self, path: Path, line: str) -> None:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
        with self._lock:
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "a") as f:
                f.write(f"{stamp} {line.rstrip()}\n")

    def health(self, host: str, event: str, detail: str = "") -> None:
        self._append(self.dir / "health_status.log", f"host={host} event={event}" + (f" {detail}" if detail else ""))
        self.host(host, f"health: {event} {detail}")

    def host(self, host: str, line: str) -> None:
        self._append(self.dir / "sources" / f"{host}.log", line)
