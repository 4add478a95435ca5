"""What the backends that start processes on this machine share (local, torchrun, and the
`mfcl-sweeps cancel` of their runs): signal names, the per-job time limits, the one
TERM -> grace -> KILL stop, and the pool of GPUs jobs are packed onto. (The parent-death
signal is supervise.die_with_parent.)

Backends never import each other; what two of them need lives here.
"""
from __future__ import annotations

import os
import signal
import subprocess
import time
from typing import Any, Callable, Iterable, Optional, Sequence, TypeVar

T = TypeVar("T")


def signal_name(code: int) -> str:
    """SIGKILL for -9 (a negative exit code is the signal that ended a process)."""
    try:
        return signal.Signals(-code).name
    except ValueError:
        return f"signal {-code}"


def overdue_reason(h: Any, now: float, timeout: Optional[float], idle_timeout: Optional[float]) -> Optional[str]:
    """Why a running job (a JobHandle) must be killed now (timeout, or no output for
    idle_timeout), else None. A run's own `timeout_min` wins over the launcher's timeout."""
    run_timeout = h.request.run.resources.timeout_min
    if run_timeout:
        timeout = run_timeout * 60
    if timeout and now - h.started > timeout:
        return f"timed out after {timeout:g}s (timeout)"
    if idle_timeout:
        try:
            idle = time.time() - os.stat(h.request.log_path).st_mtime
        except OSError:
            idle = now - h.started
        if idle > idle_timeout and now - h.started > idle_timeout:
            return f"no output for {idle_timeout:g}s (idle_timeout)"
    return None


def stop_gracefully(items: Iterable[T], send: Callable[[T, int], None], alive: Callable[[T], bool],
                    grace_s: float, kill_wait_s: float = 5.0) -> list[T]:
    """SIGTERM to every item, SIGKILL to those still alive after `grace_s`, then wait up to
    `kill_wait_s` for them to go. Returns the items still alive at the end (normally none).
    `send(item, sig)` signals one item (a process group, a pid...); `alive(item)` says whether
    anything of it still runs (and may reap it)."""
    items = list(items)
    for item in items:
        send(item, signal.SIGTERM)
    left = _wait(items, alive, grace_s)
    for item in left:
        send(item, signal.SIGKILL)
    return _wait(left, alive, kill_wait_s)


def _wait(items: list[T], alive: Callable[[T], bool], seconds: float) -> list[T]:
    deadline = time.monotonic() + seconds
    left = [i for i in items if alive(i)]
    while left and time.monotonic() < deadline:
        time.sleep(0.05)
        left = [i for i in left if alive(i)]
    return left


def signal_group(pgid: int, sig: int) -> None:
    """`sig` to process group `pgid`; a group that is gone is not an error."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


def visible_gpus(declared: Optional[Sequence[Any]] = None) -> list[str]:
    """GPU ids jobs may be packed onto: declared ones, else CUDA_VISIBLE_DEVICES, else nvidia-smi."""
    if declared is not None:
        return [str(g) for g in declared]
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [g.strip() for g in env.split(",") if g.strip() and g.strip() != "-1"]
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [str(i) for i, line in enumerate(out.splitlines()) if line.startswith("GPU ")]


class GpuPool:
    """The GPUs of this machine jobs are packed onto, and which of them are free. Freed GPUs go
    back in visible order, so the next job gets the lowest ids."""

    def __init__(self, ids: Sequence[Any] = ()) -> None:
        self.ids = [str(g) for g in ids]
        self.free = list(self.ids)

    def __len__(self) -> int:
        return len(self.ids)

    def take(self, n: int) -> list[str]:
        """The `n` lowest free GPUs, now in use."""
        taken, self.free = self.free[:n], self.free[n:]
        return taken

    def take_these(self, gpus: Iterable[str]) -> None:
        for g in gpus:
            self.free.remove(g)

    def release(self, gpus: Iterable[str]) -> None:
        self.free.extend(gpus)
        self.free.sort(key=self.ids.index)
