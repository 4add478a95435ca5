"""How PBS's commands are spoken: `PbsFrontend` speaks real PBS Pro / Torque (`qstat -f -t`,
`qdel ID[i]`); `SlurmTorqueFrontend` what differs on a front end that only imitates PBS:
Debian's slurm-wlm-torque, whose qsub/qstat/qdel are Perl scripts over Slurm. Measured there
(slurm-wlm 22.05):

- `qsub -J 0-2` and `-t 0-2` both submit an array (`sbatch --array=...`) and print only the numeric
  id; the job sees SLURM_ARRAY_TASK_ID and no PBS_* variable.
- qsub builds one shell string for sbatch, unquoted: paths must not hold spaces or shell
  characters. It always passes its own `-o/-e` (so in-script `#PBS -o/-e` lose); `-o` is given
  to sbatch as is, so Slurm's `%A`/`%a`/`%j` patterns name per-task files.
- qstat lists array tasks under numeric Slurm ids with no array index and no exit status, so
  task states come from Slurm itself, through the query the Slurm backend uses
  (backends.sacct.SlurmQuery: sacct, then squeue for what sacct cannot settle), worded in PBS ids.
- `qdel ID` kills a whole array (SIGKILL); `qdel` of one task's numeric id fails. Every caller
  cancels all unfinished tasks of an array at once, so whole arrays are deleted.

Job ids stay in PBS notation in the manifest (`31[2]`); they are turned into Slurm's (`31_2`) here.
"""
from __future__ import annotations

import functools
import logging
import re
from typing import Mapping, Optional, Sequence

from mfcl_sweeps.backends.children import signal_name
from mfcl_sweeps.backends.sacct import SlurmQuery, Wording
from mfcl_sweeps.backends.scheduler import TaskState, scheduler_command
from mfcl_sweeps.errors import MfclError

log = logging.getLogger(__name__)


class PbsError(MfclError):
    """A PBS option is invalid or a PBS command failed."""


run_command = functools.partial(scheduler_command, error_type=PbsError, scheduler="PBS")


JOB_ID = re.compile(r"(\d+)(?:\[(\d*)\])?((?:\.[\w.-]+)?)")


def split_job_id(job_id: str) -> tuple[str, Optional[int], str]:
    """`123[4].server` -> ("123", 4, ".server"); `123[].s` -> ("123", None, ".s"); `123` -> ("123", None, "")."""
    m = JOB_ID.fullmatch(job_id.strip())
    if m is None:
        raise PbsError(f"not a PBS job id: {job_id!r}")
    return m.group(1), (int(m.group(2)) if m.group(2) else None), m.group(3)


def parse_qstat_full(text: str) -> dict[str, dict[str, str]]:
    """`qstat -f` text (PBS Pro and Torque alike) -> {job id: {attribute (lower case): value}}.
    Long values continue on lines indented deeper than the attribute's."""
    jobs: dict[str, dict[str, str]] = {}
    current: Optional[dict[str, str]] = None
    key = None
    for line in text.splitlines():
        if line.startswith("Job Id:"):
            current = jobs.setdefault(line.split(":", 1)[1].strip(), {})
            key = None
        elif current is not None and " = " in line and not line.startswith("\t\t"):
            key, value = line.strip().split(" = ", 1)
            key = key.lower()
            current[key] = value
        elif current is not None and key and line.strip():
            current[key] += line.strip()
    return jobs


def pbs_task_state(attrs: Mapping[str, str]) -> TaskState:
    """One job's `qstat -f` attributes -> TaskState. PBS Pro: F (finished) and X (subjob
    finished) end a job; Torque: C. Exit_status > 256 means killed by signal N-256 (PBS Pro;
    Torque uses 256+N as well); negative values are PBS's own failures to run the job."""
    state = attrs.get("job_state", "?")
    done = state in ("F", "X", "C")
    code = None
    error = None
    raw = attrs.get("exit_status")
    if raw is not None and raw.lstrip("-").isdigit():
        code = int(raw)
        if code > 256:
            error = f"PBS job killed by {signal_name(256 - code)} (Exit_status {code})"
            code = 256 - code  # as the local backend records a signal
        elif code < 0:
            error = f"PBS could not run the job (Exit_status {code})"
    return TaskState(done=done, running=state in ("R", "E"), exit_code=code, error=error if done else None,
                     status=state)


def unknown_ids(text: str) -> list[str]:
    """Job ids that qstat's error lines name as unknown or finished."""
    ids = []
    for line in text.splitlines():
        if re.search(r"unknown job id|job has finished|invalid job id", line, re.I):
            ids += [m.group(0) for m in re.finditer(r"\b\d+(?:\[\d*\])?(?:\.[\w-]+(?:\.[\w-]+)*)?", line)]
    return ids


class PbsFrontend:
    """Real PBS Pro / Torque client commands."""

    name = "pbs"
    index_env: tuple[str, ...] = ("PBS_ARRAY_INDEX", "PBS_ARRAYID")

    def __init__(self, dialect: str) -> None:
        self.dialect = dialect

    def output_path(self, out_dir: str, job_name: str, array: bool) -> str:
        # A directory: PBS names each (sub)job's file itself, so array tasks never share one.
        return out_dir.rstrip("/") + "/"

    def submitted_id(self, stdout: str) -> str:
        lines = [ln.strip() for ln in stdout.splitlines() if ln.strip()]
        if not lines:
            raise PbsError("qsub printed no job id")
        split_job_id(lines[-1])
        return lines[-1]

    def task_id(self, job_id: str, index: Optional[int]) -> str:
        """The id of array task `index` of `job_id` (`123[].s` -> `123[4].s`), as PBS names it."""
        return job_id if index is None else job_id.replace("[]", f"[{index}]", 1)

    def qstat_argv(self, job_ids: Sequence[str]) -> list[str]:
        # PBS Pro shows finished jobs only with -x (history); Torque's -x means XML instead.
        return ["qstat", "-f", "-t", *(["-x"] if self.dialect == "pbspro" else []), *job_ids]

    def poll(self, task_ids: Sequence[str]) -> dict[str, TaskState]:
        """States of these tasks from one qstat call over their arrays. A task qstat no longer
        knows has ended (its result file says how); if qstat failed outright, nothing is reported."""
        arrays = sorted({self.array_id(t) for t in task_ids})
        proc = run_command(self.qstat_argv(arrays))
        seen = {self.key(j): attrs for j, attrs in parse_qstat_full(proc.stdout).items() if JOB_ID.fullmatch(j)}
        gone = {self.key(j) for j in unknown_ids(proc.stderr)} if proc.returncode else set()
        out = {}
        for t in task_ids:
            k = self.key(t)
            if k in seen:
                out[t] = pbs_task_state(seen[k])
            elif proc.returncode == 0 or k in gone or self.key(self.array_id(t)) in gone:
                out[t] = TaskState(done=True, status="gone")
        if proc.returncode and not out:
            log.warning("qstat failed (exit %s): %s", proc.returncode, proc.stderr.strip()[:300])
        return out

    @staticmethod
    def array_id(task_id: str) -> str:
        seq, index, server = split_job_id(task_id)
        return f"{seq}[]{server}" if index is not None or "[]" in task_id else task_id

    @staticmethod
    def key(job_id: str) -> tuple[str, Optional[int]]:
        # qstat may print a longer server name than qsub did: match on sequence number and index
        seq, index, _ = split_job_id(job_id)
        return seq, index

    def cancel(self, task_ids: Sequence[str]) -> None:
        if task_ids:
            proc = run_command(["qdel", *task_ids])
            if proc.returncode:  # finished tasks cannot be deleted; the rest were
                log.info("qdel exit %s: %s", proc.returncode, proc.stderr.strip()[:300])


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


def detect_frontend(choice: str = "auto") -> str:
    """'pbs' or 'slurm': which qsub this machine has (slurm-wlm-torque's is a Perl script
    that runs sbatch)."""
    if choice != "auto":
        return choice
    import shutil

    qsub = shutil.which("qsub")
    if qsub is None:
        return "pbs"
    try:
        with open(qsub, "rb") as f:
            head = f.read(65536)
    except OSError:
        return "pbs"
    return "slurm" if b"sbatch" in head and b"Slurm" in head else "pbs"


def make_frontend(choice: str, dialect: str) -> PbsFrontend:
    if detect_frontend(choice) == "slurm":
        return SlurmTorqueFrontend(dialect)
    return PbsFrontend(dialect)
