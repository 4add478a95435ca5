"""The pool's four logs under `<sweep_dir>/logs/` (one line each, timestamped, appended):

- task_assignments.log: `run=ID attempt=N source=NAME kind=K job=BACKEND_ID [reason=...]` per start;
- source_utilization.log: `source=NAME busy=B slots=S enabled=yes|no started=N` per source, periodically;
- health_status.log: `source=NAME event=disabled|enabled|lost|withdrawn reason='...'` (the SSH
  launcher's own host lines, `host=...`, land in the same file);
- sources/<name>.log: what happened on one source.
"""
from __future__ import annotations

from mfcl_sweeps.backends.ssh.health import SweepLogs


class PoolLogs(SweepLogs):
    def health(self, source: str, event: str, detail: str = "") -> None:
        line = f"source={source} event={event}" + (f" {detail}" if detail else "")
        self._append(self.dir / "health_status.log", line)
        self.host(source, f"health: {event} {detail}")

    def assigned(self, run_id: str, attempt: int, source: str, kind: str, job_id: str, reason: str = "") -> None:
        line = f"run={run_id} attempt={attempt} source={source} kind={kind} job={job_id}"
        self._append(self.dir / "task_assignments.log", line + (f" reason={reason!r}" if reason else ""))
        self.host(source, f"{run_id}: started attempt {attempt} as {job_id}")

    def utilization(self, rows: list[tuple[str, int, int, bool, int]]) -> None:
        for name, busy, slots, enabled, started in rows:
            state = "yes" if enabled else "no"
            self._append(self.dir / "source_utilization.log",
                         f"source={name} busy={busy} slots={slots} enabled={state} started={started}")
