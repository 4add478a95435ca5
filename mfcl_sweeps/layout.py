"""Every path under a sweep dir, named once: for the driver's copy and for an SSH host's copy.

Paths are strings joined with '/', so the same layout serves a remote root
(`SweepLayout("/scratch/u/sweep")` built on the driver names files on the host).
"""
from __future__ import annotations

import os
import posixpath
from dataclasses import dataclass
from pathlib import Path
from typing import Union

STATE_DIR = ".mfcl"
SNAPSHOT_NAME = "sweep_manifest.json"


@dataclass(frozen=True)
class SweepLayout:
    root: str

    @classmethod
    def of(cls, sweep_dir: Union[str, os.PathLike]) -> "SweepLayout":
        return cls(os.fspath(sweep_dir))

    def _at(self, *parts: str) -> str:
        return posixpath.join(self.root, *parts)

    # -- state: the journal and what is derived from it
    @property
    def state(self) -> str:
        return self._at(STATE_DIR)

    @property
    def journal(self) -> str:
        return self._at(STATE_DIR, "journal.jsonl")

    @property
    def checkpoint(self) -> str:
        return self._at(STATE_DIR, "replay.ckpt")

    def plan_index(self, spec_hash: str) -> str:
        return self._at(STATE_DIR, "plans", f"{spec_hash}.idx")

    @property
    def claims(self) -> str:
        return self._at(STATE_DIR, "claims")

    @property
    def owners(self) -> str:
        return self._at(STATE_DIR, "owners")

    @property
    def snapshot(self) -> str:
        return self._at(SNAPSHOT_NAME)

    # -- what travels to a job
    @property
    def session(self) -> str:
        return self._at(STATE_DIR, "session.pkl")

    def driver_session(self, tag: str) -> str:
        return self._at(STATE_DIR, f"session-{tag}.pkl")

    def job_file(self, run_id: str, attempt: int) -> str:
        return self._at(STATE_DIR, "jobs", f"{run_id}.{attempt}.json")

    def result_file(self, run_id: str, attempt: int) -> str:
        return self._at(STATE_DIR, "results", f"{run_id}.{attempt}.pkl")

    def backend_dir(self, backend: str, *parts: str) -> str:
        """A backend's own files (batch scripts, job lists, torchrun agents' state)."""
        return self._at(STATE_DIR, backend, *parts)

    # -- what a user reads
    @property
    def logs(self) -> str:
        return self._at("logs")

    def run_log(self, run_id: str) -> str:
        return self._at("logs", "runs", f"{run_id}.log")

    @property
    def reports(self) -> str:
        return self._at("reports")


def sweep_id_of(sweep_dir: Union[str, os.PathLike]) -> str:
    """A readable id for a sweep dir that no name was given for: the last two parts of its
    absolute path (symlinks kept as written, so the driver and its jobs agree)."""
    parts = Path(os.path.abspath(os.fspath(sweep_dir))).parts
    return "_".join(parts[-2:]) if len(parts) >= 2 else parts[-1]
