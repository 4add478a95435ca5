"""The JobReturns a launch hands back, slimmed: the driver keeps O(running) state, not O(done).

A worker's JobReturn carries the run's two composed configs (`cfg`, `hydra_cfg`: ~150 KB per run
in memory with Hydra's defaults), and Hydra's launcher contract wants one JobReturn per run at the
end of a launch. The sweeper reads only status, return value and overrides; Hydra's own suites
also read working_dir, task_name and the configs (secrets included, as Hydra's launchers return
them). So each finished run is kept as a `SlimJobReturn`: the small fields in memory, the configs
pickled and compressed into one unnamed temporary file of the driver (`ConfigSpill`: O_TMPFILE,
so it has no name in any directory and is gone with the process, whatever ends it), read back
only when asked for. A return read from a worker's result file is kept as the bytes the worker
pickled: pickling its configs again cost the driver ~30 ms of CPU per run.
"""
from __future__ import annotations

import os
import tempfile
import weakref
import zlib
from typing import Any, Optional

from hydra.core.utils import JobReturn


class ConfigSpill:
    """Append-only store of pickled JobReturns (whose configs are what is read back) in an
    unnamed temporary file."""

    def __init__(self) -> None:
        self._file: Optional[Any] = None
        self._end = 0

    def put(self, pickled: bytes) -> tuple[int, int]:
        if self._file is None:
            self._file = tempfile.TemporaryFile(buffering=0)
            # closed with the last return that reads it (unclosed, it is a ResourceWarning: an
            # error under Hydra's own test settings, -W error)
            weakref.finalize(self, self._file.close)
        data = zlib.compress(pickled, 1)
        at, self._end = self._end, self._end + len(data)
        os.pwrite(self._file.fileno(), data, at)
        return at, len(data)

    def get(self, at: int, size: int) -> JobReturn:
        import cloudpickle

        return cloudpickle.loads(zlib.decompress(os.pread(self._file.fileno(), size, at)))


class SlimJobReturn(JobReturn):
    """A JobReturn whose `cfg` and `hydra_cfg` wait in a ConfigSpill until read."""

    def __init__(self, ret: JobReturn, spill: ConfigSpill, pickled: Optional[bytes] = None) -> None:
        # not the dataclass init: cfg is a property
        self.overrides, self.working_dir, self.task_name = ret.overrides, ret.working_dir, ret.task_name
        self.status, self._return_value = ret.status, ret._return_value
        if pickled is None:
            import cloudpickle

            pickled = cloudpickle.dumps(JobReturn(cfg=ret.cfg, hydra_cfg=ret.hydra_cfg))
        self._spill, self._where = spill, spill.put(pickled)

    @property  # type: ignore[override]
    def cfg(self) -> Any:
        return self._spill.get(*self._where).cfg

    @property  # type: ignore[override]
    def hydra_cfg(self) -> Any:
        return self._spill.get(*self._where).hydra_cfg


def slim(ret: Any, spill: ConfigSpill, pickled: Optional[bytes] = None) -> Any:
    """`ret` as the driver keeps it until the launch returns: slim when it holds configs, else
    as it is (a failure the driver made up holds none). `pickled`: the bytes `ret` was loaded
    from (a worker's result file), kept instead of pickling its configs again."""
    if ret.cfg is None and ret.hydra_cfg is None:
        return ret
    return SlimJobReturn(ret, spill, pickled)
