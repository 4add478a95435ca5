"""The one atomic write: readers of a path see the old content or the new, never half of it."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Union


def atomic_write(path: Union[str, os.PathLike], data: Union[bytes, str], *, fsync: bool = True) -> None:
    """Write `data` to a unique temp file beside `path` (mkstemp: no clash between hosts sharing
    the directory), then rename it over `path`. fsync=False for files a rerun recreates anyway
    (job specs, result hand-offs, reports): the rename stays atomic, only a power cut may lose it."""
    path = Path(path)
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

