"""Runs on an SSH host, once per host and launch: `python -m mfcl_sweeps.backends.ssh_agent [--grace S]`.

The driver keeps this one process (one channel of the multiplexed connection) per host and
talks to it in JSON lines, so a job costs two small messages instead of ssh calls.

stdin, from the driver:
  {"op": "start", "id": K, "job_path": P, "job_json": S, "argv": [...], "result_path": R}
  {"op": "kill", "id": K}                       TERM the job's group, KILL after the grace period
  {"op": "tar", "id": T, "root": D, "dirs": [rel, ...], "limit": BYTES}
stdout, to the driver:
  {"ev": "ready", "pid": N}
  {"ev": "started", "id": K, "pid": N}         the job's pid, which is also its process group
  {"ev": "out", "id": K, "b64": ...}            the job's stdout+stderr, as it comes
  {"ev": "exit", "id": K, "code": C, "result": b64|null, "error": str|null}
  {"ev": "tar", "id": T, "b64": ...} or {"ev": "tar", "id": T, "big": true} (over `limit`: fetch it another way)

Values travel inside JSON and reach the job as argv and file contents: no shell sees them.
When stdin reaches EOF (the driver closed it, died, or the connection dropped) or this process
is signalled, every job's process group gets TERM, then KILL after the grace period, as with
the per-job supervisor (`remote.py`). Standard library only: the host needs nothing else.
"""
from __future__ import annotations

import base64
import io
import json
import os
import selectors
import signal
import subprocess
import sys
import tarfile
import time
from typing import Optional

from mfcl_sweeps.backends.sshclient.remote import write_atomic


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _tree_size(path: str) -> int:
    total = 0
    for parent, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(parent, name)).st_size
            except OSError:
                pass
    return total


class Agent:
    def __init__(self, grace_s: float) -> None:
        self.grace_s = grace_s
        self.sel = selectors.DefaultSelector()
        self.jobs: dict[str, tuple[subprocess.Popen, str]] = {}  # id -> (process, result path)
        self.kill_at: dict[str, float] = {}  # id -> when KILL follows the TERM already sent
        self.pending = b""
        self.stopping = False

    def emit(self, **event) -> None:
        view = memoryview((json.dumps(event, separators=(",", ":")) + "\n").encode())
        while view:
            view = view[os.write(1, view):]

    # -- requests ---------------------------------------------------------------------------
    def handle(self, line: bytes) -> None:
        """One request; a malformed one is reported, never the end of the agent (and its jobs)."""
        try:
            req = json.loads(line)
            op = {"start": self.start, "kill": self.kill, "tar": self.tar}[req["op"]]
            op(req)
        except (ValueError, KeyError, TypeError) as err:
            self.emit(ev="error", detail=f"bad request {line[:200]!r}: {err!r}")

    def start(self, req: dict) -> None:
        jid = str(req["id"])
        try:
            write_atomic(req["job_path"], req["job_json"])
            proc = subprocess.Popen(req["argv"], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        except (OSError, ValueError) as err:
            self.emit(ev="exit", id=jid, code=None, result=None, error=f"could not start the job: {err}")
            return
        os.set_blocking(proc.stdout.fileno(), False)
        self.sel.register(proc.stdout, selectors.EVENT_READ, ("job", jid))
        self.jobs[jid] = (proc, req["result_path"])
        self.emit(ev="started", id=jid, pid=proc.pid)

    def kill(self, req: dict) -> None:
        jid = str(req["id"])
        if jid in self.jobs and jid not in self.kill_at:
            _signal_group(self.jobs[jid][0].pid, signal.SIGTERM)
            self.kill_at[jid] = time.monotonic() + self.grace_s

    def tar(self, req: dict) -> None:
        root, dirs = req["root"], [d for d in req["dirs"] if os.path.isdir(os.path.join(req["root"], d))]
        if sum(_tree_size(os.path.join(root, d)) for d in dirs) > req["limit"]:
            self.emit(ev="tar", id=req["id"], big=True)
            return
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tf:
            for d in dirs:
                tf.add(os.path.join(root, d), arcname=d)
        self.emit(ev="tar", id=req["id"], b64=_b64(buf.getvalue()))

    # -- jobs -------------------------------------------------------------------------------
    def forward(self, jid: str, stream) -> bool:
        """Pass on what the job wrote; False once there is nothing more (the pipe is then closed)."""
        try:
            data = os.read(stream.fileno(), 65536)
        except BlockingIOError:
            return False
        if data:
            self.emit(ev="out", id=jid, b64=_b64(data))
            return True
        self.sel.unregister(stream)
        stream.close()
        return False

    def reap(self) -> None:
        for jid, (proc, result_path) in list(self.jobs.items()):
            if proc.poll() is None:
                continue
            while not proc.stdout.closed and self.forward(jid, proc.stdout):
                pass  # what it wrote before it ended is still in the pipe
            if not proc.stdout.closed:  # a process it left behind holds the pipe open
                self.sel.unregister(proc.stdout)
                proc.stdout.close()
            del self.jobs[jid]
            self.kill_at.pop(jid, None)
            try:
                with open(result_path, "rb") as f:
                    result: Optional[str] = _b64(f.read())
            except OSError:
                result = None
            self.emit(ev="exit", id=jid, code=proc.returncode, result=result, error=None)

    def escalate(self) -> float:
        """KILL the groups whose grace period is over; seconds until the next one is due."""
        now = time.monotonic()
        for jid, when in list(self.kill_at.items()):
            if when <= now and jid in self.jobs:
                _signal_group(self.jobs[jid][0].pid, signal.SIGKILL)
                self.kill_at[jid] = float("inf")
        due = [w - now for w in self.kill_at.values() if w != float("inf")]
        return max(0.0, min(due, default=1.0))

    def stop_all(self) -> None:
        """Nobody listens any more: every job's group goes (TERM, grace, KILL)."""
        for proc, _ in self.jobs.values():
            if proc.poll() is None:
                _signal_group(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + self.grace_s
        while any(p.poll() is None for p, _ in self.jobs.values()) and time.monotonic() < deadline:
            time.sleep(0.05)
        for proc, _ in self.jobs.values():
            if proc.poll() is None:
                _signal_group(proc.pid, signal.SIGKILL)
                proc.wait()

    # -- the loop ---------------------------------------------------------------------------
    def read_requests(self) -> None:
        data = os.read(0, 65536)
        if not data:
            self.stopping = True
            return
        *lines, self.pending = (self.pending + data).split(b"\n")
        for line in lines:
            if line.strip():
                self.handle(line)

    def run(self) -> int:
        wake_r, wake_w = os.pipe()  # SIGCHLD and stop signals wake the select at once
        os.set_blocking(wake_w, False)
        signal.set_wakeup_fd(wake_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
            signal.signal(sig, lambda *_: setattr(self, "stopping", True))
        self.sel.register(0, selectors.EVENT_READ, ("stdin", None))
        self.sel.register(wake_r, selectors.EVENT_READ, ("wake", None))
        self.emit(ev="ready", pid=os.getpid())
        try:
            while not self.stopping:
                for key, _ in self.sel.select(self.escalate()):
                    kind, jid = key.data
                    if kind == "stdin":
                        self.read_requests()
                    elif kind == "wake":
                        os.read(wake_r, 512)
                    elif not key.fileobj.closed:  # closed by reap() earlier in this round
                        self.forward(jid, key.fileobj)
                self.reap()
        finally:
            self.stop_all()
        return 0


def main(argv: list[str]) -> int:
    grace = 5.0
    if argv[:1] == ["--grace"]:
        grace, argv = float(argv[1]), argv[2:]
    if argv:
        print("usage: python -m mfcl_sweeps.backends.ssh_agent [--grace S]", file=sys.stderr)
        return 2
    return Agent(grace).run()
