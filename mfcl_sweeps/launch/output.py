"""Job output on the driver's terminal, as Hydra's own launchers show it (`hydra.launcher.output`).

Jobs keep writing to their run logs (logs/runs/<run_id>.log); the driver loop reads what each log
gained since the job was submitted and prints whole lines, so nothing about how jobs are started
changes and every backend whose logs the driver can read gets the same behaviour.

- stream (default): every line as it comes; prefixed `[run_id] ` once more than one job runs at once
- failed: nothing while jobs run; a failed run's last lines when it ends
- quiet: nothing (the logs, the progress line and the end-of-sweep failure summary remain)
"""
from __future__ import annotations

import os
import sys
from typing import Callable, Optional, TextIO

MODES = ("stream", "failed", "quiet")
FAILED_TAIL_LINES = 20
READ_CHUNK = 1 << 20  # at most this much of one log per pass, so one chatty job cannot stall the loop


class _Followed:
    __slots__ = ("path", "run_id", "offset", "partial")

    def __init__(self, path: str, run_id: str, offset: int) -> None:
        self.path, self.run_id, self.offset, self.partial = path, run_id, offset, b""


class JobOutput:
    def __init__(self, mode: str = "stream", *, out: Optional[TextIO] = None,
                 before_write: Optional[Callable[[], None]] = None) -> None:
        self.mode = mode
        self.out = out or sys.stdout
        self.before_write = before_write  # e.g. clear a live progress line first
        self.followed: dict[str, _Followed] = {}
        self.prefixed = False

    def submitting(self, key: str, run_id: str, log_path: str) -> None:
        """Call before a job is submitted: its output starts at the log's current end (a retry
        appends to the same log)."""
        if self.mode == "quiet":
            return
        try:
            offset = os.path.getsize(log_path)
        except OSError:
            offset = 0
        self.followed[key] = _Followed(log_path, run_id, offset)

    def pump(self, running: int) -> None:
        """Print what the followed logs gained (stream mode)."""
        if self.mode != "stream":
            return
        self.prefixed = self.prefixed or running > 1
        for item in self.followed.values():
            self._emit(item, self._read(item), final=False)

    def finished(self, key: str, ok: bool) -> None:
        item = self.followed.pop(key, None)
        if item is None:
            return
        if self.mode == "stream":
            self._emit(item, self._read(item, everything=True), final=True)
        elif self.mode == "failed" and not ok:
            lines = self._read(item, everything=True).decode(errors="replace").splitlines()
            shown = lines[-FAILED_TAIL_LINES:]
            if shown:
                self._write([f"[{item.run_id}] failed; its last {len(shown)} output line(s):",
                             *(f"[{item.run_id}] {line}" for line in shown)])

    def _read(self, item: _Followed, everything: bool = False) -> bytes:
        chunks = []
        try:
            with open(item.path, "rb") as f:
                f.seek(item.offset)
                while True:
                    data = f.read(READ_CHUNK)
                    chunks.append(data)
                    item.offset += len(data)
                    if not data or not everything:
                        break
        except OSError:
            pass
        return b"".join(chunks)

    def _emit(self, item: _Followed, data: bytes, *, final: bool) -> None:
        data, item.partial = item.partial + data, b""
        if not final:
            data, newline, item.partial = data.rpartition(b"\n")  # only whole lines; the rest waits
            if not newline:
                return
            data += newline
        if not data:
            return
        text = data.decode(errors="replace").splitlines()
        self._write([f"[{item.run_id}] {line}" for line in text] if self.prefixed else text)

    def _write(self, lines: list[str]) -> None:
        if self.before_write is not None:
            self.before_write()
        self.out.write("".join(f"{line}\n" for line in lines))
        self.out.flush()
