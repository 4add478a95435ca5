"""One rank of a torchrun job: `torchrun ... -m mfcl_sweeps.ddp_worker SESSION JOB [--node-result PATH]`.

Global rank 0 is the run: it goes through `worker.run` (Hydra's run_job: job dir, `.hydra/`,
logging, callbacks, result file, journal). Every other rank composes the same config and calls
the task directly, with `HydraConfig` set and the job's `env_set` exported, and writes nothing to
the sweep's journal. A rank that fails writes its error (rank, message) to torchrun's error file,
which torchrun copies to the agent's and the backend turns into the run's error.
"""
from __future__ import annotations

import copy
import json
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Optional

from mfcl_sweeps import model
from mfcl_sweeps.fsio import atomic_write
from mfcl_sweeps.job import worker
from mfcl_sweeps.job.jobspec import JobSpec, Session, load_session


def rank_env(environ: dict) -> tuple[int, int]:
    """(global rank, node-local rank) as torchrun set them."""
    return int(environ.get("RANK", "0")), int(environ.get("LOCAL_RANK", "0"))


def run_rank(session: Session, job: JobSpec, rank: int) -> Any:
    """A non-zero rank: the task on the job's config, outside run_job; returns a JobReturn."""
    import logging

    from hydra.core.hydra_config import HydraConfig
    from hydra.core.utils import JobReturn, JobStatus, setup_globals
    from omegaconf import OmegaConf, open_dict, read_write

    setup_globals()
    os.environ[model.ENV_ATTEMPT] = str(job.attempt)
    ret = JobReturn(overrides=list(job.planned_run.overrides), status=JobStatus.FAILED)
    try:
        cfg = worker.compose(session, job)
        job_dir = os.path.abspath(worker.job_dir_of(cfg))
        with read_write(cfg.hydra.runtime), open_dict(cfg.hydra.runtime):
            cfg.hydra.runtime.output_dir = job_dir
        HydraConfig.instance().set_config(cfg)
        task_cfg = copy.deepcopy(cfg)
        with read_write(task_cfg), open_dict(task_cfg):
            del task_cfg["hydra"]
        ret.cfg, ret.hydra_cfg = task_cfg, copy.deepcopy(HydraConfig.instance().cfg)
        # rank 0 gets these from run_job; every rank must see the same environment
        os.environ.update({str(k): str(v) for k, v in (OmegaConf.select(cfg, "hydra.job.env_set") or {}).items()})
        os.environ[model.ENV_RUN_DIR] = job_dir
        if cfg.hydra.job.chdir:
            Path(job_dir).mkdir(parents=True, exist_ok=True)
            os.chdir(job_dir)
        ret.working_dir = os.getcwd()
        # Hydra's job logging would have every rank write the job's one log file
        logging.basicConfig(level=logging.INFO, format=f"[rank {rank}][%(name)s][%(levelname)s] - %(message)s")
        ret.return_value = session.task_function(task_cfg)
        ret.status = JobStatus.COMPLETED
    except Exception as exc:
        ret._return_value = exc
        traceback.print_exc()
    return ret


def record_error(rank: int, exc: BaseException, environ: dict) -> None:
    """Torchrun's per-rank error file (TORCHELASTIC_ERROR_FILE), with the rank for the backend."""
    path = environ.get("TORCHELASTIC_ERROR_FILE")
    if not path:
        return
    data = {"message": {"message": worker.last_error_line(exc),
                        "extraInfo": {"py_callstack": "".join(traceback.format_exception(exc)),
                                      "timestamp": str(int(time.time())), "mfcl_rank": rank}}}
    atomic_write(path, json.dumps(data).encode())


def parse_args(argv: list[str]) -> tuple[str, str, Optional[str]]:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m mfcl_sweeps.ddp_worker",
                                     description="One rank of a torchrun job of an mfcl sweep.")
    parser.add_argument("session")
    parser.add_argument("job")
    parser.add_argument("--node-result", help="also write this node's JobReturn here (one driver per node)")
    args = parser.parse_args(argv)
    return args.session, args.job, args.node_result


def main(argv: list[str]) -> int:
    from hydra.core.singleton import Singleton
    from hydra.core.utils import JobStatus

    from mfcl_sweeps.job.supervise import die_with_parent

    die_with_parent()  # torchrun starts ranks in their own sessions; a killed agent must take them along
    session_path, job_path, node_result = parse_args(argv)
    rank, local_rank = rank_env(dict(os.environ))
    if "GROUP_RANK" in os.environ:  # the node rank the rendezvous actually assigned
        os.environ["NODE_RANK"] = os.environ["GROUP_RANK"]
    try:
        session = load_session(session_path)
        job = JobSpec.from_json(Path(job_path).read_text())
        Singleton.set_state(session.singleton_state)
        ret = worker.run(session, job) if rank == 0 else run_rank(session, job, rank)
    except BaseException as exc:
        record_error(rank, exc, dict(os.environ))
        raise
    if node_result and local_rank == 0:
        worker.write_result(node_result, ret)
    if ret.status != JobStatus.COMPLETED:
        record_error(rank, ret._return_value, dict(os.environ))
        print(f"mfcl-sweeps: rank {rank} of run {job.planned_run.run_id} failed: "
              f"{worker.last_error_line(ret._return_value)}", file=sys.stderr)
        return worker.EXIT_TASK_FAILED
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
