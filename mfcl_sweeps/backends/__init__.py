"""Backends by name: the one registry the launcher, the CLI and the state layer's callers use.

A backend's module is imported only when a sweep or a command needs it, so `mfcl-sweeps status`
on a Slurm sweep never loads SSH or torchrun code.
"""
from __future__ import annotations

import importlib
from types import ModuleType
from typing import Callable, Optional

BACKENDS = {
    "local": "mfcl_sweeps.backends.local",
    "torchrun": "mfcl_sweeps.backends.torchrun.backend",
    "slurm": "mfcl_sweeps.backends.slurm.backend",
    "pbs": "mfcl_sweeps.backends.pbs.backend",
    "ssh": "mfcl_sweeps.backends.ssh.backend",
}


def load(name: str) -> ModuleType:
    """The module of backend `name` (KeyError for a name that is not registered)."""
    return importlib.import_module(BACKENDS[name])


def hook(name: Optional[str], attr: str) -> Optional[Callable]:
    """`attr` of backend `name`'s module, or None when the backend is unknown or has no such hook."""
    if name not in BACKENDS:
        return None
    return getattr(load(name), attr, None)
