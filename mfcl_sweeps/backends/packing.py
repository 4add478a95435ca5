"""Several short runs in one array task (`hydra.launcher.runs_per_task`, `runs_per_gpu`,
`pack_minutes`; mfcl_slurm and mfcl_pbs): how runs are packed (`plan`), and what the driver,
`mfcl-sweeps status` and `mfcl-sweeps cancel` need to know of a packed task.

Task T of an array runs entries T*K .. T*K+K-1 of the array's job list (backends/pack_task.py):
one after another, or with `runs_per_gpu` G, G at a time per GPU of the task (G at a time in a
task without GPUs). Every run of the task is journaled under the task's id; its own progress
comes from its own files, not from the scheduler:

- done: its result file exists (the task renames it into place once the run's outcome is
  journaled), or the task ended without it (the run failed with the task's error);
- cancelled alone: `mfcl-sweeps cancel` writes `<cancel dir>/<run_id>`; the task skips that run
  or stops it (its process group) and answers with `<run_id>.stopped`. A task all of whose runs
  are cancelled is scancelled/qdel'd as a whole.
"""
from __future__ import annotations

import os
import signal
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence

from mfcl_sweeps.layout import SweepLayout

PACK_RUNS = "pack_runs"  # journal extra: how many runs the packed task holds
PACK_DIR = "pack_dir"  # journal extra: where cancel markers of the task's runs go
STOPPED = ".stopped"
KILLED_BY_CANCEL = "job process killed by mfcl-sweeps cancel"


def cancel_dir(sweep_dir: str, backend: str) -> str:
    return SweepLayout(sweep_dir).backend_dir(backend, "cancel")


def task_slice(job_paths: Sequence[str], task: int, runs_per_task: int) -> list[str]:
    """The job files task `task` runs."""
    return list(job_paths[task * runs_per_task:(task + 1) * runs_per_task])


def task_count(runs: int, runs_per_task: int) -> int:
    return -(-runs // runs_per_task)


@dataclass(frozen=True)
class Plan:
    """How the runs of one array share its tasks."""

    runs_per_task: int = 1  # K: task T runs entries T*K .. T*K+K-1
    runs_per_gpu: Optional[int] = None  # set: runs side by side, this many per GPU of the task
    at_once: int = 1  # runs of a task running at once, as planned from the GPUs the task asks for

    def task_minutes(self, timeout_min: float, runs: int) -> float:
        """A task's time limit: each turn of its runs gets the run's own `timeout_min`."""
        return timeout_min * -(-min(runs, self.runs_per_task) // self.at_once)

    def task_argv(self) -> list[str]:
        """What the task command is told (pack_task.py)."""
        argv = ["--runs-per-task", str(self.runs_per_task)]
        return argv + (["--runs-per-gpu", str(self.runs_per_gpu)] if self.runs_per_gpu else [])


def run_minutes(run: Any, timeout_min: float) -> float:
    """How long a run is expected to take, for `pack_minutes`: its iso_time budget where it has
    one below its timeout (the run stops itself there), else its timeout."""
    budget = getattr(run, "budget", None)
    if budget is not None and budget.mode == "iso_time":
        return min(float(budget.limit), timeout_min)
    return timeout_min


def plan(options: Any, timeout_min: float, runs: Sequence[Any], gpus: int) -> Plan:
    """The packing of an array of `runs` (PlannedRuns) whose tasks have `gpus` GPUs each.

    runs_per_gpu G: G x max(1, gpus) runs at once. runs_per_task K: K runs per task; else
    pack_minutes M: as many turns as fit in M minutes by the array's longest run (at least one),
    times the runs at once; else one turn of runs at once (1: no packing)."""
    at_once = options.runs_per_gpu * max(1, gpus) if options.runs_per_gpu else 1
    if options.runs_per_task:
        k = options.runs_per_task
    elif options.pack_minutes:
        longest = max((run_minutes(r, timeout_min) for r in runs), default=timeout_min)
        k = max(1, int(options.pack_minutes / longest + 1e-9)) * at_once  # 0.3 / 0.1 is 2.9999...
    else:
        k = at_once
    return Plan(runs_per_task=k, runs_per_gpu=options.runs_per_gpu, at_once=min(at_once, k))


def journal_fields(runs: int, marker_dir: str) -> dict[str, Any]:
    return {PACK_RUNS: runs, PACK_DIR: marker_dir}


def is_packed(record: Any) -> bool:
    return PACK_RUNS in (getattr(record, "extra", None) or {})


def cancel_requested(marker_dir: str, run_id: str) -> bool:
    return os.path.exists(os.path.join(marker_dir, run_id))


def stopped_state(marker_dir: str, run_id: str) -> Optional[tuple[int, str]]:
    """(exit code, error) of a run the task stopped on a cancel marker, None if it did not."""
    if os.path.exists(os.path.join(marker_dir, run_id + STOPPED)):
        return -signal.SIGTERM, KILLED_BY_CANCEL
    return None


def request_cancel(records: Iterable[Any]) -> list[str]:
    """Write cancel markers for packed records; return the task ids to stop as a whole: those
    whose every run is being cancelled (the rest stop only the cancelled runs themselves). A
    task's runs are the records journaled under its id (a run retried elsewhere has moved)."""
    records = list(records)
    cancelling = Counter(r.backend_job_id for r in records)
    whole: list[str] = []
    for rec in records:
        extra = rec.extra or {}
        Path(extra[PACK_DIR]).mkdir(parents=True, exist_ok=True)
        (Path(extra[PACK_DIR]) / rec.run_id).touch()
        if cancelling[rec.backend_job_id] >= extra[PACK_RUNS] and rec.backend_job_id not in whole:
            whole.append(rec.backend_job_id)
    return whole
