"""PBS backend (`hydra/launcher=mfcl_pbs`): one job array per distinct resource set, from a Jinja2
template, for PBS Pro (`-J`, `select=`) or Torque (`-t`, `nodes=`).

Planning is pure (`pbs_options`, `directives`, `render_script`, `qsub_argv`); `PbsBackend.submit`
is the only place qsub runs. Scheduler commands go through a *front end*: `PbsFrontend` below speaks
real PBS (`qstat -f -t`, `qdel ID[i]`); `mfcl_sweeps.backends.pbs.frontends` holds what differs on
front ends that only imitate PBS (Debian's slurm-wlm-torque over Slurm).
"""
from __future__ import annotations

import dataclasses
import functools
import json
import logging
import math
import re
import shlex
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

from mfcl_sweeps.backends.base import Backend, JobHandle, JobRequest, JobState, Submission
from mfcl_sweeps.backends.local import signal_name
from mfcl_sweeps.backends.polling import BackoffPoller, TaskState, scheduler_command
from mfcl_sweeps.config import PbsLauncherConf
from mfcl_sweeps.errors import MfclError
from mfcl_sweeps.job.jobspec import array_worker_argv, atomic_write_bytes, worker_argv
from mfcl_sweeps.model import RunResources
from mfcl_sweeps.options import options_type, parse_options

log = logging.getLogger(__name__)

TEMPLATE = Path(__file__).resolve().parent / "pbs.sh.j2"
QSUB_TIMEOUT_S = 120


class PbsError(MfclError):
    """A PBS option is invalid or a PBS command failed."""


PbsOptions = options_type(PbsLauncherConf)  # declared, with their checks, in mfcl_sweeps.config
DEFAULTS = {"job_name": "mfcl"}  # for callers that bypass Hydra, which resolves ${hydra.job.name}


def pbs_options(raw: Mapping[str, Any]) -> PbsOptions:
    """Checked options from `hydra.launcher.*` (OptionError for the first bad one)."""
    return parse_options(PbsLauncherConf, raw, "mfcl_pbs", **DEFAULTS)


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
    log_paths: list[str]  # per task: its run's log (stdout+stderr of the worker)
    job_list_path: Optional[str]
    command: str  # the worker command line, shell-quoted
    python: str


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


# -- front ends: how the scheduler's commands are spoken --------------------------------------
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
        from mfcl_sweeps.backends.pbs.frontends import SlurmTorqueFrontend

        return SlurmTorqueFrontend(dialect)
    return PbsFrontend(dialect)


# -- the backend -------------------------------------------------------------------------------
class PbsBackend(Backend):
    name = "pbs"
    conf = PbsLauncherConf
    conf_defaults = DEFAULTS
    queues_jobs = True
    poll_interval = 0.2  # the driver loop's sleep; qstat itself runs at most every poll_min_s..poll_max_s

    def __init__(self, options: PbsOptions, *, sweep_dir: str, frontend: Optional[PbsFrontend] = None,
                 workdir: Optional[str] = None) -> None:
        self.options = options
        self.sweep_dir = sweep_dir
        self.frontend = frontend or make_frontend(options.frontend, options.dialect)
        self.workdir = workdir or str(Path.cwd())
        self.out_dir = options.output_dir or str(Path(sweep_dir) / ".mfcl" / "pbs")
        self.python = options.python or sys.executable
        self.poller = BackoffPoller(self.frontend.poll, options.poll_min_s, options.poll_max_s)

    # -- planning (pure) ------------------------------------------------------------------
    def plan(self, requests: Sequence[JobRequest]) -> list[Submission]:
        groups: dict[ArrayResources, list[JobRequest]] = defaultdict(list)
        for req in requests:
            groups[array_resources(self.options, req.run.resources)].append(req)
        size = self.options.max_array_size
        return [self.plan_array(res, reqs[i:i + size]) for res, reqs in groups.items()
                for i in range(0, len(reqs), size)]

    def plan_array(self, res: ArrayResources, requests: list[JobRequest]) -> Submission:
        o = self.options
        first = requests[0]
        stem = str(Path(self.out_dir) / f"{first.run.run_id}.{first.spec.attempt}")
        rng = array_range(o, len(requests))
        out = self.frontend.output_path(self.out_dir, o.job_name, rng is not None)
        err = None if o.join_output else out
        index_env = list(self.frontend.index_env)
        job_list = f"{stem}.jobs.json" if rng else None
        session = first.spec.session_path
        argv = (array_worker_argv(self.python, session, job_list, index_env) if rng
                else worker_argv(self.python, session, first.job_path))
        ctx = ScriptContext(
            dialect=o.dialect, frontend=self.frontend.name, job_name=o.job_name,
            directives=directives(o, res, array=rng, output_path=out, error_path=err, array_size=len(requests)),
            resources={**dataclasses.asdict(res), "walltime": walltime(res.timeout_min)},
            account=o.account, priority=o.priority, array=rng, array_flag=array_flag(o.dialect),
            output_path=out, error_path=err, extra_directives=list(o.extra_directives), setup=list(o.setup),
            workdir=self.workdir, index_env=index_env, run_ids=[r.run.run_id for r in requests],
            log_paths=[r.log_path for r in requests], job_list_path=job_list, command=shlex.join(argv),
            python=self.python)
        script_path = f"{stem}.sh"
        return Submission(requests=list(requests), commands=[qsub_argv(ctx, script_path)],
                          script=render_script(ctx, o.template), script_path=script_path,
                          extra={"job_list_path": job_list, "array_size": len(requests)})

    # -- running ------------------------------------------------------------------------------
    def submit(self, submission: Submission) -> list[JobHandle]:
        Path(self.out_dir).mkdir(parents=True, exist_ok=True)
        for req in submission.requests:
            Path(req.log_path).parent.mkdir(parents=True, exist_ok=True)
        if submission.extra["job_list_path"]:
            atomic_write_bytes(submission.extra["job_list_path"],
                               json.dumps([r.job_path for r in submission.requests]).encode())
        atomic_write_bytes(submission.script_path, submission.script.encode())
        argv = submission.commands[0]
        proc = run_command(argv, timeout=QSUB_TIMEOUT_S)
        if proc.returncode != 0:
            detail = (proc.stderr.strip() or proc.stdout.strip())[-500:]
            raise PbsError(f"qsub failed (exit {proc.returncode}): {detail}; command: {shlex.join(argv)}")
        job_id = self.frontend.submitted_id(proc.stdout)
        array = submission.extra["array_size"] > 1
        now = time.monotonic()
        fields = {"pbs_frontend": self.frontend.name, "pbs_dialect": self.options.dialect}
        handles = []
        for i, req in enumerate(submission.requests):
            task = self.frontend.task_id(job_id, i if array else None)
            handles.append(JobHandle(request=req, backend_job_id=task, started=now,
                                     data={"job_id": job_id, "journal_fields": fields}))
        log.info("submitted %s (%d run(s)) with %s", job_id, len(handles), submission.script_path)
        self.poller.reset()
        return handles

    def poll(self, handles: Sequence[JobHandle]) -> dict[str, JobState]:
        return self.poller.states(handles)

    def cancel(self, handles: Sequence[JobHandle]) -> None:
        self.frontend.cancel([h.backend_job_id for h in handles])

    # -- what the CLI and claim takeover ask of runs this backend started ----------------------
    @classmethod
    def from_options(cls, raw: Mapping[str, Any], *, session: Any) -> PbsBackend:
        return cls(cls.check_options(raw), sweep_dir=session.sweep_dir)

    @staticmethod
    def _frontend_for(records: Sequence[Any]) -> PbsFrontend:
        extra = next((r.extra for r in records if "pbs_dialect" in (getattr(r, "extra", None) or {})), {})
        return make_frontend(extra.get("pbs_frontend", "auto"), extra.get("pbs_dialect", "pbspro"))

    @classmethod
    def cancel_records(cls, records: Sequence[Any]) -> list[str]:
        """`mfcl-sweeps cancel`: qdel the runs' PBS jobs; returns the config hashes asked to stop."""
        mine = [r for r in records if r.backend_job_id]
        if mine:
            cls._frontend_for(mine).cancel([r.backend_job_id for r in mine])
        return [r.config_hash for r in mine]

    @classmethod
    def refresh_records(cls, records: Sequence[Any]) -> dict[str, dict]:
        """`mfcl-sweeps status`: what the scheduler says of runs the journal still calls active. A
        job the scheduler has finished but that never journaled an end died from outside (deleted,
        walltime, node failure): shown failed with the scheduler's reason."""
        from mfcl_sweeps import model

        mine = [r for r in records if r.backend_job_id]
        if not mine:
            return {}
        states = cls._frontend_for(mine).poll([r.backend_job_id for r in mine])
        out: dict[str, dict] = {}
        for rec in mine:
            s = states.get(rec.backend_job_id)
            if s is None:
                continue
            if s.done:
                out[rec.config_hash] = {"status": model.FAILED, "exit_code": s.exit_code,
                                        "error": s.error or f"PBS job {rec.backend_job_id} ended ({s.status}) "
                                                            "without recording an outcome"}
            elif s.running and rec.status == model.PENDING:
                out[rec.config_hash] = {"status": model.RUNNING}
        return out
