"""Append-only JSON-lines journal of a sweep dir (`<sweep_dir>/.mfcl/journal.jsonl`).

Modelled on Optuna's JournalFileBackend: a writer appends whole lines under a lock with one
write + flush + fsync; readers take no lock, read only what is new since their last read, and
leave an unterminated last line for later (a writer may be half-way through it).

Everything that must be exclusive across hosts goes through `link()` of a fully written temp
file: link is atomic on local filesystems, NFSv2+, Lustre, GPFS and BeeGFS (a metadata-server
operation), unlike O_APPEND on NFS or flock on Lustre mounted with `localflock`.
"""
from __future__ import annotations

import errno
import json
import os
import time
import uuid
from pathlib import Path
from typing import Any, Iterator, Optional

from mfcl_sweeps import model
from mfcl_sweeps.errors import ManifestError
from mfcl_sweeps.fsio import FULL, writable
from mfcl_sweeps.liveness import HOST, pid_start_time, process_alive
from mfcl_sweeps.secrets import redact

JOURNAL_NAME = "journal.jsonl"
# space kept beside the journal for a sweep's last lines on a full disk (its interrupted runs):
# ~150 bytes a line, so hundreds of runs
RESERVE_NAME, RESERVE_BYTES = "journal.reserve", 64 * 1024
ENV_LOCK_GRACE = "MFCL_LOCK_GRACE_S"
DEFAULT_LOCK_GRACE_S = 30.0


def op_problem(op: dict) -> Optional[str]:
    """What makes a parsed journal op unusable (missing fields, an unknown run state), or None.
    Ops of kinds this version does not know are kept (a newer writer's), and skipped by replay."""
    kind = op.get("op")
    if kind == "t":
        if not isinstance(op.get("h"), str) or not isinstance(op.get("t"), (int, float)):
            return "lacks its run hash 'h' or time 't'"
        if op.get("s") not in model.RUN_STATES:
            return f"has an unknown run state {op.get('s')!r} (known: {', '.join(model.RUN_STATES)})"
        if not isinstance(op.get("f", {}), dict) or not isinstance(op.get("id", {}), dict):
            return "has fields 'f' or identity 'id' that are not objects"
    elif kind == "plan":
        if not isinstance(op.get("spec_hash"), str) or isinstance(op.get("count"), bool) \
                or not isinstance(op.get("count"), int):
            return "lacks its 'spec_hash' or run 'count'"
    return None


def state_dir(sweep_dir: str | os.PathLike) -> Path:
    return Path(sweep_dir) / ".mfcl"


def link_exclusive(path: Path, payload: dict) -> bool:
    """Create `path` holding `payload` (JSON) iff it does not exist; True when this call made it.

    The content is complete before the name appears, so readers never see a half-written file.
    NFS may report a link() that succeeded as failed (a retransmitted request finds the name
    taken), so success is judged by the temp file's link count, as in Optuna's symlink lock.
    """
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        os.write(fd, json.dumps(payload).encode())
    finally:
        os.close(fd)
    try:
        os.link(tmp, path)
        return True
    except FileExistsError:
        return os.stat(tmp).st_nlink == 2
    except OSError as err:
        if err.errno in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOSYS):
            raise ManifestError(f"{path.parent}: the filesystem does not support hard links ({err.strerror}); "
                                "put the sweep dir on a local disk, NFS, Lustre, GPFS or BeeGFS") from None
        raise
    finally:
        os.unlink(tmp)


def read_json_file(path: Path) -> Optional[dict]:
    try:
        return json.loads(path.read_bytes())
    except FileNotFoundError:
        return None
    except ValueError:
        return {}


def remove_if_token(path: Path, token: str) -> bool:
    """Remove `path` only if it still holds `token`; True when it did.

    Renaming first makes the check-and-remove atomic against a new holder: if the file we
    moved aside turns out to be someone else's, it is linked back (which fails only if yet
    another holder already took the name, the one window a stale-lock break can lose).
    """
    aside = path.with_name(f".{path.name}.{uuid.uuid4().hex}.aside")
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        return False
    try:
        if (read_json_file(aside) or {}).get("token") == token:
            return True
        try:
            os.link(aside, path)
        except FileExistsError:
            pass
        return False
    finally:
        os.unlink(aside)


class LinkLock:
    """A cross-host mutex: a lock file made by `link_exclusive`.

    A holder that died leaves its file behind. A waiter breaks it at once when the holder was
    a process of this host that is gone, else when the file has not changed for `grace`
    seconds on the waiter's own monotonic clock (hosts' clocks differ).
    """

    def __init__(self, path: Path, grace: Optional[float] = None) -> None:
        self.path = path
        self.grace = float(os.environ.get(ENV_LOCK_GRACE, DEFAULT_LOCK_GRACE_S)) if grace is None else grace
        self._token: Optional[str] = None

    def try_acquire(self) -> bool:
        token = uuid.uuid4().hex
        me = {"token": token, "host": HOST, "pid": os.getpid(), "pid_start": pid_start_time(os.getpid())}
        if link_exclusive(self.path, me):
            self._token = token
            return True
        return False

    def acquire(self) -> None:
        seen: Optional[tuple] = None
        since = time.monotonic()
        delay = 0.0005
        while not self.try_acquire():
            holder = read_json_file(self.path)
            if holder is None:
                continue
            try:
                st = os.stat(self.path)
                now_seen = (st.st_ino, st.st_mtime_ns, holder.get("token"))
            except FileNotFoundError:
                continue
            if now_seen != seen:
                seen, since = now_seen, time.monotonic()
            dead = process_alive(holder.get("host"), holder.get("pid"), holder.get("pid_start")) is False
            if dead or time.monotonic() - since > self.grace:
                remove_if_token(self.path, holder.get("token"))
                continue
            time.sleep(delay)
            delay = min(delay * 2, 0.05)

    def release(self) -> None:
        if self._token is not None:
            remove_if_token(self.path, self._token)
            self._token = None

    def __enter__(self) -> "LinkLock":
        self.acquire()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()


def self_test(directory: Path) -> None:
    """Check that this filesystem gives exclusion through two handles (raises ManifestError).

    It proves what one client can see; exclusion across hosts rests on link() being atomic
    on the filesystem, which docs/manifest.md lists by filesystem.
    """
    directory.mkdir(parents=True, exist_ok=True)
    probe = directory / f".selftest-{HOST}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    first, second = LinkLock(probe, grace=3600), LinkLock(probe, grace=3600)
    try:
        ok = first.try_acquire() and not second.try_acquire()
        first.release()
        ok = ok and second.try_acquire()
        second.release()
        ok = ok and not probe.exists()
    finally:
        probe.unlink(missing_ok=True)
    if not ok:
        raise ManifestError(f"{directory}: exclusive file creation does not exclude on this filesystem; "
                            "claims would not be exactly-once (see docs/manifest.md, supported filesystems)")


class Journal:
    """One sweep's journal. Cheap to create; the file and its folder appear at the first append."""

    def __init__(self, sweep_dir: str | os.PathLike, lock_grace: Optional[float] = None) -> None:
        self.dir = state_dir(sweep_dir)
        self.path = self.dir / JOURNAL_NAME
        self._lock = LinkLock(self.dir / (JOURNAL_NAME + ".lock"), lock_grace)
        self._offset = 0  # byte offset just past the last complete line read
        self._lines = 0  # complete lines read so far
        self._ino: Optional[int] = None
        self._reserved = False  # this process made sure the reserve is there (at its first append)

    def append(self, ops: list[dict], *, last_words: bool = False) -> None:
        """Append `ops` (secrets redacted) as one write + flush + fsync under the lock.
        `last_words`: on a full disk, give up the reserve for them and try once more."""
        data = "".join(json.dumps(redact(op), separators=(",", ":"), default=str) + "\n" for op in ops).encode()
        try:
            self._append(data)
        except OSError as err:
            if not (last_words and err.errno in FULL and self._release_reserve()):
                raise
            self._append(data)
        if not self._reserved:
            self._reserved = True
            self._make_reserve()

    def _make_reserve(self) -> None:
        """The reserve, written (not sparse: a hole would free nothing) unless it is there; a
        disk too full for it leaves the sweep without one (its last lines may then not fit)."""
        path = self.dir / RESERVE_NAME
        if path.exists():
            return
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return
        try:
            os.write(fd, b"\0" * RESERVE_BYTES)
            os.fsync(fd)
        except OSError:
            path.unlink(missing_ok=True)
        finally:
            os.close(fd)

    def _release_reserve(self) -> bool:
        """Free the reserve's space; False if there was none to free."""
        try:
            (self.dir / RESERVE_NAME).unlink()
        except FileNotFoundError:
            return False
        return True

    def _append(self, data: bytes) -> None:
        with writable(self.path):  # a full or read-only disk: one line (DiskError), journal intact
            if not self.dir.exists():
                self.dir.mkdir(parents=True, exist_ok=True)
            with self._lock:
                # open after taking the lock: NFS close-to-open consistency then shows the true size
                fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
                try:
                    self._drop_torn_tail(fd)
                    self._write_whole(fd, data)
                finally:
                    os.close(fd)

    @staticmethod
    def _write_whole(fd: int, data: bytes) -> None:
        """All of `data` or none of it: a disk that fills up half-way (a short write, then
        ENOSPC) has the part cut off again, so no torn line is left for the next writer."""
        size = os.fstat(fd).st_size
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        except OSError:
            os.ftruncate(fd, size)  # shrinking needs no space
            raise

    @staticmethod
    def _drop_torn_tail(fd: int) -> None:
        """A writer killed mid-write leaves an unterminated line; cut it so the next line does
        not glue onto it. Nobody read it as an op (readers skip unterminated lines)."""
        size = os.fstat(fd).st_size
        if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
            return
        end = size
        while end > 0:
            start = max(0, end - (1 << 20))
            cut = os.pread(fd, end - start, start).rfind(b"\n")
            if cut >= 0:
                os.ftruncate(fd, start + cut + 1)
                return
            end = start
        os.ftruncate(fd, 0)

    def read_new(self) -> list[dict]:
        """Ops appended since the last call (all of them the first time)."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return []
        if st.st_ino == self._ino and st.st_size == self._offset:
            return []  # the common case when polling: nothing new, no open, no read
        try:
            f = open(self.path, "rb")
        except FileNotFoundError:
            return []
        with f:
            ino = os.fstat(f.fileno()).st_ino
            if ino != self._ino:  # a new journal (sweep dir removed and reused): start over
                self._ino, self._offset, self._lines = ino, 0, 0
            f.seek(self._offset)
            data = f.read()
        end = data.rfind(b"\n") + 1
        if end == 0:
            return []
        chunk = data[:end]
        try:
            # one parse for the whole chunk is several times faster than one per line
            ops = json.loads(b"[" + chunk[:-1].replace(b"\n", b",") + b"]")
        except ValueError:
            ops = list(self._parse_lines(chunk))
        if len(ops) != chunk.count(b"\n") or not all(isinstance(op, dict) and not op_problem(op) for op in ops):
            ops = list(self._parse_lines(chunk))  # names the bad line
        self._offset += end
        self._lines += len(ops)
        return ops

    def _parse_lines(self, chunk: bytes) -> Iterator[dict]:
        for n, line in enumerate(chunk.split(b"\n")[:-1], start=self._lines + 1):
            try:
                op = json.loads(line)
            except ValueError as err:
                raise ManifestError(f"{self.path}:{n}: corrupt journal line ({err.msg}): "
                                    f"{line[:80]!r}; remove or repair that line") from None
            problem = "is not an object" if not isinstance(op, dict) else op_problem(op)
            if problem:
                raise ManifestError(f"{self.path}:{n}: journal line {problem}: {line[:80]!r}; "
                                    "remove or repair that line")
            yield op

    @property
    def lines_read(self) -> int:
        return self._lines

    def position(self) -> tuple[Optional[int], int, int]:
        """(inode, byte offset, lines) just past the last complete line read."""
        return self._ino, self._offset, self._lines

    def resume_at(self, ino: int, offset: int, lines: int) -> None:
        """Continue reading from a position a checkpoint recorded."""
        self._ino, self._offset, self._lines = ino, offset, lines
