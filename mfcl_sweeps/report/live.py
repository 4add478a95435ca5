"""Live report: `reports/index.html` rewritten while a sweep runs, at most every `interval_s`.

`kick(sweep_dir, parent=pid)` starts one detached refresher (none when one already runs:
`reports/.live.lock` holds its pid, written by `kick` itself, so `stop` finds a refresher even
before it has started up on a busy machine). The callback calls it at `on_multirun_start`, in the
process that runs the sweep: a refresher started inside a job would be ended with the job
(mfcl_local's supervisor reaps every descendant), and this way any sweeper and launcher gets
one. The refresher follows the journal: a new page when the journal changed since the last
one, at most one per interval; it exits when every planned run has ended, or when `parent` is
gone and the journal stayed quiet for QUIET_ROUNDS intervals. The final report stops it first
(`stop`). The page reloads itself while runs are active (see html.REFRESH_S).

    python -m mfcl_sweeps.report.live SWEEP_DIR [--interval 30] [--parent PID] [--metric M] [--mode min|max]
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from typing import Optional

from mfcl_sweeps.liveness import HOST, process_alive
from mfcl_sweeps.report import REPORTS_DIR

LOCK = ".live.lock"
LOG = "live.log"
QUIET_ROUNDS = 3


def _lock_path(sweep_dir: str) -> str:
    return os.path.join(sweep_dir, REPORTS_DIR, LOCK)


def _holder(path: str) -> Optional[int]:
    try:
        with open(path) as fh:
            return int(json.load(fh)["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _holder_alive(path: str) -> bool:
    pid = _holder(path)  # a zombie is dead: a refresher killed before its driver reaped it
    return pid is not None and bool(process_alive(HOST, pid, None))


def _acquire(sweep_dir: str, pid: Optional[int] = None) -> bool:
    """Take the refresher lock (O_EXCL) for `pid` (this process by default), replacing one whose
    process is gone; True too when it already names `pid` (kick took it for this refresher)."""
    pid = pid or os.getpid()
    path = _lock_path(sweep_dir)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            if _holder(path) == pid:
                return True
            if _holder_alive(path):
                return False
            try:
                os.unlink(path)  # its refresher died (killed with its job): take over
            except FileNotFoundError:
                pass
            continue
        with os.fdopen(fd, "w") as fh:
            json.dump({"pid": pid, "t": time.time()}, fh)
        return True
    return False


def kick(sweep_dir: str, *, interval_s: float = 30.0, parent: Optional[int] = None, metric: Optional[str] = None,
         mode: Optional[str] = None) -> bool:
    """Start a detached refresher unless one runs; True when one was started."""
    if _holder_alive(_lock_path(sweep_dir)):
        return False
    argv = [sys.executable, "-m", "mfcl_sweeps.report.live", sweep_dir, "--interval", str(interval_s)]
    argv += ["--parent", str(parent)] if parent else []
    argv += ["--metric", metric] if metric else []
    argv += ["--mode", mode] if mode else []
    os.makedirs(os.path.join(sweep_dir, REPORTS_DIR), exist_ok=True)
    with open(os.path.join(sweep_dir, REPORTS_DIR, LOG), "ab") as log:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
                                close_fds=True)
    if not _acquire(sweep_dir, proc.pid):  # another refresher started meanwhile: it serves the sweep
        proc.terminate()
        return False
    return True


def _journal_mtime(sweep_dir: str) -> int:
    try:
        return os.stat(os.path.join(sweep_dir, ".mfcl", "journal.jsonl")).st_mtime_ns
    except FileNotFoundError:
        return 0


def _alive(pid: Optional[int]) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def follow(sweep_dir: str, *, interval_s: float, parent: Optional[int] = None, metric: Optional[str] = None,
           mode: Optional[str] = None) -> int:
    """The refresher's loop; returns the number of pages written (0 when another refresher runs)."""
    from mfcl_sweeps.errors import MfclError
    from mfcl_sweeps.report import write_report
    from mfcl_sweeps.state.lifecycle import sweep_ended
    from mfcl_sweeps.state.manifest import SweepManifest

    if not _acquire(sweep_dir):
        return 0
    written, shown, quiet = 0, None, 0
    try:
        while True:
            seen = _journal_mtime(sweep_dir)
            if seen and seen != shown:
                try:
                    write_report(sweep_dir, live=True, metric=metric, mode=mode)
                    written, shown, quiet = written + 1, seen, 0
                except MfclError as err:  # e.g. an artifact not flushed yet: try again next round
                    print(f"mfcl live report: {err}", file=sys.stderr, flush=True)
            else:
                quiet += 1
            if seen and sweep_ended(SweepManifest(sweep_dir)) and shown == _journal_mtime(sweep_dir):
                return written
            if not _alive(parent) and quiet >= QUIET_ROUNDS:
                return written
            time.sleep(interval_s)
    finally:
        try:
            os.unlink(_lock_path(sweep_dir))
        except FileNotFoundError:
            pass


def stop(sweep_dir: str, timeout_s: float = 10.0) -> None:
    """End the sweep's refresher (before the final report, which it must not overwrite)."""
    path = _lock_path(sweep_dir)
    try:
        with open(path) as fh:
            pid = int(json.load(fh)["pid"])
        os.kill(pid, signal.SIGTERM)
    except (OSError, ValueError, KeyError):
        return
    deadline = time.monotonic() + timeout_s
    while os.path.exists(path) and _holder_alive(path) and time.monotonic() < deadline:
        time.sleep(0.05)
    if _holder(path) == pid and not _holder_alive(path):  # ended before it could free its lock
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass


def main(argv: Optional[list] = None) -> int:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # run the `finally` that frees the lock
    parser = argparse.ArgumentParser(prog="python -m mfcl_sweeps.report.live", description=__doc__.split("\n")[0])
    parser.add_argument("sweep_dir")
    parser.add_argument("--interval", type=float, default=30.0)
    parser.add_argument("--parent", type=int, help="pid of the sweep's process (the refresher outlives it briefly)")
    parser.add_argument("--metric")
    parser.add_argument("--mode", choices=("min", "max"))
    args = parser.parse_args(argv)
    follow(args.sweep_dir, interval_s=args.interval, parent=args.parent, metric=args.metric, mode=args.mode)
    return 0


if __name__ == "__main__":
    sys.exit(main())
