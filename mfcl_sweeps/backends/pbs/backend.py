"""PBS backend (`hydra/launcher=mfcl_pbs`): one job array per distinct resource set, from a Jinja2
template, for PBS Pro (`-J`, `select=`) or Torque (`-t`, `nodes=`).

Planning is pure (`pbs_options`, `directives`, `render_script`, `qsub_argv`); `PbsBackend.submit`
(the array-scheduler base's, backends/scheduler.py) is the only place qsub runs. Scheduler commands
go through a *front end* (frontends.py): real PBS, or Debian's slurm-wlm-torque over Slurm.
"""
from __future__ import annotations

import dataclasses
import math
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

from mfcl_sweeps.backends import packing
from mfcl_sweeps.backends.base import JobRequest, Submission
from mfcl_sweeps.backends.pbs.frontends import PbsError, PbsFrontend, make_frontend, run_command
from mfcl_sweeps.backends.scheduler import ArraySchedulerBackend, BackoffPoller, TaskState
from mfcl_sweeps.config import PbsLauncherConf
from mfcl_sweeps.job.jobspec import array_worker_argv, worker_argv
from mfcl_sweeps.layout import SweepLayout
from mfcl_sweeps.model import RunResources
from mfcl_sweeps.options import options_type

TEMPLATE = Path(__file__).resolve().parent / "pbs.sh.j2"


PbsOptions = options_type(PbsLauncherConf)  # declared, with their checks, in mfcl_sweeps.config
DEFAULTS = {"job_name": "mfcl"}  # for callers that bypass Hydra, which resolves ${hydra.job.name}



# -- planning (pure) -------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class ArrayResources:
    """What one array asks for; runs whose effective resources differ go to different arrays."""

    nodes: int
    ncpus: int
    ngpus: int
    mem_gb: Optional[float]
    timeout_min: float
    queue: Optional[str]


def array_resources(opts: PbsOptions, run: RunResources) -> ArrayResources:
    """The launcher's options with a run's own resources (from the sweep) laid over them."""
    return ArrayResources(
        nodes=run.nnodes or opts.nodes,
        ncpus=run.cpus_per_task or opts.ncpus,
        ngpus=opts.ngpus if run.gpus_per_node is None else run.gpus_per_node,
        mem_gb=run.mem_gb or opts.mem_gb,
        timeout_min=run.timeout_min or opts.timeout_min,
        queue=run.partition or opts.queue,
    )


def walltime(minutes: float) -> str:
    seconds = math.ceil(minutes * 60)
    return f"{seconds // 3600:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def pbs_mem(gb: float) -> str:
    """`16gb`, or whole megabytes for a fraction (`0.5` -> `512mb`): PBS sizes are integers."""
    return f"{int(gb)}gb" if float(gb).is_integer() else f"{math.ceil(gb * 1024)}mb"


def resource_directives(dialect: str, res: ArrayResources) -> list[str]:
    """The `-l` directives for one array."""
    if dialect == "pbspro":
        chunk = f"select={res.nodes}:ncpus={res.ncpus}"
        if res.ngpus:
            chunk += f":ngpus={res.ngpus}"
        if res.mem_gb:
            chunk += f":mem={pbs_mem(res.mem_gb)}"
        out = [f"-l {chunk}"]
    else:
        nodes = f"nodes={res.nodes}:ppn={res.ncpus}" + (f":gpus={res.ngpus}" if res.ngpus else "")
        out = [f"-l {nodes}"] + ([f"-l mem={pbs_mem(res.mem_gb * res.nodes)}"] if res.mem_gb else [])
    return out + [f"-l walltime={walltime(res.timeout_min)}"]


def array_range(opts: PbsOptions, size: int) -> Optional[str]:
    """`0-K` (`%P` where the dialect takes the limit in the range), None for a single job."""
    if size <= 1:  # PBS Pro refuses one-element arrays on some versions: submit a plain job
        return None
    rng = f"0-{size - 1}"
    limit = opts.array_parallelism
    if limit and limit < size and not (opts.dialect == "pbspro" and opts.subjob_limit == "max_run_subjobs"):
        rng += f"%{limit}"
    return rng


def array_flag(dialect: str) -> str:
    return "-J" if dialect == "pbspro" else "-t"


@dataclasses.dataclass
class ScriptContext:
    """Everything a job script template sees (docs/pbs.md lists these names)."""

    dialect: str
    frontend: str
    job_name: str
    directives: list[str]  # every `#PBS` line, without the prefix, in order
    resources: dict  # nodes, ncpus, ngpus, mem_gb, timeout_min, queue, walltime
    account: Optional[str]
    priority: Optional[int]
    array: Optional[str]  # e.g. "0-3%2"; None for a single job
    array_flag: str  # -J (pbspro) or -t (torque)
    output_path: str
    error_path: Optional[str]  # None when joined (-j oe)
    extra_directives: list[str]
    setup: list[str]
    workdir: str
    index_env: list[str]  # variables holding the array index, first set wins
    run_ids: list[str]
    log_paths: list[str]  # per task: its (first) run's log (stdout+stderr of the worker)
    job_list_path: Optional[str]
    command: str  # the worker command line, shell-quoted
    python: str
    runs_per_task: int = 1  # runs one task runs (each into its own log)
    runs_per_gpu: Optional[int] = None  # set: side by side, this many per GPU of the task (else in turn)


def directives(opts: PbsOptions, res: ArrayResources, *, array: Optional[str], output_path: str,
               error_path: Optional[str], array_size: int) -> list[str]:
    out = [f"-N {opts.job_name}", *resource_directives(opts.dialect, res)]
    if res.queue:
        out.append(f"-q {res.queue}")
    if opts.account:
        out.append(f"-A {opts.account}")
    if opts.priority is not None:
        out.append(f"-p {opts.priority}")
    if array:
        out.append(f"{array_flag(opts.dialect)} {array}")
        limit = opts.array_parallelism
        if opts.dialect == "pbspro" and opts.subjob_limit == "max_run_subjobs" and limit and limit < array_size:
            out.append(f"-W max_run_subjobs={limit}")
    out.append(f"-o {output_path}")
    out.append("-j oe" if error_path is None else f"-e {error_path}")
    out.extend(opts.extra_directives)
    return out


def render_script(ctx: ScriptContext, template: Optional[str] = None) -> str:
    """The job script: our template, or the user's file at `template`, rendered with `ctx`."""
    import jinja2

    path = Path(template) if template else TEMPLATE
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True,
                             trim_blocks=True, lstrip_blocks=True, autoescape=False)
    env.filters["sh"] = lambda v: shlex.quote(str(v))
    try:
        return env.from_string(path.read_text()).render(**dataclasses.asdict(ctx))
    except jinja2.TemplateError as err:
        where = f"{path}:{err.lineno}" if getattr(err, "lineno", None) else str(path)
        raise PbsError(f"hydra.launcher.template: {where}: {err}") from err


def qsub_argv(ctx: ScriptContext, script_path: str) -> list[str]:
    """qsub with what must not depend on the front end reading directives: name, output paths,
    array range (some front ends ignore in-script `#PBS -o/-e`)."""
    argv = ["qsub", "-N", ctx.job_name, "-o", ctx.output_path]
    argv += ["-j", "oe"] if ctx.error_path is None else ["-e", ctx.error_path]
    if ctx.array:
        argv += [ctx.array_flag, ctx.array]
    return argv + [script_path]


# -- the backend -------------------------------------------------------------------------------
class PbsBackend(ArraySchedulerBackend):
    name = "pbs"
    conf = PbsLauncherConf
    conf_defaults = DEFAULTS
    scheduler = "PBS"
    job_word = "PBS job"
    error_type = PbsError

    def __init__(self, options: PbsOptions, *, sweep_dir: str, frontend: Optional[PbsFrontend] = None,
                 workdir: Optional[str] = None) -> None:
        self.options = options
        self.sweep_dir = sweep_dir
        self.frontend = frontend or make_frontend(options.frontend, options.dialect)
        self.workdir = workdir or str(Path.cwd())
        self.state_dir = options.output_dir or SweepLayout(sweep_dir).backend_dir("pbs")
        self.python = options.python or sys.executable
        self.poller = BackoffPoller(self.query, options.poll_min_s, options.poll_max_s)

    # -- planning (pure) ------------------------------------------------------------------
    def resources(self, request: JobRequest) -> ArrayResources:
        return array_resources(self.options, request.run.resources)

    def max_array_size(self) -> int:
        return self.options.max_array_size

    def pack(self, res: ArrayResources, requests: Sequence[JobRequest]) -> packing.Plan:
        return packing.plan(self.options, res.timeout_min, [r.run for r in requests], res.ngpus)

    def plan_array(self, res: ArrayResources, requests: list[JobRequest], part: int,
                   pack: packing.Plan) -> Submission:
        o = self.options
        first = requests[0]
        stem = str(Path(self.state_dir) / f"{first.run.run_id}.{first.spec.attempt}")
        k = pack.runs_per_task
        tasks = packing.task_count(len(requests), k)
        res = dataclasses.replace(res, timeout_min=pack.task_minutes(res.timeout_min, len(requests)))
        rng = array_range(o, tasks)
        out = self.frontend.output_path(self.state_dir, o.job_name, rng is not None)
        err = None if o.join_output else out
        index_env = list(self.frontend.index_env)
        job_list = f"{stem}.jobs.json" if rng or k > 1 else None
        session = first.spec.session_path
        if k > 1:
            argv = [self.python, "-m", "mfcl_sweeps.backends.pack_task", session, job_list,
                    *pack.task_argv(), "--index-env", ",".join(index_env)]
        elif rng:
            argv = array_worker_argv(self.python, session, job_list, index_env)
        else:
            argv = worker_argv(self.python, session, first.job_path)
        ctx = ScriptContext(
            dialect=o.dialect, frontend=self.frontend.name, job_name=o.job_name,
            directives=directives(o, res, array=rng, output_path=out, error_path=err, array_size=tasks),
            resources={**dataclasses.asdict(res), "walltime": walltime(res.timeout_min)},
            account=o.account, priority=o.priority, array=rng, array_flag=array_flag(o.dialect),
            output_path=out, error_path=err, extra_directives=list(o.extra_directives), setup=list(o.setup),
            workdir=self.workdir, index_env=index_env, run_ids=[r.run.run_id for r in requests],
            log_paths=[r.log_path for r in requests[::k]], job_list_path=job_list, command=shlex.join(argv),
            python=self.python, runs_per_task=k, runs_per_gpu=pack.runs_per_gpu if k > 1 else None)
        script_path = f"{stem}.sh"
        return Submission(requests=list(requests), commands=[qsub_argv(ctx, script_path)],
                          script=render_script(ctx, o.template), script_path=script_path,
                          extra={"job_list_path": job_list, "array_size": tasks})

    # -- the scheduler's commands, through the front end --------------------------------------
    def parse_job_id(self, stdout: str) -> str:
        return self.frontend.submitted_id(stdout)

    def task_id(self, job_id: str, index: int, submission: Submission) -> str:
        return self.frontend.task_id(job_id, index if submission.extra["array_size"] > 1 else None)

    def journal_fields(self, submission: Submission, job_id: str, index: int) -> dict[str, Any]:
        return {"pbs_frontend": self.frontend.name, "pbs_dialect": self.options.dialect}

    def run_command(self, argv: list[str], timeout: float = 60) -> subprocess.CompletedProcess:
        return run_command(argv, timeout=timeout)

    def query(self, task_ids: list[str]) -> dict[str, TaskState]:
        return self.frontend.poll(task_ids)

    def cancel_ids(self, task_ids: list[str]) -> None:
        self.frontend.cancel(task_ids)

    # -- what the CLI and claim takeover ask of runs this backend started ----------------------
    @classmethod
    def from_options(cls, raw: Mapping[str, Any], *, session: Any) -> PbsBackend:
        return cls(cls.check_options(raw), sweep_dir=session.sweep_dir)

    @staticmethod
    def _frontend_for(records: Sequence[Any]) -> PbsFrontend:
        extra = next((r.extra for r in records if "pbs_dialect" in (getattr(r, "extra", None) or {})), {})
        return make_frontend(extra.get("pbs_frontend", "auto"), extra.get("pbs_dialect", "pbspro"))

    @classmethod
    def query_records(cls, records: Sequence[Any]) -> dict[str, TaskState]:
        return cls._frontend_for(records).poll([r.backend_job_id for r in records])

    @classmethod
    def cancel_record_ids(cls, records: Sequence[Any]) -> None:
        cls._frontend_for(records).cancel([r.backend_job_id for r in records])


pbs_options = PbsBackend.check_options  # checked options from `hydra.launcher.*` (OptionError)
