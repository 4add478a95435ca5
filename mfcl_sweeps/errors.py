"""Errors a user can hit. Each message is one line that names the key or value and says what to change."""
from __future__ import annotations

from typing import Optional

from hydra.errors import CompactHydraException


class MfclError(CompactHydraException):
    """Base for errors shown to users as a single line: Hydra prints a CompactHydraException's
    message without a traceback."""


class SweepSpecError(MfclError):
    """A sweep spec is malformed. Raised before anything is launched or written."""

    def __init__(self, message: str, *, key: Optional[str] = None, file: Optional[str] = None,
                 line: Optional[int] = None) -> None:
        where = ""
        if file is not None:
            where = f"{file}:{line}: " if line is not None else f"{file}: "
        what = f"'{key}': " if key is not None else ""
        super().__init__(f"{where}{what}{message}")
        self.key, self.file, self.line = key, file, line


class ManifestError(MfclError):
    """The journal or manifest of a sweep dir cannot be read or written safely."""


class StoreError(ManifestError):
    """A sweep's database store (hydra.sweeper.store) cannot be opened, reached or used."""


class SweepFailed(MfclError):
    """Some runs failed; raised after every run finished and the manifest/report were written."""

    def __init__(self, failed_run_ids: list[str], sweep_dir: str) -> None:
        shown = ", ".join(failed_run_ids[:10]) + (" ..." if len(failed_run_ids) > 10 else "")
        super().__init__(
            f"{len(failed_run_ids)} run(s) failed: {shown}; see `mfcl-sweeps status {sweep_dir}` "
            "(set hydra.sweeper.fail_on_error=false to exit 0)"
        )
        self.failed_run_ids = failed_run_ids


class OptionError(MfclError):
    """A `hydra.launcher.*` option is invalid; raised at the launcher's setup, before anything is
    journaled or started."""


class DiskError(ManifestError, OSError):
    """A sweep's files cannot be written: the disk or quota is full, or the place is read-only.
    Raised instead of the OSError (mfcl_sweeps.fsio.writable), so the user gets one line; still
    an OSError, so code that tolerates a failed optional write keeps doing so."""
