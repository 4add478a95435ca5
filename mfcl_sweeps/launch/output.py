"""Job output on the driver's terminal, as Hydra's own launchers show it (`hydra.launcher.output`).

Jobs keep writing to their run logs (logs/runs/<run_id>.log); the driver loop reads what each log
gained since the job was submitted and prints whole lines, so nothing about how jobs are started
changes and every backend whose logs the driver can read gets the same behaviour.

- stream (default): Hydra's console. Each job is announced by BasicLauncher's line `\t#i : overrides`
  followed by its output, in job order: the earliest job's lines as they come, a later job's
  lines once the jobs before it are done. When a later job's output would wait longer than
  `hold_s` (long jobs running at once), order gives way to time: from then on every job's lines
  are printed as they come, each prefixed `[run_id] `.
- failed: nothing while jobs run; a failed run's last lines when it ends
- quiet: nothing (the logs, the progress line and the end-of-sweep failure summary remain)
"""
from __future__ import annotations

import logging
import os
import sys
import time
from typing import Any, Callable, Optional, TextIO

log = logging.getLogger(__name__)

MODES = ("stream", "failed", "quiet")
FAILED_TAIL_LINES = 20
READ_CHUNK = 1 << 20  # at most this much of one log per pass, so one chatty job cannot stall the loop
HOLD_S = 5.0  # how long a later job's output may wait for the earlier jobs (stream)


class _Followed:
    __slots__ = ("path", "run_id", "title", "offset", "partial", "announced", "done", "waiting_since")

    def __init__(self, path: str, run_id: str, title: str, offset: int) -> None:
        self.path, self.run_id, self.title, self.offset = path, run_id, title, offset
        self.partial, self.announced, self.done = b"", False, False
        self.waiting_since: Optional[float] = None  # when output of it, not yet the head, was first seen

    def pending(self) -> bool:
        try:
            return os.path.getsize(self.path) > self.offset
        except OSError:
            return False


def job_title(run: Any) -> str:
    """BasicLauncher's line for a job: its number and the user's overrides (no `hydra.*`)."""
    return f"\t#{run.index} : " + " ".join(o for o in run.overrides if not o.startswith("hydra."))


class JobOutput:
    def __init__(self, mode: str = "stream", *, out: Optional[TextIO] = None,
                 before_write: Optional[Callable[[], None]] = None,
                 announce: Optional[Callable[[str], None]] = None, hold_s: float = HOLD_S) -> None:
        self.mode = mode
        self.out = out or sys.stdout
        self.before_write = before_write  # e.g. clear a live progress line first
        self.announce = announce or log.info  # Hydra's own lines go through logging, as Hydra's do
        self.hold_s = hold_s
        self.followed: dict[str, _Followed] = {}  # submission order: the first is the head
        self.interleaved = False  # once true, lines come as they are written, prefixed

    def submitting(self, request: Any) -> None:
        """Call before a job is submitted: its output starts at the log's current end (a retry
        appends to the same log)."""
        if self.mode == "quiet":
            return
        try:
            offset = os.path.getsize(request.log_path)
        except OSError:
            offset = 0
        item = _Followed(request.log_path, request.run.run_id, job_title(request.run), offset)
        self.followed[request.key] = item
        if self.mode == "stream" and (self.interleaved or len(self.followed) == 1):
            self._announce(item)

    def pump(self) -> None:
        """Print what the followed logs gained (stream mode)."""
        if self.mode != "stream":
            return
        if not self.interleaved:
            self._advance()
            self._hold_or_interleave()
        if self.interleaved:
            for key, item in list(self.followed.items()):
                self._emit(item, self._read(item, everything=item.done), final=item.done)
                if item.done:
                    del self.followed[key]

    def finished(self, key: str, ok: bool) -> None:
        item = self.followed.get(key)
        if item is None:
            return
        item.done = True
        if self.mode == "stream":
            if not self.interleaved:
                self._advance()
                return
            self._emit(item, self._read(item, everything=True), final=True)
        elif self.mode == "failed" and not ok:
            lines = self._read(item, everything=True).decode(errors="replace").splitlines()
            shown = lines[-FAILED_TAIL_LINES:]
            if shown:
                self._write([f"[{item.run_id}] failed; its last {len(shown)} output line(s):",
                             *(f"[{item.run_id}] {line}" for line in shown)])
        del self.followed[key]

    def _advance(self) -> None:
        """In job order: the head's new lines; a finished head's rest, then the next job's."""
        while self.followed:
            key, head = next(iter(self.followed.items()))
            self._announce(head)
            self._emit(head, self._read(head, everything=head.done), final=head.done)
            if not head.done:
                return
            del self.followed[key]

    def _hold_or_interleave(self) -> None:
        now = time.monotonic()
        for item in list(self.followed.values())[1:]:
            if item.waiting_since is None and item.pending():
                item.waiting_since = now
            if item.waiting_since is not None and now - item.waiting_since >= self.hold_s:
                break
        else:
            return
        self.interleaved = True
        self._say(f"a job's output waited over {self.hold_s:g}s for the jobs before it: from here on "
                  "each line comes as it is written, prefixed by its run id")
        for item in self.followed.values():
            self._announce(item)

    def _announce(self, item: _Followed) -> None:
        if not item.announced:
            item.announced = True
            self._say(item.title + (f"  [{item.run_id}]" if self.interleaved else ""))

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
        self._write([f"[{item.run_id}] {line}" for line in text] if self.interleaved else text)

    def _write(self, lines: list[str]) -> None:
        self._clear()
        self.out.write("".join(f"{line}\n" for line in lines))
        self.out.flush()

    def _say(self, line: str) -> None:
        self._clear()
        self.announce(line)

    def _clear(self) -> None:
        if self.before_write is not None:
            self.before_write()
