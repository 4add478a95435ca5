"""The one atomic write: readers of a path see the old content or the new, never half of it.
A write the disk refuses (full, over quota, read-only) is one line naming the path and what to do
(`writable`), never a traceback."""
from __future__ import annotations

import contextlib
import errno
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator, Optional, Union

from mfcl_sweeps.errors import DiskError

FULL = (errno.ENOSPC, errno.EDQUOT)
READ_ONLY = (errno.EROFS, errno.EACCES, errno.EPERM)


def disk_error(err: BaseException, path: Union[str, os.PathLike, None] = None) -> Optional[DiskError]:
    """The one-line error for an OSError a full or read-only disk causes; None for any other."""
    if isinstance(err, DiskError):  # mapped already, by a `writable` further in
        return err
    if not isinstance(err, OSError) or err.errno not in (*FULL, *READ_ONLY):
        return None
    where = os.fspath(path or err.filename or "the sweep dir")
    if err.errno in FULL:
        mapped = DiskError(f"{where}: {err.strerror}: the sweep stopped with its journal intact; free some "
                           "space, then continue it with `mfcl-sweeps resume SWEEP_DIR`")
    else:
        mapped = DiskError(f"{where}: {err.strerror}: mfcl needs to write there; make it writable "
                           "(or copy the sweep dir to a writable place and use the copy)")
    mapped.errno = err.errno  # full or read-only, for code that acts on which (the journal's reserve)
    return mapped


@contextlib.contextmanager
def writable(path: Union[str, os.PathLike, None] = None) -> Iterator[None]:
    """OSErrors of a full or read-only disk inside the block become DiskError (one line)."""
    try:
        yield
    except OSError as err:
        mapped = disk_error(err, path)
        if mapped is None:
            raise
        raise mapped from None


def atomic_write(path: Union[str, os.PathLike], data: Union[bytes, str], *, fsync: bool = True) -> None:
    """Write `data` to a unique temp file beside `path` (mkstemp: no clash between hosts sharing
    the directory), then rename it over `path`. fsync=False for files a rerun recreates anyway
    (job specs, result hand-offs, reports): the rename stays atomic, only a power cut may lose it."""
    path = Path(path)
    with writable(path):
        _atomic_write(path, data, fsync)


def _atomic_write(path: Path, data: Union[bytes, str], fsync: bool) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def write_json(path: Union[str, os.PathLike], data: Any, *, fsync: bool = False, **dumps: Any) -> None:
    atomic_write(path, json.dumps(data, **dumps), fsync=fsync)

