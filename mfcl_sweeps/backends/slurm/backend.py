"""Slurm backend (`hydra/launcher=mfcl_slurm`): each batch becomes job arrays, one per distinct
resource set, split under the cluster's MaxArraySize (docs/slurm.md, design notes in
docs/slurm-notes.md).

The job script is submitit's own (`_make_sbatch_string`, so every hydra-submitit-launcher option
means what it meant there); its command is `python -m mfcl_sweeps.backends.slurm_task`, which
picks the array task's job file, handles requeues and the time-limit signal, and runs the shared
worker. Job files are written before `sbatch` runs, so no task waits for its input.

Planning is pure (`slurm_options`, `array_resources`, `sbatch_parameters`, `render_script`);
`SlurmBackend.submit` is the only place sbatch runs (the plumbing is the array-scheduler base's,
backends/scheduler.py); states come from `backends.sacct`.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

from mfcl_sweeps.backends import packing
from mfcl_sweeps.backends import sacct as slurm_sacct
from mfcl_sweeps.backends.base import JobHandle, JobRequest, Submission
from mfcl_sweeps.backends.sacct import SlurmError
from mfcl_sweeps.backends.scheduler import ArraySchedulerBackend, BackoffPoller, TaskState
from mfcl_sweeps.config import SlurmLauncherConf
from mfcl_sweeps.layout import SweepLayout
from mfcl_sweeps.options import options_type

log = logging.getLogger(__name__)

DEFAULT_MAX_ARRAY_SIZE = 1001  # Slurm's default MaxArraySize
AGGREGATE_TIME_MIN = 30
PREVIOUS = "<previous array of this group>"  # placeholders in dry-run commands, filled at submit
AGGREGATE = "<aggregate job>"
ARRAYS = "<array ids>"


SlurmOptions = options_type(SlurmLauncherConf)  # declared, with their checks, in mfcl_sweeps.config
DEFAULTS = {"name": "mfcl"}  # for callers that bypass Hydra, which resolves ${hydra.job.name}



# -- planning (pure) ---------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class ArrayResources:
    """What one array asks for; runs whose effective resources differ go to different arrays."""

    partition: Optional[str]
    timeout_min: float
    nodes: int
    cpus_per_task: Optional[int]
    gpus_per_node: Optional[int]
    mem_gb: Optional[float]
    nproc_per_node: Optional[int]  # set: the run is started with torchrun, one agent per node


def array_resources(opts: SlurmOptions, run: Any) -> ArrayResources:
    """The launcher's options with a run's own resources (`PlannedRun.resources`) laid over them."""
    gpus = opts.gpus_per_node if run.gpus_per_node is None else run.gpus_per_node
    nproc = run.nproc_per_node or opts.nproc_per_node
    if nproc is None and opts.torchrun:
        nproc = gpus or 1
    return ArrayResources(
        partition=run.partition or opts.partition,
        timeout_min=float(run.timeout_min or opts.timeout_min),
        nodes=int(run.nnodes or opts.nodes),
        cpus_per_task=run.cpus_per_task or opts.cpus_per_task,
        gpus_per_node=gpus,
        mem_gb=run.mem_gb or opts.mem_gb,
        nproc_per_node=int(nproc) if nproc else None,
    )


def task_gpus(opts: SlurmOptions, res: ArrayResources) -> int:
    """GPUs one single-node, single-task allocation asks for (what `runs_per_gpu` multiplies)."""
    if res.gpus_per_node or opts.gpus_per_task:
        return int(res.gpus_per_node or opts.gpus_per_task)
    for item in (opts.gres or "").split(","):  # gpu, gpu:2, gpu:a100:2
        parts = item.strip().split(":")
        if parts[0] == "gpu":
            return int(parts[-1]) if len(parts) > 1 and parts[-1].isdigit() else 1
    return 0


def time_limit(minutes: float) -> int:
    """sbatch --time in whole minutes (Slurm's resolution), at least 1."""
    return max(1, math.ceil(minutes))


def signal_delay(opts: SlurmOptions, res: ArrayResources) -> int:
    """Seconds before the time limit the task is warned (USR2): at most half the limit, or a
    short job would be warned, and requeue itself, as soon as it starts."""
    return min(int(opts.signal_delay_s), time_limit(res.timeout_min) * 30)


def sbatch_parameters(opts: SlurmOptions, res: ArrayResources, count: int) -> dict[str, Any]:
    """Keyword arguments of submitit's `_make_sbatch_string` for one array of `count` tasks."""
    from submitit.slurm.slurm import _convert_mem

    extra = {"requeue": True} if opts.requeue else {}
    extra.update(opts.additional_parameters)
    setup = list(opts.setup)
    if res.nproc_per_node:
        # torchrun's rendezvous runs on the allocation's first node
        setup.append('export MFCL_RDZV_HOST="$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)"')
    params: dict[str, Any] = dict(
        job_name=opts.name, partition=res.partition, time=time_limit(res.timeout_min), nodes=res.nodes,
        ntasks_per_node=1 if res.nproc_per_node else opts.tasks_per_node,
        cpus_per_task=res.cpus_per_task, cpus_per_gpu=opts.cpus_per_gpu, gpus_per_node=res.gpus_per_node or None,
        gpus_per_task=opts.gpus_per_task, qos=opts.qos, account=opts.account, comment=opts.comment,
        constraint=opts.constraint, exclude=opts.exclude, gres=opts.gres,
        mem=_convert_mem(res.mem_gb) if res.mem_gb else None, mem_per_gpu=opts.mem_per_gpu,
        mem_per_cpu=opts.mem_per_cpu, signal_delay_s=signal_delay(opts, res), map_count=count,
        array_parallelism=int(opts.array_parallelism or count), stderr_to_stdout=opts.stderr_to_stdout,
        setup=setup or None, srun_args=list(opts.srun_args), additional_parameters=extra or None,
    )
    return {k: v for k, v in params.items() if v is not None}


def task_argv(python: str, session_path: str, job_list: str, opts: SlurmOptions, res: ArrayResources) -> list[str]:
    """What srun starts on every task of the array."""
    argv = [python, "-u", "-m", "mfcl_sweeps.backends.slurm_task", session_path, job_list,
            "--timeout-min", str(time_limit(res.timeout_min)), "--signal-delay-s", str(signal_delay(opts, res)),
            "--max-num-timeout", str(int(opts.max_num_timeout))]
    if res.nproc_per_node:
        argv += ["--nproc-per-node", str(res.nproc_per_node)]
        if opts.rdzv_port:
            argv += ["--rdzv-port", str(opts.rdzv_port)]
    return argv


def render_script(opts: SlurmOptions, res: ArrayResources, command: list[str], log_dir: str, count: int) -> str:
    """The sbatch script, exactly as submitted."""
    from submitit.slurm.slurm import _make_sbatch_string

    try:
        return _make_sbatch_string(command=shlex.join(command), folder=log_dir,
                                   **sbatch_parameters(opts, res, count)) + "\n"
    except TypeError as err:  # submitit names the keyword it does not know
        raise SlurmError(f"hydra.launcher: {err}") from err


def log_paths(log_dir: str, array_id: str, index: int) -> str:
    """Where Slurm writes what a task printed before the worker took over its run's log."""
    return str(Path(log_dir) / f"{array_id}_{index}_0_log.out")


def read_max_array_size() -> int:
    """The cluster's MaxArraySize (`scontrol show config`); Slurm's default if scontrol fails."""
    try:
        proc = slurm_sacct.run_command(["scontrol", "show", "config"], timeout=30)
    except SlurmError:
        proc = None
    if proc is not None and proc.returncode == 0:
        for line in proc.stdout.splitlines():
            key, sep, value = line.partition("=")
            if sep and key.strip() == "MaxArraySize" and value.strip().isdigit():
                return int(value.strip())
    log.warning("could not read MaxArraySize from `scontrol show config`; assuming Slurm's default %d",
                DEFAULT_MAX_ARRAY_SIZE)
    return DEFAULT_MAX_ARRAY_SIZE


def aggregate_argv(opts: SlurmOptions, python: str, sweep_dir: str, log_dir: str) -> list[str]:
    """The held job that runs `mfcl-sweeps aggregate` after a detached sweep's arrays."""
    argv = ["sbatch", "--parsable", "--hold", f"--job-name={opts.name}-aggregate", f"--time={AGGREGATE_TIME_MIN}",
            f"--output={Path(log_dir) / 'aggregate-%j.out'}"]
    where = (("partition", opts.partition), ("qos", opts.qos), ("account", opts.account))
    argv += [f"--{k}={v}" for k, v in where if v]
    return argv + ["--wrap", shlex.join([python, "-m", "mfcl_sweeps.cli", "aggregate", sweep_dir])]


# -- the backend -------------------------------------------------------------------------------
class SlurmBackend(ArraySchedulerBackend):
    name = "slurm"
    conf = SlurmLauncherConf
    conf_defaults = DEFAULTS
    scheduler = "Slurm"
    job_word = "Slurm job"
    error_type = SlurmError

    def __init__(self, options: SlurmOptions, *, sweep_dir: str, detach: bool = False,
                 max_array_size: Optional[int] = None) -> None:
        self.options = options
        self.sweep_dir = sweep_dir
        self.detach = detach
        self.state_dir = SweepLayout(sweep_dir).backend_dir("slurm")
        self.log_dir = str(Path(self.state_dir) / "logs")
        self.python = options.python or sys.executable
        self.array_limit = options.max_array_size or max_array_size or read_max_array_size()
        self.sacct = slurm_sacct.SlurmQuery(has_result=self._has_result)
        self._results: dict[str, list[str]] = {}  # task id -> its runs' result paths
        self._last_array: dict[ArrayResources, str] = {}  # per group: the latest array (chained by parallelism)
        self._arrays: list[str] = []
        self._aggregate: Optional[dict] = None  # {"id", "arrays_expected"} while the aggregate job is held
        self.poller = BackoffPoller(self.query, options.poll_min_s, options.poll_max_s)

    # -- planning (pure) ------------------------------------------------------------------
    def resources(self, request: JobRequest) -> ArrayResources:
        return array_resources(self.options, request.run.resources)

    def max_array_size(self) -> int:
        return self.array_limit  # the largest index is MaxArraySize - 1

    def plan(self, requests: Sequence[JobRequest]) -> list[Submission]:
        out = super().plan(requests)
        if self.detach and out:
            out.insert(0, Submission(requests=[], commands=[
                aggregate_argv(self.options, self.python, self.sweep_dir, self.log_dir),
                ["scontrol", "update", f"JobId={AGGREGATE}", f"Dependency=afterany:{ARRAYS}"],
                ["scontrol", "release", AGGREGATE]], extra={"aggregate": True, "arrays": len(out)}))
        return out

    def pack(self, res: ArrayResources, requests: Sequence[JobRequest]) -> packing.Plan:
        """Packing is for single-process runs: torchrun and multi-task allocations keep one run per task."""
        if res.nproc_per_node or res.nodes != 1 or self.options.tasks_per_node != 1:
            return packing.Plan()
        return packing.plan(self.options, res.timeout_min, [r.run for r in requests], task_gpus(self.options, res))

    def plan_array(self, res: ArrayResources, requests: list[JobRequest], part: int,
                   pack: packing.Plan) -> Submission:
        first = requests[0]
        stem = str(Path(self.state_dir) / f"{first.run.run_id}.{first.spec.attempt}")
        job_list = f"{stem}.jobs.json"
        k = pack.runs_per_task
        task_res = dataclasses.replace(res, timeout_min=pack.task_minutes(res.timeout_min, len(requests)))
        command = task_argv(self.python, first.spec.session_path, job_list, self.options, task_res)
        if k > 1:
            command += pack.task_argv()
        script_path = f"{stem}.sh"
        argv = ["sbatch", "--parsable"]
        # %P holds per array: a group split into several arrays runs them one after another
        chained = part > 0 and self.options.array_parallelism is not None
        if chained:
            argv.append(f"--dependency=afterany:{PREVIOUS}")
        return Submission(requests=list(requests), commands=[argv + [script_path]],
                          script=render_script(self.options, task_res, command, self.log_dir,
                                               packing.task_count(len(requests), k)),
                          script_path=script_path,
                          extra={"job_list_path": job_list, "resources": res, "chained": chained,
                                 "torchrun": bool(res.nproc_per_node)})

    # -- running: the base's plumbing, with the previous array and the aggregation job filled in --
    def submit(self, submission: Submission) -> list[JobHandle]:
        Path(self.log_dir).mkdir(parents=True, exist_ok=True)  # Slurm writes task output there
        if submission.extra.get("aggregate"):
            self._aggregate = {"id": self.run_submit(submission.commands[0]),
                               "arrays_expected": submission.extra["arrays"]}
            return []
        return super().submit(submission)

    def submit_argv(self, submission: Submission) -> list[str]:
        res = submission.extra["resources"]
        argv = [a.replace(PREVIOUS, self._last_array.get(res, "")) for a in submission.commands[0]]
        if submission.extra["chained"] and res not in self._last_array:
            argv = [a for a in argv if not a.startswith("--dependency=")]
        return argv

    def parse_job_id(self, stdout: str) -> str:
        job_id = stdout.strip().split(";")[0]  # --parsable prints ID or ID;cluster
        if not job_id.isdigit():
            raise SlurmError(f"sbatch printed no job id: {stdout.strip()[-300:]!r}")
        return job_id

    def task_id(self, job_id: str, index: int, submission: Submission) -> str:
        return f"{job_id}_{index}"

    def journal_fields(self, submission: Submission, job_id: str, index: int) -> dict[str, Any]:
        fields = {"slurm_log": log_paths(self.log_dir, job_id, index)}
        if self._aggregate:
            fields["slurm_aggregate_job"] = self._aggregate["id"]
        return fields

    def submitted(self, submission: Submission, job_id: str) -> None:
        self._last_array[submission.extra["resources"]] = job_id
        self._arrays.append(job_id)
        k = submission.extra.get("runs_per_task", 1)
        for i, req in enumerate(submission.requests):
            self._results.setdefault(self.task_id(job_id, i // k, submission), []).append(req.spec.result_path)
        if self._aggregate and len(self._arrays) == self._aggregate["arrays_expected"]:
            self._release_aggregate()

    def run_command(self, argv: list[str], timeout: float = 60) -> subprocess.CompletedProcess:
        return slurm_sacct.run_command(argv, timeout=timeout)

    def _release_aggregate(self) -> None:
        agg, self._aggregate = self._aggregate["id"], None
        if self._arrays:
            self._scontrol(["update", f"JobId={agg}", f"Dependency=afterany:{':'.join(self._arrays)}"])
        self._scontrol(["release", agg])
        log.info("aggregation job %s runs `mfcl-sweeps aggregate %s` after arrays %s", agg, self.sweep_dir,
                 ", ".join(self._arrays))

    def _scontrol(self, args: list[str]) -> None:
        proc = self.run_command(["scontrol", *args])
        if proc.returncode:
            raise SlurmError(f"scontrol {' '.join(args)} failed (exit {proc.returncode}): {proc.stderr.strip()[-300:]}")

    def _has_result(self, task_id: str) -> bool:
        paths = self._results.get(task_id)
        return bool(paths) and all(os.path.exists(p) for p in paths)

    def query(self, task_ids: list[str]) -> dict[str, TaskState]:
        return self.sacct.states(task_ids)

    def cancel_ids(self, task_ids: list[str]) -> None:
        slurm_sacct.cancel(task_ids)

    def close(self) -> None:
        if self._aggregate:  # a detached launch that failed half-way: aggregate what was submitted
            self._release_aggregate()

    # -- what the CLI and claim takeover ask of runs this backend started ----------------------
    @classmethod
    def from_options(cls, raw: Mapping[str, Any], *, session: Any) -> SlurmBackend:
        from omegaconf import OmegaConf

        detach = bool(OmegaConf.select(session.master_config, "hydra.launcher.detach", default=False))
        return cls(cls.check_options(raw), sweep_dir=session.sweep_dir, detach=detach)

    @classmethod
    def query_records(cls, records: Sequence[Any]) -> dict[str, TaskState]:
        # a task gone from squeue that sacct has not recorded yet is left as the journal says
        return slurm_sacct.SlurmQuery(grace_s=math.inf).states([r.backend_job_id for r in records])

    @classmethod
    def cancel_record_ids(cls, records: Sequence[Any]) -> None:
        """scancel the runs' array tasks and the sweep's aggregation job."""
        aggregate = {str(r.extra["slurm_aggregate_job"]) for r in records if (r.extra or {}).get("slurm_aggregate_job")}
        slurm_sacct.cancel([r.backend_job_id for r in records] + sorted(aggregate))


slurm_options = SlurmBackend.check_options  # checked options from `hydra.launcher.*` (OptionError)
