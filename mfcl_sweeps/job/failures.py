"""A failed run's traceback: kept whole (the user's frames, file and line) in its run log and its
manifest record, carried back to the driver with the JobReturn, and summed up at the end.

A pickled exception loses its traceback, so the worker puts the formatted text on the JobReturn
(`mfcl_traceback`) and the driver chains it back as the exception's cause, as
multiprocessing.pool does: whoever prints the exception (Hydra's sweeper re-raising a failed
job, HYDRA_FULL_ERROR=1) shows the job's own frames.
"""
from __future__ import annotations

import os
import traceback
from typing import Any, Iterable, Optional

MAX_TRACEBACK_CHARS = 20_000  # a journal line per failure; the log keeps everything
SHOWN_RUNS = 3  # failed runs whose traceback ends are printed at the end of a sweep
SHOWN_LINES = 6  # of each of those tracebacks


class RemoteTraceback(Exception):
    """The job's traceback as text, chained as the cause of the exception it raised."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text

    def __str__(self) -> str:
        return "\n\n" + self.text.rstrip()


def format_traceback(exc: Any) -> str:
    """The exception with its traceback (and chained causes), at most MAX_TRACEBACK_CHARS from its end."""
    if not isinstance(exc, BaseException):
        return f"{exc}\n"
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    return text if len(text) <= MAX_TRACEBACK_CHARS else "...\n" + text[-MAX_TRACEBACK_CHARS:]


def keep_traceback(ret: Any) -> Optional[str]:
    """Put a failed JobReturn's traceback text on it (it survives the pickle); return the text."""
    exc = getattr(ret, "_return_value", None)
    if not isinstance(exc, BaseException):
        return None
    ret.mfcl_traceback = format_traceback(exc)
    return ret.mfcl_traceback


def failed_return(overrides: Iterable[str], error: BaseException | str) -> Any:
    """The JobReturn of a run that failed without a return of its own: its task raised `error`,
    or it never ran to the end (killed, cancelled, refused), `error` then saying why."""
    from hydra.core.utils import JobReturn, JobStatus

    ret = JobReturn(overrides=list(overrides), status=JobStatus.FAILED)
    ret._return_value = error if isinstance(error, BaseException) else RuntimeError(error)
    return ret


def restore_traceback(ret: Any) -> Any:
    """The JobReturn read back from a worker, its exception chained to the job's traceback."""
    text = getattr(ret, "mfcl_traceback", None)
    exc = getattr(ret, "_return_value", None)
    if text and isinstance(exc, BaseException) and exc.__cause__ is None:
        exc.__cause__ = RemoteTraceback(text)
    return ret


def full_error() -> bool:
    return os.environ.get("HYDRA_FULL_ERROR", "") == "1"


def failure_summary(failed: Iterable[Any], sweep_dir: str, *, full: Optional[bool] = None) -> str:
    """What the driver prints at the end of a sweep with failures: the last lines of the first
    SHOWN_RUNS tracebacks (whole with HYDRA_FULL_ERROR=1) and where the rest is. `failed` are
    manifest records (run_id, error, extra["traceback"], stderr_tail)."""
    from mfcl_sweeps.job.jobspec import log_path_for

    full = full_error() if full is None else full
    failed = list(failed)
    out = [f"{len(failed)} run(s) failed"]
    for rec in failed[:SHOWN_RUNS]:
        text = (rec.extra or {}).get("traceback") or ""
        if "Traceback (most recent call last)" not in text:  # a killed or timed-out run: its log says more
            text = rec.stderr_tail or text or rec.error or "(no traceback)"
        lines = text.rstrip().splitlines()
        shown = lines if full else lines[-SHOWN_LINES:]
        out.append(f"--- run {rec.run_id}" + ("" if len(shown) == len(lines) else f" (last {len(shown)} lines)"))
        out.extend(shown)
        out.append(f"    full log: {log_path_for(sweep_dir, rec.run_id)}")
    if len(failed) > SHOWN_RUNS:
        out.append(f"--- {len(failed) - SHOWN_RUNS} more failed run(s): their logs are in "
                   f"{os.path.join(sweep_dir, 'logs', 'runs')}/")
    if not full:
        out.append("(HYDRA_FULL_ERROR=1 prints the tracebacks whole; `mfcl-sweeps status "
                   f"{sweep_dir}` lists every failed run)")
    return "\n".join(out)
