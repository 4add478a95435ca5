"""Backends by name: the one registry the launcher, the CLI and claim takeover use.

Each name maps to one `Backend` class (mfcl_sweeps.backends.base); what is asked of a backend
outside a launch (check options, refresh or cancel journaled runs, is a run still alive) is a
class method of it. A backend's module is imported only when a sweep or a command needs it,
so importing this registry imports no backend, and `mfcl-sweeps status` on a Slurm sweep never
loads SSH or torchrun code.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mfcl_sweeps.backends.base import Backend

BACKENDS = {
    "local": "mfcl_sweeps.backends.local:LocalBackend",
    "torchrun": "mfcl_sweeps.backends.torchrun.backend:TorchrunBackend",
    "slurm": "mfcl_sweeps.backends.slurm.backend:SlurmBackend",
    "pbs": "mfcl_sweeps.backends.pbs.backend:PbsBackend",
    "ssh": "mfcl_sweeps.backends.ssh.backend:SshBackend",
    "pool": "mfcl_sweeps.backends.pool.backend:PoolBackend",  # composes the others (docs/pool.md)
}


def get(name: str) -> type[Backend]:
    """The Backend class registered as `name` (KeyError for a name that is not registered)."""
    module, _, cls = BACKENDS[name].partition(":")
    return getattr(importlib.import_module(module), cls)


def still_running(record: Any) -> bool:
    """The liveness callable claim takeover is handed: does the backend that started this
    journaled run still hold it (a queued or running scheduler job)?"""
    if record.backend not in BACKENDS:
        return False
    return get(record.backend).still_running(record)
