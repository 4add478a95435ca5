"""What every task of an mfcl Slurm array runs (under srun):

    python -m mfcl_sweeps.backends.slurm_task SESSION JOBS.json [--nproc-per-node N] ...

With `--runs-per-task K` the task runs several runs, one after another or (`--runs-per-gpu`)
side by side (backends/pack_task.py).
Otherwise it picks its job file by SLURM_ARRAY_TASK_ID, sends its output to the run's log, and runs the
shared worker: in this process for a one-task run, as one rank per srun task when the
allocation has several tasks, or under torchrun (one agent per node) for torchrun runs.

Restarts: Slurm restarts a requeued task from the top of the batch script with the same job id
and SLURM_RESTART_COUNT=N. The task then runs as attempt `JobSpec.attempt + N` (so the run sees
MFCL_SWEEP_ATTEMPT), removes the result an interrupted attempt may have left (the driver must
read only the final attempt's), and journals `preempted`. The time-limit warning
(`--signal=USR2@signal_delay_s`) and `scancel --signal=USR2` make the task requeue itself:
`scontrol requeue` then SIGTERMs it like any preemption. Tasks checkpoint to MFCL_SWEEP_RUN_DIR.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Mapping, Optional

from mfcl_sweeps import model
from mfcl_sweeps.job import worker
from mfcl_sweeps.job.jobspec import JobSpec, log_path_for, read_result
from mfcl_sweeps.layout import SweepLayout

TIMEOUT_MARGIN_S = 30  # a USR2 this close to the time-limit warning is the time limit's


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m mfcl_sweeps.backends.slurm_task",
                                description="One task of an mfcl Slurm array.")
    p.add_argument("session")
    p.add_argument("jobs", help="JSON list of job files, one per array index")
    p.add_argument("--timeout-min", type=float, required=True)
    p.add_argument("--signal-delay-s", type=int, required=True)
    p.add_argument("--max-num-timeout", type=int, required=True)
    p.add_argument("--nproc-per-node", type=int, help="start the run with torchrun, this many processes per node")
    p.add_argument("--rdzv-port", type=int)
    p.add_argument("--runs-per-task", type=int, default=1, help="runs of the job list this task runs")
    p.add_argument("--runs-per-gpu", type=int, help="run them side by side, this many per GPU of the task")
    return p.parse_args(argv)


def restart_count(environ: Mapping[str, str]) -> int:
    return int(environ.get("SLURM_RESTART_COUNT") or 0)


def slurm_job_id(environ: Mapping[str, str]) -> str:
    if environ.get("SLURM_ARRAY_JOB_ID"):
        return f"{environ['SLURM_ARRAY_JOB_ID']}_{environ['SLURM_ARRAY_TASK_ID']}"
    return environ["SLURM_JOB_ID"]


def first_node(environ: Mapping[str, str]) -> str:
    """The allocation's first host: the batch script exports it (scontrol show hostnames)."""
    if environ.get("MFCL_RDZV_HOST"):
        return environ["MFCL_RDZV_HOST"]
    from submitit.slurm.slurm import _parse_node_list

    return _parse_node_list(environ["SLURM_JOB_NODELIST"])[0]


def rendezvous_port(environ: Mapping[str, str], given: Optional[int]) -> int:
    """Every node derives the same port from the job id; tasks sharing a node get different ones."""
    return given or 20000 + int(environ["SLURM_JOB_ID"]) % 20000


def restarted(job: JobSpec, job_path: str, restarts: int, lead: bool) -> tuple[JobSpec, str]:
    """The job as attempt `attempt + restarts`, written next to the original for the worker."""
    new = dataclasses.replace(job, attempt=job.attempt + restarts)
    path = f"{job_path.removesuffix('.json')}.restart{restarts}.json"
    new.write(path)  # every node writes the same bytes, atomically
    if lead:
        Path(job.result_path).unlink(missing_ok=True)  # an interrupted attempt's result is not the run's
        if job.journal:
            from mfcl_sweeps.state.manifest import SweepManifest

            SweepManifest(job.sweep_dir).transition(
                job.planned_run, model.PREEMPTED, attempt=new.attempt - 1,
                error=f"requeued by Slurm (job {os.environ.get('SLURM_ARRAY_JOB_ID', '')}, restart {restarts})")
    return new, path


class Requeuer:
    """USR2 handler: requeue this task (the time-limit warning, or a preemption notice), at most
    `max_num_timeout` times for the time limit; Slurm then SIGTERMs the task."""

    def __init__(self, args: argparse.Namespace, restarts: int, environ: Mapping[str, str]) -> None:
        self.started = time.time()
        self.args, self.restarts, self.job_id = args, restarts, slurm_job_id(environ)

    def timed_out(self) -> bool:
        warning_at = self.args.timeout_min * 60 - self.args.signal_delay_s - TIMEOUT_MARGIN_S
        return time.time() - self.started >= warning_at

    def __call__(self, signum: int, frame: object) -> None:
        timed_out = self.timed_out()
        if timed_out and self.restarts >= self.args.max_num_timeout:
            print(f"mfcl-sweeps: time-limit signal, not requeued (restarted {self.restarts} time(s), "
                  f"max_num_timeout={self.args.max_num_timeout})", file=sys.stderr, flush=True)
            return
        why = "time limit near" if timed_out else "preemption signal"
        print(f"mfcl-sweeps: {why}: requeueing Slurm job {self.job_id}", file=sys.stderr, flush=True)
        proc = subprocess.run(["scontrol", "requeue", self.job_id], capture_output=True, text=True)
        if proc.returncode:
            print(f"mfcl-sweeps: scontrol requeue {self.job_id} failed: {proc.stderr.strip()}", file=sys.stderr,
                  flush=True)


def rank_env(environ: Mapping[str, str], port: int) -> dict[str, str]:
    """torch.distributed's variables for srun tasks acting as ranks (no torchrun)."""
    return {"RANK": environ["SLURM_PROCID"], "LOCAL_RANK": environ.get("SLURM_LOCALID", "0"),
            "WORLD_SIZE": environ["SLURM_NTASKS"],
            "LOCAL_WORLD_SIZE": environ.get("SLURM_NTASKS_PER_NODE", "1").split("(")[0],
            "MASTER_ADDR": first_node(environ), "MASTER_PORT": str(port)}


def run_torchrun(args: argparse.Namespace, job: JobSpec, job_path: str, environ: Mapping[str, str],
                 lead: bool) -> int:
    """This node's torchrun agent (c10d rendezvous on the first node); the lead node turns a
    failed rank into the run's failure when rank 0 itself completed."""
    from mfcl_sweeps.backends import ddp as torchrun

    run = job.planned_run
    state_dir = SweepLayout(job.sweep_dir).backend_dir("slurm", "torchrun", f"{run.run_id}.{job.attempt}")
    node = int(environ.get("SLURM_NODEID", "0"))
    launch = torchrun.RunLaunch(
        run_id=run.run_id, nnodes=int(environ.get("SLURM_JOB_NUM_NODES") or environ.get("SLURM_NNODES") or 1),
        nproc_per_node=args.nproc_per_node, nodes=(node,), rdzv_backend="c10d",
        rdzv_endpoint=f"{first_node(environ)}:{rendezvous_port(environ, args.rdzv_port)}",
        rdzv_id=f"mfcl-{slurm_job_id(environ)}-{job.attempt}", rdzv_conf="", max_restarts=0, monitor_interval=0.5,
        python=sys.executable, session_path=args.session, job_path=job_path, state_dir=state_dir,
        node_result=None)
    Path(state_dir).mkdir(parents=True, exist_ok=True)
    argv = torchrun.node_command(launch, node)
    print(f"mfcl-sweeps: node {node}: {' '.join(argv)}", file=sys.stderr, flush=True)
    code = subprocess.call(argv)
    if code == 0 or not lead:
        return code
    ret = read_result(job.result_path)
    if ret is None or ret.status.name == "COMPLETED":
        from mfcl_sweeps.job.jobspec import log_tail

        log_text = log_tail(log_path_for(job.sweep_dir, run.run_id), 200)
        found = torchrun.failure_reason(launch.error_file(node), log_text)
        _, why = found or (code, f"torchrun exited with code {code}")
        worker.write_result(job.result_path, worker.failed_return(job.planned_run.overrides, why))
        if job.journal:
            from mfcl_sweeps.state.manifest import SweepManifest

            SweepManifest(job.sweep_dir).transition(run, model.FAILED, exit_code=code, error=why, attempt=job.attempt,
                                                    end_time=time.time())
        print(f"mfcl-sweeps: run {run.run_id} failed: {why}", file=sys.stderr, flush=True)
    return code or worker.EXIT_TASK_FAILED


def run_packed(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    """A packed task: one process (never torchrun or several srun tasks) starting its runs."""
    from mfcl_sweeps.backends import pack_task

    restarts = restart_count(environ)
    print(f"mfcl-sweeps: Slurm job {slurm_job_id(environ)} on {socket.gethostname()}, {args.runs_per_task} "
          f"packed runs, start {restarts + 1}", file=sys.stderr, flush=True)
    signal.signal(signal.SIGUSR2, Requeuer(args, restarts, environ))
    return pack_task.run_task(args.session, args.jobs, int(environ.get("SLURM_ARRAY_TASK_ID") or 0),
                              args.runs_per_task, restarts, args.runs_per_gpu)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    environ = dict(os.environ)
    if args.runs_per_task > 1:
        return run_packed(args, environ)
    job_path = worker.array_job_path(args.jobs, ["SLURM_ARRAY_TASK_ID"], environ)
    job = JobSpec.from_json(Path(job_path).read_text())
    lead = environ.get("SLURM_PROCID", "0") == "0"
    restarts = restart_count(environ)
    worker.redirect_output(log_path_for(job.sweep_dir, job.planned_run.run_id))
    if lead:
        print(f"mfcl-sweeps: Slurm job {slurm_job_id(environ)} on {socket.gethostname()}, "
              f"attempt {job.attempt + restarts}", file=sys.stderr, flush=True)
    if restarts:
        job, job_path = restarted(job, job_path, restarts, lead)
    if args.nproc_per_node:
        signal.signal(signal.SIGUSR2, signal.SIG_IGN)  # inherited by torchrun and its ranks
        if lead:
            signal.signal(signal.SIGUSR2, Requeuer(args, restarts, environ))
        return run_torchrun(args, job, job_path, environ, lead)
    if lead:
        signal.signal(signal.SIGUSR2, Requeuer(args, restarts, environ))
    else:
        signal.signal(signal.SIGUSR2, signal.SIG_IGN)
    if int(environ.get("SLURM_NTASKS") or 1) > 1:  # srun tasks are the ranks
        from mfcl_sweeps.job import ddp_worker

        os.environ.update(rank_env(environ, rendezvous_port(environ, args.rdzv_port)))
        return ddp_worker.main([args.session, job_path])
    return worker.main([args.session, job_path])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
