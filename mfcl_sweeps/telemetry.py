"""What a training script calls to leave artifacts the aggregator can read.

    tel = Telemetry.from_config(cfg, streams=("timings", "comms", "eval"))
    for batch in data:
        ...
        tel.log_step(samples=len(batch))          # timings.csv; advances the budget
        if tel.should_stop(): break               # runtime.budget reached
    tel.log_eval({"accuracy": acc})               # eval.csv
    tel.close()                                   # budget.json, W&B flush

Each stream is a CSV in the run dir, appended one row per `os.write` on an O_APPEND descriptor:
no user-space buffer, so a killed process leaves only complete lines. `telemetry.json` lists
the artifacts this run declared; a completed run missing one of them fails aggregation.
Only rank 0 (env `RANK`) writes; other ranks count budget usage so every rank stops together.
"""
from __future__ import annotations

import json
import os
import time
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence

from mfcl_sweeps.budget import BudgetTracker, write_json_atomic
from mfcl_sweeps.errors import MfclError
from mfcl_sweeps.fsio import atomic_write
from mfcl_sweeps.model import ENV_RUN_DIR, ENV_RUN_ID, ENV_SWEEP_ID

# stream -> (file, columns). `step` comes first in every stream: resume truncates on it.
STREAMS = {
    "timings": ("timings.csv", ("step", "time_s", "step_time_ms", "samples", "tokens", "ips",
                                "bytes_per_step")),
    "comms": ("comms.csv", ("step", "time_s", "op", "bytes", "time_ms", "world_size")),
    "eval": ("eval.csv", ("step", "time_s", "metric", "value")),
    "energy": ("energy.csv", ("step", "time_s", "energy_j")),
    "fidelity": ("fidelity.csv", ("step", "time_s", "name", "value")),
}
DEFAULT_STREAMS = ("timings", "comms")
TELEMETRY_FILE = "telemetry.json"
BUDGET_FILE = "budget.json"


class TelemetryError(MfclError):
    """Telemetry was asked for something it cannot record."""


def resolve_run_dir(run_dir: Optional[str] = None) -> str:
    """Explicit dir, else `MFCL_SWEEP_RUN_DIR`, else the Hydra job's output dir."""
    if run_dir:
        return os.path.abspath(run_dir)
    if os.environ.get(ENV_RUN_DIR):
        return os.path.abspath(os.environ[ENV_RUN_DIR])
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        return str(HydraConfig.get().runtime.output_dir)
    raise TelemetryError(f"no run dir: pass run_dir=..., set {ENV_RUN_DIR} or run inside a Hydra job")


def _select(cfg: Any, dotted: str) -> Any:
    node = cfg
    for part in dotted.split("."):
        if node is None:
            return None
        try:
            node = node.get(part)
        except Exception:  # an OmegaConf struct node without the key
            return None
    return node


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)
    text = str(value)
    if any(c in text for c in ',"\n\r'):
        raise TelemetryError(f"telemetry value {text!r} contains a comma, quote or newline")
    return text


class Telemetry:
    """One run's artifacts. `time_s` in every row is the budget's wall clock (continues on resume)."""

    def __init__(self, run_dir: Optional[str] = None, *, budget: Optional[BudgetTracker] = None,
                 streams: Iterable[str] = DEFAULT_STREAMS, wandb: Any = None,
                 rank: Optional[int] = None, world_size: Optional[int] = None) -> None:
        self.rank = int(os.environ.get("RANK", 0)) if rank is None else rank
        self.world_size = int(os.environ.get("WORLD_SIZE", 1)) if world_size is None else world_size
        self.writes = self.rank == 0
        self.run_dir = resolve_run_dir(run_dir)
        self.budget = budget if budget is not None else BudgetTracker()
        self.wandb = wandb if self.writes else None
        self.step = 0
        self._last_step_time = self.budget.elapsed_s
        self._fds: dict[str, int] = {}
        self._declared: list[str] = []
        self._started = False
        if self.writes:
            os.makedirs(self.run_dir, exist_ok=True)
        earlier = self._read_manifest().get("streams", {}) if self.writes else {}  # an earlier attempt's
        for name in [*earlier, *streams]:
            self.declare(name)
        self._started = True
        if not self.writes:
            return
        self._write_manifest()
        self.budget.write(self.path(BUDGET_FILE))

    @classmethod
    def from_config(cls, cfg: Any, *, run_dir: Optional[str] = None,
                    streams: Iterable[str] = DEFAULT_STREAMS,
                    clock: Callable[[], float] = time.monotonic, **kwargs: Any) -> "Telemetry":
        """Budget from `cfg.runtime.budget`, W&B from `cfg.telemetry.wandb` (see docs)."""
        budget = BudgetTracker.from_config(_select(cfg, "runtime.budget"), clock=clock)
        wandb_cfg = _select(cfg, "telemetry.wandb")
        sink = None
        if wandb_cfg is not None and wandb_cfg.get("enabled", False) and int(os.environ.get("RANK", 0)) == 0:
            from mfcl_sweeps.wandb_sink import WandbSink

            sink = WandbSink.for_run(resolve_run_dir(run_dir), project=wandb_cfg.get("project"),
                                     entity=wandb_cfg.get("entity"), mode=wandb_cfg.get("mode"),
                                     buffer=bool(wandb_cfg.get("buffer", False)))
        return cls(run_dir, budget=budget, streams=streams, wandb=sink, **kwargs)

    def path(self, name: str) -> str:
        return os.path.join(self.run_dir, name)

    # -- declaration ---------------------------------------------------------------------------

    def declare(self, stream: str) -> None:
        """Promise this stream's file: it is created now (header only) and required from now on."""
        if stream not in STREAMS:
            raise TelemetryError(f"unknown telemetry stream '{stream}' (known: {', '.join(STREAMS)})")
        if stream in self._declared:
            return
        self._declared.append(stream)
        if not self.writes:
            return
        file, columns = STREAMS[stream]
        header = ",".join(columns) + "\n"
        try:
            with open(self.path(file)) as fh:
                found = fh.readline()
            if found != header:
                raise TelemetryError(f"{self.path(file)} has header {found.strip()!r}, expected {header.strip()!r}")
        except FileNotFoundError:
            with open(self.path(file), "w") as fh:
                fh.write(header)
        if self._started:
            self._write_manifest()

    def artifacts(self) -> list[str]:
        return [STREAMS[s][0] for s in self._declared] + [BUDGET_FILE]

    def _read_manifest(self) -> dict:
        try:
            with open(self.path(TELEMETRY_FILE)) as fh:
                return json.load(fh)
        except FileNotFoundError:
            return {}

    def _write_manifest(self) -> None:
        write_json_atomic(self.path(TELEMETRY_FILE), {
            "version": 1, "artifacts": self.artifacts(),
            "streams": {s: {"file": STREAMS[s][0], "columns": list(STREAMS[s][1])} for s in self._declared},
            "run_id": os.environ.get(ENV_RUN_ID), "sweep_id": os.environ.get(ENV_SWEEP_ID),
            "world_size": self.world_size,
        })

    # -- appending -----------------------------------------------------------------------------

    def _append(self, stream: str, rows: Sequence[Sequence[Any]]) -> None:
        self.declare(stream)
        if not self.writes:
            return
        fd = self._fds.get(stream)
        if fd is None:
            fd = os.open(self.path(STREAMS[stream][0]), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            self._fds[stream] = fd
        # one write for all rows: complete lines or nothing, whatever kills the process
        os.write(fd, "".join(",".join(_cell(v) for v in row) + "\n" for row in rows).encode())

    def _step_of(self, step: Optional[int]) -> int:
        return self.step if step is None else int(step)

    def log_step(self, samples: int, *, step: Optional[int] = None, step_time_s: Optional[float] = None,
                 tokens: int = 0, bytes_per_step: Optional[int] = None) -> None:
        """One optimizer step: timings.csv row, budget advanced. `step_time_s` defaults to the time
        since the previous `log_step` (or since start/resume)."""
        now = self.budget.elapsed_s
        seconds = (now - self._last_step_time) if step_time_s is None else float(step_time_s)
        self._last_step_time = now
        self.step = self.step + 1 if step is None else int(step)
        self.budget.advance(steps=1, samples=int(samples), tokens=int(tokens))
        ips = samples / seconds if seconds > 0 else None
        self._append("timings", [(self.step, now, seconds * 1000.0, int(samples), int(tokens), ips,
                                  bytes_per_step)])
        self._to_wandb({"ips": ips, "step_time_ms": seconds * 1000.0, "samples": samples,
                        "bytes_per_step": bytes_per_step}, self.step)

    def log_comms(self, op: str, nbytes: int, time_ms: float, *, step: Optional[int] = None) -> None:
        step = self._step_of(step)
        self._append("comms", [(step, self.budget.elapsed_s, op, int(nbytes), float(time_ms), self.world_size)])
        self._to_wandb({f"comms/{op}_bytes": nbytes, f"comms/{op}_ms": time_ms}, step)

    def log_eval(self, metrics: Mapping[str, float], *, step: Optional[int] = None) -> None:
        step = self._step_of(step)
        now = self.budget.elapsed_s
        self._append("eval", [(step, now, k, float(v)) for k, v in metrics.items()])
        self._to_wandb({f"eval/{k}": v for k, v in metrics.items()}, step)

    def log_energy(self, joules: float, *, step: Optional[int] = None) -> None:
        """Energy used since the previous call; the report sums it (energy_Wh)."""
        step = self._step_of(step)
        self._append("energy", [(step, self.budget.elapsed_s, float(joules))])
        self._to_wandb({"energy_j": joules}, step)

    def log_fidelity(self, values: Mapping[str, float], *, step: Optional[int] = None) -> None:
        """Fidelity diagnostics (e.g. cosine of compressed vs exact gradients); the report averages them."""
        step = self._step_of(step)
        self._append("fidelity", [(step, self.budget.elapsed_s, k, float(v)) for k, v in values.items()])
        self._to_wandb({f"fidelity/{k}": v for k, v in values.items()}, step)

    def _to_wandb(self, data: Mapping[str, Any], step: int) -> None:
        if self.wandb is not None:
            self.wandb.log({k: v for k, v in data.items() if v is not None}, step=step)

    # -- budget, checkpoints, resume -----------------------------------------------------------

    def should_stop(self) -> bool:
        return self.budget.should_stop()

    def state_dict(self) -> dict:
        """Put this in your checkpoint; `load_state_dict` it when resuming."""
        return {"step": self.step, "budget": self.budget.state_dict()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Resume: budget usage continues, rows logged after the checkpoint are dropped (they
        will be logged again), so each step appears once."""
        self.step = int(state["step"])
        self.budget.load_state_dict(state["budget"])
        self._last_step_time = self.budget.elapsed_s
        if self.writes:
            self._close_fds()
            for stream in self._declared:
                _truncate_after(self.path(STREAMS[stream][0]), self.step)
            self.budget.write(self.path(BUDGET_FILE))

    def checkpoint(self) -> None:
        """Call after saving your checkpoint: syncs the CSVs, writes budget.json, flushes W&B."""
        if not self.writes:
            return
        for fd in self._fds.values():
            os.fsync(fd)
        self.budget.write(self.path(BUDGET_FILE))
        if self.wandb is not None:
            self.wandb.flush()

    def close(self) -> None:
        self.checkpoint()
        self._close_fds()
        if self.wandb is not None:
            self.wandb.finish()
            self.wandb = None

    def _close_fds(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()

    def __enter__(self) -> "Telemetry":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _truncate_after(path: str, step: int) -> None:
    with open(path) as fh:
        lines = fh.readlines()
    kept = [lines[0]] + [ln for ln in lines[1:] if ln.endswith("\n") and int(ln.split(",", 1)[0]) <= step]
    if len(kept) == len(lines):
        return
    atomic_write(path, "".join(kept), fsync=False)
