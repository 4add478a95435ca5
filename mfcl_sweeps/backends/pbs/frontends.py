"""What differs on a PBS front end that only imitates PBS: Debian's slurm-wlm-torque, whose
qsub/qstat/qdel are Perl scripts over Slurm. Measured there (slurm-wlm 22.05):

- `qsub -J 0-2` and `-t 0-2` both submit an array (`sbatch --array=...`) and print only the numeric
  id; the job sees SLURM_ARRAY_TASK_ID and no PBS_* variable.
- qsub builds one shell string for sbatch, unquoted: paths must not hold spaces or shell
  characters. It always passes its own `-o/-e` (so in-script `#PBS -o/-e` lose); `-o` is given
  to sbatch as is, so Slurm's `%A`/`%a`/`%j` patterns name per-task files.
- qstat lists array tasks under numeric Slurm ids with no array index and no exit status, so
  task states come from Slurm itself, through the Slurm backend's query (slurm_sacct.SlurmQuery:
  sacct, then squeue for what sacct cannot settle), worded in PBS ids.
- `qdel ID` kills a whole array (SIGKILL); `qdel` of one task's numeric id fails. Every caller
  cancels all unfinished tasks of an array at once, so whole arrays are deleted.

Job ids stay in PBS notation in the manifest (`31[2]`); they are turned into Slurm's (`31_2`) here.
"""
from __future__ import annotations

import logging
import re
from typing import Optional, Sequence

from mfcl_sweeps.backends.pbs.backend import PbsError, PbsFrontend, run_command, split_job_id
from mfcl_sweeps.backends.polling import TaskState
from mfcl_sweeps.backends.slurm.query import SlurmQuery, Wording

log = logging.getLogger(__name__)

# Why the scheduler, not the task, ended a job, in PBS words: the run's error when no result exists.
REASONS = {"CANCELLED": "deleted (qdel/scancel)", "TIMEOUT": "walltime exceeded", "OUT_OF_MEMORY": "out of memory",
           "NODE_FAIL": "node failure", "PREEMPTED": "preempted", "BOOT_FAIL": "node boot failure",
           "DEADLINE": "deadline reached"}
SAFE_PATH = re.compile(r"[\w./+%-]+")


def slurm_id(task_id: str) -> str:
    """`31[2]` -> `31_2`; `31` -> `31`."""
    seq, index, _ = split_job_id(task_id)
    return seq if index is None else f"{seq}_{index}"


def pbs_id(slurm_task_id: str) -> str:
    """`31_2` -> `31[2]`; `31` -> `31`."""
    seq, _, index = slurm_task_id.partition("_")
    return f"{seq}[{index}]" if index else seq


PBS_WORDING = Wording(job="PBS job", reasons=REASONS, shown_id=pbs_id)


class SlurmTorqueFrontend(PbsFrontend):
    name = "slurm"
    index_env = ("PBS_ARRAY_INDEX", "PBS_ARRAYID", "SLURM_ARRAY_TASK_ID")

    def __init__(self, dialect: str) -> None:
        super().__init__(dialect)
        # A task gone from the queue without an accounting record is judged by its result file,
        # as PbsFrontend.poll does for a job qstat no longer knows: no error of the scheduler's.
        self.query = SlurmQuery(wording=PBS_WORDING, has_result=lambda _: True)

    def output_path(self, out_dir: str, job_name: str, array: bool) -> str:
        if not SAFE_PATH.fullmatch(out_dir):
            raise PbsError(f"hydra.launcher.output_dir={out_dir!r}: slurm-wlm-torque's qsub passes paths to sbatch "
                           "through an unquoted shell string; use a path of letters, digits and ./_+- only "
                           "(set hydra.sweep.dir or hydra.launcher.output_dir)")
        return f"{out_dir.rstrip('/')}/{job_name}.o%A.%a" if array else f"{out_dir.rstrip('/')}/{job_name}.o%j"

    def submitted_id(self, stdout: str) -> str:
        job_id = super().submitted_id(stdout)
        if not job_id.isdigit():  # it prints an explanation instead of an id when sbatch failed
            raise PbsError(f"qsub did not print a job id: {stdout.strip()[-500:]}")
        return job_id

    def task_id(self, job_id: str, index: Optional[int]) -> str:
        return job_id if index is None else f"{job_id}[{index}]"

    def poll(self, task_ids: Sequence[str]) -> dict[str, TaskState]:
        """Slurm's own answer (sacct, then squeue for what it cannot settle), in PBS ids."""
        by_slurm = {slurm_id(t): t for t in task_ids}
        return {by_slurm[sid]: state for sid, state in self.query.states(list(by_slurm)).items()}

    def cancel(self, task_ids: Sequence[str]) -> None:
        jobs = sorted({split_job_id(t)[0] for t in task_ids}, key=int)
        if jobs:
            proc = run_command(["qdel", *jobs])
            if proc.returncode:  # an array that already ended is not an error here
                log.info("qdel exit %s: %s", proc.returncode, (proc.stdout + proc.stderr).strip()[:300])
