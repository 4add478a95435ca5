"""The one job runner every backend shares: `python -m mfcl_sweeps.worker SESSION JOB_JSON`.

It composes the job's config inside the job (a value that fails composition fails this run
alone), runs Hydra's `run_job`, writes the JobReturn atomically, journals the outcome and exits
non-zero when the task failed, so schedulers record the truth (Hydra issue 1928).
"""
from __future__ import annotations

import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from mfcl_sweeps import liveness, model
from mfcl_sweeps.fsio import atomic_write
from mfcl_sweeps.job.failures import failed_return, format_traceback, keep_traceback
from mfcl_sweeps.job.jobspec import JobSpec, Session, load_session

EXIT_TASK_FAILED = 1


def last_error_line(exc: BaseException) -> str:
    lines = [ln for ln in traceback.format_exception_only(type(exc), exc) if ln.strip()]
    return lines[-1].strip()[:500] if lines else repr(exc)[:500]


def job_dir_of_return(ret: Any) -> Any:
    """The job's output dir (`working_dir` is the cwd, which is not it unless hydra.job.chdir)."""
    try:
        return ret.hydra_cfg.hydra.runtime.output_dir
    except AttributeError:
        return None


def outcome(ret: Any) -> tuple[str, dict]:
    """A finished JobReturn as one journal transition: (status, fields)."""
    from hydra.core.utils import JobStatus

    job_dir = job_dir_of_return(ret)
    fields = {"job_dir": job_dir} if job_dir else {}
    if ret.status == JobStatus.COMPLETED:
        return model.COMPLETED, {"exit_code": 0, "return_value": repr(ret._return_value)[:1000], **fields}
    exc = ret._return_value
    return model.FAILED, {"exit_code": EXIT_TASK_FAILED, "error": last_error_line(exc),
                          "traceback": getattr(ret, "mfcl_traceback", None) or format_traceback(exc), **fields}


def report_failure(job: JobSpec, ret: Any) -> dict:
    """Print a failed run's traceback to stderr (the run's log); return its journal fields with
    the log's last lines when stderr is a file this process can read back."""
    import stat

    from mfcl_sweeps.job.jobspec import STDERR_TAIL_LINES, log_tail

    exc = ret._return_value
    if isinstance(exc, BaseException):
        sys.stderr.write(getattr(ret, "mfcl_traceback", None) or format_traceback(exc))
    print(f"mfcl-sweeps: run {job.planned_run.run_id} failed: {last_error_line(exc)}", file=sys.stderr, flush=True)
    try:
        if stat.S_ISREG(os.fstat(2).st_mode):
            return {"stderr_tail": log_tail("/proc/self/fd/2", STDERR_TAIL_LINES) or None}
    except OSError:
        pass
    return {}


def _journal(job: JobSpec, status: str, **fields: Any) -> None:
    from mfcl_sweeps.state.manifest import SweepManifest

    SweepManifest(job.sweep_dir).transition(job.planned_run, status, **fields)


def redirect_output(path: str) -> None:
    """Append this process's stdout/stderr (and its children's) to `path`, the run's log: a
    scheduler's task runs the worker in its own process, with the array's shared output."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)


def write_result(path: str, ret: Any) -> None:
    """Pickle a JobReturn atomically to `path`: a hand-off the driver reads once and removes, so
    it carries the config as the task saw it (Hydra's launchers return that, secrets included)."""
    import cloudpickle

    try:
        payload = cloudpickle.dumps(ret)
    except Exception as exc:  # an unpicklable return value must not lose the outcome
        ret._return_value = f"<unpicklable return value: {last_error_line(exc)}>"
        payload = cloudpickle.dumps(ret)
    atomic_write(path, payload, fsync=False)  # the journal, not this hand-off, is the durable record


def compose(session: Session, job: JobSpec, prepared: Any = None) -> Any:
    """The job's config: composed by Hydra's loader, or finished from a template forked with the
    job (mfcl_sweeps.job.config_templates), then given the job's number and identity."""
    from omegaconf import open_dict

    if prepared is not None:
        cfg = prepared.compose()
    else:
        cfg = session.hydra_context.config_loader.load_sweep_config(session.master_config, list(job.overrides))
    with open_dict(cfg):
        cfg.hydra.job.id = job.index
        cfg.hydra.job.num = job.index
        for key, value in job.env_set.items():
            cfg.hydra.job.env_set[key] = value
    return cfg


def job_dir_of(cfg: Any) -> str:
    """The job dir run_job will use. Most sweep dirs resolve from the config alone; only one that
    interpolates `${hydra:...}` needs HydraConfig set, which costs a copy of the whole config."""
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf

    def select() -> str:
        return str(Path(OmegaConf.select(cfg, "hydra.sweep.dir")) / str(OmegaConf.select(cfg, "hydra.sweep.subdir")))

    try:
        return select()
    except Exception:
        HydraConfig.instance().set_config(cfg)
        return select()


def save_configs_redacted() -> None:
    """Hydra writes each job's config, hydra config and overrides under `.hydra/`: with secrets
    hidden there too (mfcl_sweeps.secrets), as everywhere the sweep writes. The task itself
    still gets the real values."""
    import yaml
    from hydra.core import utils
    from omegaconf import OmegaConf
    from omegaconf._utils import get_omega_conf_dumper

    from mfcl_sweeps.secrets import redact

    if getattr(utils._save_config, "redacts", False):
        return

    def save_redacted(cfg: Any, filename: str, output_dir: Path) -> None:
        # Hydra's _save_config writes OmegaConf.to_yaml(cfg), which is this dump of the container;
        # dumped straight from the redacted container, not from a config rebuilt from it (that
        # rebuild was a third of a no-op run's time)
        container = redact(OmegaConf.to_container(cfg, resolve=False, enum_to_str=True))
        output_dir.mkdir(parents=True, exist_ok=True)
        text = yaml.dump(container, default_flow_style=False, allow_unicode=True, sort_keys=False,
                         Dumper=get_omega_conf_dumper())
        with open(output_dir / filename, "w", encoding="utf-8") as file:
            file.write(text)

    save_redacted.redacts = True  # type: ignore[attr-defined]
    utils._save_config = save_redacted


def run(session: Session, job: JobSpec, *, journal: bool = True, prepared: Any = None) -> Any:
    """Run one job in this process and return its JobReturn (also written to job.result_path).
    `prepared` (a templates.PreparedConfig) is only for a process forked to run this one job."""
    import faulthandler

    from hydra.core.utils import run_job, setup_globals

    faulthandler.enable()  # a segfault or abort leaves the Python stack in the run's log
    setup_globals()
    save_configs_redacted()
    os.environ[model.ENV_ATTEMPT] = str(job.attempt)
    started = time.time()
    # pid + its start time name this process: `status` shows the run lost once it is gone
    base = {**liveness.me(), "pgid": os.getpgid(0), "attempt": job.attempt,
            **({"backend": job.backend} if job.backend else {})}
    journal = journal and job.journal
    try:
        cfg = compose(session, job, prepared)
        job_dir = job_dir_of(cfg)
    except Exception as exc:  # composition failed: this run fails, the sweep goes on
        ret, job_dir = failed_return(job.planned_run.overrides, exc), None
        if journal:
            _journal(job, model.RUNNING, start_time=started, **base)
    else:
        os.environ[model.ENV_RUN_DIR] = job_dir
        if journal:
            _journal(job, model.RUNNING, start_time=started, job_dir=job_dir, **base)
        ret = run_job(
            hydra_context=session.hydra_context,
            task_function=session.task_function,
            config=cfg,
            job_dir_key="hydra.sweep.dir",
            job_subdir_key="hydra.sweep.subdir",
        )
    keep_traceback(ret)  # the driver chains it back onto the unpickled exception
    write_result(job.result_path, ret)
    status, fields = outcome(ret)
    if status == model.FAILED:
        fields.update(report_failure(job, ret))
    if journal:
        _journal(job, status, end_time=time.time(), **{**fields, **({"job_dir": job_dir} if job_dir else {})})
    return ret


def array_job_path(job_list_path: str, index_env: list[str], environ: dict) -> str:
    """The job file of this array task: entry N of the list, N from the first index variable set."""
    import json

    jobs = json.loads(Path(job_list_path).read_text())
    for name in index_env:
        if environ.get(name, "") != "":
            return jobs[int(environ[name])]
    raise SystemExit(f"mfcl-sweeps worker: none of {', '.join(index_env)} is set; cannot tell which array task this is")


def parse_args(argv: list[str]) -> tuple[str, str]:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m mfcl_sweeps.worker",
                                     description="Run one Hydra job of an mfcl sweep.")
    parser.add_argument("session", help="the launch's session.pkl")
    parser.add_argument("job", nargs="?", help="the job's JSON file")
    parser.add_argument("--array", metavar="JOBS.json", help="JSON list of job files; pick by array index")
    parser.add_argument("--index-env", default="PBS_ARRAY_INDEX,PBS_ARRAYID,SLURM_ARRAY_TASK_ID",
                        help="comma-separated variables holding the array index, first set wins")
    args = parser.parse_args(argv)
    if (args.job is None) == (args.array is None):
        parser.error("give exactly one of JOB or --array JOBS.json")
    job_path = args.job or array_job_path(args.array, args.index_env.split(","), dict(os.environ))
    return args.session, job_path


def main(argv: list[str]) -> int:
    from hydra.core.singleton import Singleton
    from hydra.core.utils import JobStatus

    session_path, job_path = parse_args(argv)
    session = load_session(session_path)
    job = JobSpec.from_json(Path(job_path).read_text())
    Singleton.set_state(session.singleton_state)
    ret = run(session, job)
    return 0 if ret.status == JobStatus.COMPLETED else EXIT_TASK_FAILED


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
