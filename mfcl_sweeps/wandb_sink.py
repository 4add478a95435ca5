"""Optional W&B logging for telemetry: group = sweep id, name = run id, config = the run's overrides.

Secret values (the one policy of mfcl_sweeps.secrets, `hydra.sweeper.secret_keys` included) are
replaced by `***` before anything reaches W&B: in the config, and in the command line W&B records
as the run's metadata (`args`).

`wandb` is imported only when a sink is used. With `buffer=True` nothing reaches W&B (not even
`wandb.init`, which creates the local run dir) until `flush()`, which telemetry calls at each
checkpoint: a preempted job's steps after its last checkpoint are never logged, so the resumed
job does not log them twice (the sweep runner's `--wandb-buffer`).
"""
from __future__ import annotations

import hashlib
import os
import sys
from typing import Any, Mapping, Optional

from mfcl_sweeps.model import ENV_RUN_ID, ENV_SWEEP_ID
from mfcl_sweeps.secrets import redact, redact_argv, redact_text


def overrides_dict(overrides: Any) -> dict:
    """`["a.b=1", "+c=x"]` -> `{"a.b": "1", "c": "x"}` (values stay strings, as typed)."""
    out = {}
    for item in overrides or ():
        key, _, value = str(item).partition("=")
        out[key.lstrip("+~")] = value
    return out


def _hydra_task_overrides() -> list:
    from hydra.core.hydra_config import HydraConfig

    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []


class WandbSink:
    def __init__(self, *, dir: str, project: Optional[str] = None, entity: Optional[str] = None,
                 group: Optional[str] = None, name: Optional[str] = None, run_id: Optional[str] = None,
                 config: Optional[Mapping[str, Any]] = None, mode: Optional[str] = None,
                 buffer: bool = False) -> None:
        self.init_kwargs = dict(dir=dir, project=project, entity=entity, group=group,
                                name=redact_text(name) if name else name, id=run_id,
                                config=redact(dict(config or {})), mode=mode,
                                resume="allow" if run_id else None)
        self.buffer = buffer
        self.pending: list[tuple[dict, int]] = []
        self.run = None
        if not buffer:
            self._init()

    @classmethod
    def for_run(cls, run_dir: str, *, project: Optional[str] = None, entity: Optional[str] = None,
                mode: Optional[str] = None, buffer: bool = False) -> "WandbSink":
        """Identity from the job's `MFCL_SWEEP_*` env and Hydra's task overrides."""
        sweep_id, run_name = os.environ.get(ENV_SWEEP_ID), os.environ.get(ENV_RUN_ID)
        # a stable id lets a restarted job continue the same W&B run
        run_id = (hashlib.sha1(f"{sweep_id}/{run_name}".encode()).hexdigest()[:16]
                  if sweep_id and run_name else None)
        return cls(dir=run_dir, project=project, entity=entity, group=sweep_id, name=run_name,
                   run_id=run_id, config=overrides_dict(_hydra_task_overrides()), mode=mode,
                   buffer=buffer)

    def _init(self) -> None:
        import wandb

        # W&B records the run's metadata `args` from sys.argv as wandb.init finds it (no setting
        # names them), so the command line it sees is the redacted one
        argv, sys.argv = sys.argv, redact_argv(sys.argv)
        try:
            self.run = wandb.init(reinit="create_new",
                                  **{k: v for k, v in self.init_kwargs.items() if v is not None})
        finally:
            sys.argv = argv

    def log(self, data: Mapping[str, Any], *, step: int) -> None:
        if self.buffer:
            self.pending.append((dict(data), step))
        else:
            self.run.log(dict(data), step=step)

    def flush(self) -> None:
        if not self.pending:
            return
        if self.run is None:
            self._init()
        for data, step in self.pending:
            self.run.log(data, step=step)
        self.pending.clear()

    def finish(self) -> None:
        """Flushes what is buffered (a clean end is a checkpoint) and closes the W&B run."""
        self.flush()
        if self.run is not None:
            self.run.finish()
            self.run = None
