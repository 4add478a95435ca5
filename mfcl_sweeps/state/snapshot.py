"""`sweep_manifest.json`: the replay written for people and tools, and the one reader of it."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Union

from mfcl_sweeps.errors import ManifestError
from mfcl_sweeps.fsio import atomic_write
from mfcl_sweeps.layout import SweepLayout

SNAPSHOT_VERSION = 1


def render(snapshot: dict) -> str:
    """One run per line: json's indenting encoder is pure Python, 20x slower on 100,000 runs."""
    snap = dict(snapshot)
    runs = snap.pop("runs")
    head = json.dumps(snap, indent=1, default=str)
    body = ",\n".join("  " + json.dumps(r, default=str) for r in runs)
    return head[:-2] + ',\n "runs": [\n' + body + ("\n" if runs else "") + " ]\n}\n"


def write(sweep_dir: Union[str, os.PathLike], snapshot: dict) -> Path:
    path = Path(SweepLayout.of(sweep_dir).snapshot)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, render(snapshot))
    return path


def load(sweep_dir: Union[str, os.PathLike]) -> dict:
    path = Path(SweepLayout.of(sweep_dir).snapshot)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ManifestError(f"{path}: no sweep manifest here; is {sweep_dir} a sweep dir?") from None
    except ValueError as err:
        raise ManifestError(f"{path}: unreadable sweep manifest ({err})") from None
