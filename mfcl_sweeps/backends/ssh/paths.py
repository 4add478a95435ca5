"""Where a sweep lives on a host, and the translation of paths between there and here.

A host keeps one sweep under `<workdir>/.mfcl-remote/<key>/`, laid out like the local sweep dir
(`.mfcl/session.pkl`, `.mfcl/jobs`, `.mfcl/results`, and each job dir `<subdir>` with
`hydra.sweep.dir` pointed there). Paths are mapped by prefix: the local sweep dir <-> that
remote dir, the local project dir <-> the host's workdir. A job sees only host paths; what comes
back (job dir, JobReturn) sees only local ones.
"""
from __future__ import annotations

import copy
import dataclasses
import hashlib
import os
import re
from dataclasses import dataclass
from typing import Any, Optional

from mfcl_sweeps import model
from mfcl_sweeps.backends.sshclient.commands import REMOTE_DIR
from mfcl_sweeps.job.jobspec import JobSpec, Session
from mfcl_sweeps.layout import SweepLayout
from mfcl_sweeps.spec.overrides import quote_override_value


def sweep_key(local_sweep_dir: str) -> str:
    """Stable per local sweep dir (resume finds the same remote dir), readable, collision-free."""
    path = os.path.abspath(local_sweep_dir)
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", "_".join(path.rstrip("/").split("/")[-2:])).strip("_")[:60]
    return f"{slug}-{hashlib.sha1(path.encode()).hexdigest()[:8]}"


@dataclass(frozen=True)
class PathMap:
    """Prefix pairs (local, remote), most specific first."""

    pairs: tuple[tuple[str, str], ...]

    @classmethod
    def of(cls, *pairs: tuple[str, str]) -> "PathMap":
        norm = [(os.path.normpath(a), os.path.normpath(b)) for a, b in pairs if a and b]
        return cls(tuple(sorted(norm, key=lambda p: -len(p[0]))))

    @staticmethod
    def _swap(path: str, pairs: list[tuple[str, str]]) -> str:
        for src, dst in pairs:
            if path == src or path.startswith(src.rstrip("/") + "/"):
                return dst + path[len(src):]
        return path

    def to_remote(self, path: str) -> str:
        return self._swap(path, list(self.pairs))

    def to_local(self, path: str) -> str:
        return self._swap(path, sorted(((b, a) for a, b in self.pairs), key=lambda p: -len(p[0])))


@dataclass(frozen=True)
class RemoteLayout:
    local_sweep_dir: str
    workdir: str  # absolute, on the host
    project_dir: str  # absolute, here

    @property
    def root(self) -> str:
        return f"{self.workdir.rstrip('/')}/{REMOTE_DIR}/{sweep_key(self.local_sweep_dir)}"

    @property
    def session_path(self) -> str:
        return SweepLayout(self.root).session

    def job_path(self, run_id: str, attempt: int) -> str:
        return SweepLayout(self.root).job_file(run_id, attempt)

    def result_path(self, run_id: str, attempt: int) -> str:
        return SweepLayout(self.root).result_file(run_id, attempt)

    @property
    def paths(self) -> PathMap:
        return PathMap.of((self.local_sweep_dir, self.root), (self.project_dir, self.workdir))


def remote_spec(spec: JobSpec, run_id: str, layout: RemoteLayout) -> JobSpec:
    """The job as the host runs it: host paths everywhere, and the driver journals (the host
    cannot reach the sweep's journal)."""
    overrides = [*spec.overrides, f"hydra.sweep.dir={quote_override_value(layout.root)}"]
    env_set = {**spec.env_set, model.ENV_SWEEP_DIR: layout.root}
    return dataclasses.replace(spec, overrides=overrides, env_set=env_set,
                               result_path=layout.result_path(run_id, spec.attempt),
                               sweep_dir=layout.root, session_path=layout.session_path, journal=False)


def remote_session(session: Session, layout: RemoteLayout) -> Session:
    """The session with its config search path and original cwd moved to the host's workdir, so
    the job composes from the host's copy of the project."""
    from hydra._internal.config_loader_impl import ConfigLoaderImpl
    from hydra._internal.config_search_path_impl import ConfigSearchPathImpl
    from hydra.types import HydraContext
    from omegaconf import OmegaConf, open_dict, read_write

    paths = layout.paths
    loader = session.hydra_context.config_loader
    search = ConfigSearchPathImpl()
    for element in loader.get_search_path().get_path():
        path = element.path
        if path.startswith("file://"):
            path = "file://" + paths.to_remote(path[len("file://"):])
        elif "://" not in path and path.startswith("/"):
            path = paths.to_remote(path)
        search.append(element.provider, path)
    context = HydraContext(config_loader=ConfigLoaderImpl(config_search_path=search),
                           callbacks=session.hydra_context.callbacks)
    master = copy.deepcopy(session.master_config)
    cwd = OmegaConf.select(master, "hydra.runtime.cwd") if master is not None else None
    if cwd:
        with read_write(master), open_dict(master):
            master.hydra.runtime.cwd = paths.to_remote(cwd)
    return dataclasses.replace(session, hydra_context=context, master_config=master, sweep_dir=layout.root)


def localize_return(ret: Any, paths: PathMap) -> Any:
    """A JobReturn from a host, its paths pointing at the local copy of the job."""
    from omegaconf import OmegaConf, open_dict, read_write

    if getattr(ret, "working_dir", None):
        ret.working_dir = paths.to_local(ret.working_dir)
    cfg = getattr(ret, "hydra_cfg", None)
    for key in ("hydra.sweep.dir", "hydra.runtime.output_dir", "hydra.runtime.cwd"):
        parent_key, name = key.rsplit(".", 1)
        parent = OmegaConf.select(cfg, parent_key, throw_on_missing=False) if cfg is not None else None
        value = OmegaConf.select(cfg, key, throw_on_missing=False) if parent is not None else None
        if isinstance(value, str):
            with read_write(parent), open_dict(parent):  # Hydra marks these nodes read-only
                parent[name] = paths.to_local(value)
    return ret


def job_dir_of(ret: Any, layout: RemoteLayout) -> Optional[str]:
    """The host's job dir of a finished job (what is copied back), if it got that far."""
    from omegaconf import OmegaConf

    cfg = getattr(ret, "hydra_cfg", None)
    out = OmegaConf.select(cfg, "hydra.runtime.output_dir", throw_on_missing=False) if cfg is not None else None
    if isinstance(out, str) and out.startswith(layout.root.rstrip("/") + "/"):
        return out
    return None
