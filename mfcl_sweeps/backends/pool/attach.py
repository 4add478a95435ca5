"""Re-attaching runs a scheduler still holds from an earlier launch (`mfcl-sweeps complete`, or
`resume` with the pool): such a run is followed by its journaled job id through a source of the
same kind, never submitted again, so it cannot run twice."""
from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any, Sequence

from mfcl_sweeps import backends, model
from mfcl_sweeps.backends.base import JobHandle, JobRequest, Submission
from mfcl_sweeps.backends.pool import journaled
from mfcl_sweeps.backends.pool.sources import SCHEDULERS, SourceSpec
from mfcl_sweeps.errors import MfclError
from mfcl_sweeps.job.jobspec import result_path_for


def held_runs(sweep_dir: str, runs: Sequence[Any], sources: Sequence[SourceSpec]) -> dict[str, tuple[str, Any]]:
    """{run id: (source name, journal record)} for the runs a scheduler still holds; MfclError
    for one held by a kind of scheduler the pool has no source of."""
    from mfcl_sweeps.state.manifest import SweepManifest

    if not (Path(sweep_dir) / ".mfcl").exists():
        return {}
    records = SweepManifest(sweep_dir).records()
    out = {}
    for run in runs:
        rec = records.get(run.config_hash)
        if rec is None or rec.status not in model.ACTIVE_STATES or not rec.backend_job_id:
            continue
        kind = journaled.kind_of(rec) or rec.backend
        if kind not in SCHEDULERS or not backends.get(kind).still_running(rec):
            continue
        source = next((s.name for s in sources if s.kind == kind), None)
        if source is None:
            raise MfclError(f"run {rec.run_id} is still held by {kind} job {rec.backend_job_id}; add a {kind} source "
                            "so it is re-attached, or stop it first (mfcl-sweeps cancel)")
        out[run.run_id] = (source, rec)
    return out


def attach_submission(requests: list[JobRequest], recs: list[Any]) -> Submission:
    return Submission(requests=requests, extra={"attach": [r.backend_job_id for r in recs],
                                                "attempts": [r.attempt or 1 for r in recs]})


def attached_handles(sub: Submission) -> list[JobHandle]:
    """Child handles for journaled scheduler jobs (their backends poll by backend job id)."""
    now = time.monotonic()
    return [JobHandle(request=req, backend_job_id=job, started=now, data={"attempt": attempt})
            for req, job, attempt in zip(sub.requests, sub.extra["attach"], sub.extra["attempts"])]


def adopt_result(child: JobHandle) -> None:
    """An attached job wrote its result under its own attempt: where this request reads it."""
    req = child.request
    old = result_path_for(req.spec.sweep_dir, req.run.run_id, child.data.get("attempt", req.spec.attempt))
    if old != req.spec.result_path and Path(old).exists() and not Path(req.spec.result_path).exists():
        shutil.copyfile(old, req.spec.result_path)
