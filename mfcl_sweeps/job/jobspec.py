"""What a job needs to run anywhere: a pickled session (shared by all jobs of a launch) and a
small per-job JSON. Pure data plus atomic file helpers; running lives in `worker.py`."""
from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from typing import Any, Iterable, Optional, Sequence

from mfcl_sweeps import model
from mfcl_sweeps.fsio import atomic_write
from mfcl_sweeps.layout import SweepLayout
from mfcl_sweeps.model import Budget, PlannedRun, RunResources


@dataclass
class Session:
    """Everything submitit's launcher ships to a node, once per launch."""

    task_function: Any
    hydra_context: Any
    singleton_state: Any
    master_config: Any
    sweep_dir: str


def write_session(session: Session, path: str | os.PathLike) -> str:
    import cloudpickle

    atomic_write(path, cloudpickle.dumps(session))
    return str(path)


def load_session(path: str | os.PathLike) -> Session:
    import cloudpickle

    with open(path, "rb") as f:
        return cloudpickle.load(f)


def run_to_dict(run: PlannedRun) -> dict:
    return dataclasses.asdict(run)


def run_from_dict(d: dict) -> PlannedRun:
    d = dict(d)
    d["overrides"] = tuple(d["overrides"])
    d["resources"] = RunResources(**d.get("resources") or {})
    d["budget"] = Budget(**d["budget"]) if d.get("budget") else None
    return PlannedRun(**d)




def identity_env(run: PlannedRun, sweep_id: str, sweep_dir: str) -> dict[str, str]:
    env = {
        model.ENV_SWEEP_ID: sweep_id,
        model.ENV_SWEEP_DIR: sweep_dir,
        model.ENV_RUN_ID: run.run_id,
        model.ENV_INDEX: str(run.index),
        model.ENV_GROUP: run.group,
        model.ENV_CONFIG_HASH: run.config_hash,
    }
    env.update(run.env)
    return env


def identity_overrides(run: PlannedRun, sweep_id: str, sweep_dir: str) -> list[str]:
    """Hydra overrides (not task overrides) that carry a run's identity into a job that Hydra's
    own launchers start. They land in `hydra.job.env_set`, so the job's `overrides` stay exactly
    the user's. Written `hydra.job.env_set.K=v`, without `++`, because Hydra's launchers print a
    job's overrides minus those starting with `hydra.`: the identity is not shown in their
    `#i : ...` lines. Such an override needs the key to exist: `declare_env_keys` does that.
    (mfcl launchers set `JobSpec.env_set` directly: no override parsing per job.)
    """
    from mfcl_sweeps.spec.overrides import quote_override_value  # imports all of spec: not in every job

    return [f"hydra.job.env_set.{k}={quote_override_value(v)}"
            for k, v in identity_env(run, sweep_id, sweep_dir).items()]


def declare_env_keys(config: Any, keys: Iterable[str]) -> None:
    """Add `++hydra.job.env_set.K=''` for each new key to the sweep's own hydra overrides, which
    Hydra's `load_sweep_config` replays before each job's overrides (so `identity_overrides`
    then only assign existing keys)."""
    from omegaconf import OmegaConf, open_dict, read_write

    overrides = config.hydra.overrides.hydra
    have = set(OmegaConf.to_container(overrides, resolve=False))  # items may hold ${hydra.job.num}
    with read_write(config.hydra), open_dict(config.hydra):
        overrides.extend([o for o in (f"++hydra.job.env_set.{k}=''" for k in sorted(keys)) if o not in have])


@dataclass
class JobSpec:
    """One job for `python -m mfcl_sweeps.worker SESSION JOB`."""

    overrides: list[str]  # task overrides + identity overrides, for load_sweep_config
    index: int  # hydra.job.id / hydra.job.num
    run: dict  # PlannedRun as a dict
    result_path: str
    sweep_dir: str
    session_path: str
    attempt: int = 1
    journal: bool = True  # False where the sweep's journal is not reachable (SSH): the driver journals
    backend: str = ""  # the backend that started it, journaled so `mfcl-sweeps cancel` can reach it
    env_set: dict = field(default_factory=dict)  # the run's identity, merged into hydra.job.env_set

    @property
    def planned_run(self) -> PlannedRun:
        return run_from_dict(self.run)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> "JobSpec":
        return cls(**json.loads(text))

    def write(self, path: str | os.PathLike) -> str:
        atomic_write(path, self.to_json().encode(), fsync=False)  # creates the parent dir
        return str(path)


def worker_argv(python: str, session_path: str, job_path: str) -> list[str]:
    """The command every backend runs for one job."""
    return [python, "-m", "mfcl_sweeps.worker", session_path, job_path]


def array_worker_argv(python: str, session_path: str, job_list_path: str, index_env: Sequence[str]) -> list[str]:
    """The command an array task runs: it picks its job from a JSON list of job files by the
    first of `index_env` that is set (PBS_ARRAY_INDEX, PBS_ARRAYID, SLURM_ARRAY_TASK_ID...)."""
    return [python, "-m", "mfcl_sweeps.worker", session_path, "--array", job_list_path,
            "--index-env", ",".join(index_env)]




def result_path_for(sweep_dir: str, run_id: str, attempt: int) -> str:
    # One file per attempt: a stale result of an earlier attempt is never read as this one's.
    return SweepLayout(sweep_dir).result_file(run_id, attempt)


def job_path_for(sweep_dir: str, run_id: str, attempt: int) -> str:
    return SweepLayout(sweep_dir).job_file(run_id, attempt)


def log_path_for(sweep_dir: str, run_id: str) -> str:
    """A run's stdout+stderr, every attempt appended: `tail -f` it to follow a job."""
    return SweepLayout(sweep_dir).run_log(run_id)


STDERR_TAIL_LINES = 40  # of a failed run's log, kept in its manifest record (`stderr_tail`)


def log_tail(path: str, lines: int = 20) -> str:
    """The last `lines` lines of a log (at most its last 8 KB); "" when it cannot be read."""
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            f.seek(max(0, f.tell() - 8192))
            text = f.read().decode(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def read_result_bytes(path: str) -> Optional[bytes]:
    """The pickled JobReturn a worker wrote, or None if it wrote none."""
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        return None


def read_result(path: str) -> Optional[Any]:
    """The JobReturn a worker wrote, or None if it wrote none."""
    import cloudpickle

    data = read_result_bytes(path)
    return None if data is None else cloudpickle.loads(data)
