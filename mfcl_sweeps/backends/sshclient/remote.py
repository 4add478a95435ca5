"""Runs on an SSH host: `python -m mfcl_sweeps.backends.ssh_remote [--grace S] JOB_PATH JOB_JSON -- ARGV...`

Writes the job file, starts ARGV in its own session (process group = its pid), reports the pid
on stderr, and ties the job to the connection: when stdin reaches EOF (the driver closed it,
died, or the connection dropped) or this process is signalled, the whole group gets TERM, then
KILL after the grace period. The job's stdout and stderr go to this process's stdout (the
channel the driver streams into the run's log); the last stderr line is the job's exit code.

Only this process reaps the job, so its group id stays valid for as long as it may be killed.
"""
from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time

# Only the standard library here: this starts once per job on the host, before the job.
PID_MARK = "mfcl-ssh-pid"
EXIT_MARK = "mfcl-ssh-exit"


def write_atomic(path: str, text: str) -> None:
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def _stop(proc: subprocess.Popen, grace_s: float) -> None:
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace_s
    while proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()


def supervise(job_path: str, job_json: str, argv: list[str], grace_s: float) -> int:
    write_atomic(job_path, job_json)
    wake_r, wake_w = os.pipe()  # SIGCHLD wakes the select below at once when the job ends
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True)
    print(f"{PID_MARK} {proc.pid}", file=sys.stderr, flush=True)
    stop_requested = []
    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(sig, lambda *_: stop_requested.append(True))
    while proc.poll() is None and not stop_requested:
        try:
            ready, _, _ = select.select([0, wake_r], [], [], 1.0)
        except InterruptedError:
            continue
        if wake_r in ready:
            os.read(wake_r, 512)
        if 0 in ready and not os.read(0, 4096):
            break  # EOF: nobody is listening for this job any more
    _stop(proc, grace_s)
    code = proc.returncode
    print(f"{EXIT_MARK} {code}", file=sys.stderr, flush=True)
    return code if code >= 0 else 128 - code


def main(argv: list[str]) -> int:
    grace = 5.0
    if argv[:1] == ["--grace"]:
        grace, argv = float(argv[1]), argv[2:]
    if len(argv) < 4 or argv[2] != "--":
        print("usage: python -m mfcl_sweeps.backends.ssh_remote [--grace S] JOB_PATH JOB_JSON -- ARGV...",
              file=sys.stderr)
        return 2
    return supervise(argv[0], argv[1], argv[3:], grace)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
