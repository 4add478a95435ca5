"""The Hydra side every mfcl launcher shares: from Hydra's `launch()` (any sweeper) or the mfcl
sweeper's `launch_planned()` to job requests, a backend, and the driver loop.

Backends are looked up lazily by name in the registry (`mfcl_sweeps.backends.get`): a Backend
class checks its options and builds itself for one launch (`from_options`).
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional, Sequence

from mfcl_sweeps.errors import MfclError
from mfcl_sweeps.job.jobspec import Session, identity_env, write_session
from mfcl_sweeps.launch.driver import RetryPolicy, make_request, run_jobs
from mfcl_sweeps.launch.output import JobOutput
from mfcl_sweeps.launch.progress import Progress
from mfcl_sweeps.layout import sweep_id_of
from mfcl_sweeps.model import PlannedRun
from mfcl_sweeps.options import COMMON_OPTIONS

log = logging.getLogger(__name__)


def cache_config_sources(config_loader: Any) -> None:
    """Keep the config files Hydra loads across compositions (Hydra re-reads them for every job).

    Every job composes its own config; with this cache, warm from the driver's validation and
    inherited by forked jobs, a job no longer re-reads and re-parses its YAML files. The files are
    read once per sweep, which is also the config a sweep should run with.
    """
    from hydra._internal.config_repository import CachingConfigRepository

    if not isinstance(config_loader.repository, CachingConfigRepository):
        config_loader.repository = CachingConfigRepository(config_loader.repository)


def runs_from_overrides(job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> list[PlannedRun]:
    """PlannedRuns for jobs another sweeper hands us: identity from Hydra's job numbering."""
    from mfcl_sweeps.expand import config_hash, make_run_id

    runs = []
    for i, overrides in enumerate(job_overrides):
        index = initial_job_idx + i
        task = tuple(o for o in overrides if not o.lstrip("+~").startswith("hydra."))
        # Keyed by job number too: a foreign sweeper may repeat a config (BasicSweeper a,a,b;
        # Optuna re-sampling a point) and each of its jobs is a record of its own.
        runs.append(PlannedRun(overrides=task, config_hash=config_hash(task, {"job": str(index)}), group="job",
                               position=index,
                               index=index, run_id=make_run_id(index, "job", "")))
    return runs


class LaunchCore:
    def __init__(self, backend_name: str, options: dict[str, Any]) -> None:
        self.backend_name = backend_name
        self.options = dict(options)
        self.hydra_context: Any = None
        self.task_function: Any = None
        self.config: Any = None
        self._session: Optional[tuple[Session, str]] = None

    def setup(self, *, hydra_context: Any, task_function: Any, config: Any) -> None:
        self.hydra_context, self.task_function, self.config = hydra_context, task_function, config

    @property
    def sweep_dir(self) -> str:
        return str(Path(str(self.config.hydra.sweep.dir)).absolute())

    def backend_options(self) -> dict[str, Any]:
        return {k: v for k, v in self.options.items() if k not in COMMON_OPTIONS}

    def session(self, *, write: bool = True) -> tuple[Session, str]:
        """The session (task, context, singleton state), pickled once per launcher when `write`."""
        if self._session is None:
            from hydra.core.singleton import Singleton

            cache_config_sources(self.hydra_context.config_loader)
            session = Session(task_function=self.task_function, hydra_context=self.hydra_context,
                              singleton_state=Singleton.get_state(), master_config=self.config,
                              sweep_dir=self.sweep_dir)
            self._session = (session, str(Path(self.sweep_dir) / ".mfcl" / f"session-{os.getpid()}-{id(self):x}.pkl"))
        if write and not Path(self._session[1]).exists():
            write_session(*self._session)
        return self._session

    def backend_class(self) -> Any:
        from mfcl_sweeps import backends

        return backends.get(self.backend_name)

    def check_options(self) -> None:
        """Every `hydra.launcher.*` option checked by the backend (OptionError for a bad one)."""
        self.backend_class().check_options(self.options)

    def driver_part(self) -> Optional[str]:
        """The part of each run this driver runs (Backend.driver_part); None: whole runs."""
        backend = self.backend_class()
        return backend.driver_part(backend.check_options(self.options))

    def make_backend(self, session: Session) -> Any:
        return self.backend_class().from_options(self.backend_options(), session=session)

    def requests(self, runs: Iterable[PlannedRun], sweep_id: str, extra_overrides: Sequence[str]) -> Iterator:
        """Job requests, built lazily as the driver loop pulls them."""
        _, session_path = self.session(write=False)
        for run in runs:
            yield make_request(run, [*run.overrides, *extra_overrides], sweep_dir=self.sweep_dir,
                               session_path=session_path, backend=self.backend_name,
                               env_set=identity_env(run, sweep_id, self.sweep_dir))

    # -- Hydra's contract -------------------------------------------------------------------
    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> list[Any]:
        if self.options.get("detach"):
            raise MfclError("hydra.launcher.detach=true needs hydra/sweeper=mfcl (other sweepers wait for "
                            "results that a detached launch does not produce); "
                            "add hydra/sweeper=mfcl or set detach=false")
        from mfcl_sweeps.state.manifest import SweepManifest

        runs = runs_from_overrides(job_overrides, initial_job_idx)
        extra = [[o for o in ov if o.lstrip("+~").startswith("hydra.")] for ov in job_overrides]
        manifest = SweepManifest(self.sweep_dir)
        return self._run(runs, sweep_id_of(self.sweep_dir), manifest, total=len(runs), per_run_extra=extra)

    # -- the mfcl sweeper's channel ---------------------------------------------------------
    def launch_planned(self, runs: Iterable[PlannedRun], *, sweep_id: str, manifest: Any, total: int = 0,
                       extra_overrides: Sequence[str] = ()) -> list[Any]:
        """Run planned runs (identity and per-run resources included; `runs` may be a lazy
        iterator). Returns JobReturns in input order, or [] when detached (results then land
        in the manifest later)."""
        return self._run(runs, sweep_id, manifest, total=total, shared_extra=list(extra_overrides))

    def describe(self, runs: Sequence[PlannedRun], *, sweep_id: str, extra_overrides: Sequence[str] = ()) -> str:
        """Exactly what would be submitted, for dry runs; starts nothing."""
        session, _ = self.session(write=False)
        backend = self.make_backend(session)
        try:
            return "\n".join(s.describe() for s in backend.plan(list(self.requests(runs, sweep_id, extra_overrides))))
        finally:
            backend.close()

    def _run(self, runs: Iterable[PlannedRun], sweep_id: str, manifest: Any, *, total: int = 0,
             shared_extra: Sequence[str] = (), per_run_extra: Optional[list] = None) -> list[Any]:
        Path(self.sweep_dir).mkdir(parents=True, exist_ok=True)
        session, _ = self.session()
        backend = self.make_backend(session)
        if hasattr(backend, "check_runs"):  # sees every run before any starts (mfcl_pool: affinity)
            runs = backend.check_runs(runs)
        requests = self.requests(runs, sweep_id, shared_extra)
        if per_run_extra is not None:  # the hydra.* overrides another sweeper gave each job
            requests = (_with_overrides(req, extra) for req, extra in zip(requests, per_run_extra))
        if self.options.get("detach"):
            return self._detach(backend, requests, manifest)
        mode, shown = self.options.get("progress", "auto"), self.options.get("output") or "stream"
        # auto off a terminal: with job output streamed (Hydra's console) only failed runs get a line
        progress = Progress(total, live=None if mode == "auto" else mode == "live",
                            label=f"{self.backend_name} launcher", log_runs=mode == "log" or shown != "stream")
        retry = RetryPolicy(retries=int(self.options.get("retries") or 0),
                            backoff_s=float(self.options.get("retry_backoff_s") or 1.0))
        where = "locally" if self.backend_name == "local" else f"with mfcl_{self.backend_name}"
        log.info("Launching %s jobs %s", total or "the", where)  # BasicLauncher's words
        output = JobOutput(shown, before_write=progress.clear)
        return run_jobs(backend, requests, manifest=manifest, retry=retry, output=output,
                        launch_delay=float(self.options.get("launch_delay") or 0.0), progress=progress)

    def _detach(self, backend: Any, requests: Iterable, manifest: Any) -> list[Any]:
        from mfcl_sweeps import model

        requests = list(requests)
        if not backend.queues_jobs:
            raise MfclError(f"hydra.launcher.detach=true needs a scheduler backend (slurm, pbs); "
                            f"mfcl_{self.backend_name} jobs die with the driver. "
                            "Use hydra/launcher=mfcl_slurm or mfcl_pbs, or set detach=false")
        for req in requests:
            Path(req.job_path).parent.mkdir(parents=True, exist_ok=True)
            req.spec.write(req.job_path)
        for submission in backend.plan(requests):
            manifest.transitions([(handle.request.run, model.PENDING,
                                   {"backend": backend.name, "backend_job_id": handle.backend_job_id,
                                    "attempt": handle.request.spec.attempt, **handle.data.get("journal_fields", {})})
                                  for handle in backend.submit(submission)])  # one append per submission
        backend.close()
        log.info("Detached: %d job(s) submitted; follow with `mfcl-sweeps status %s`", len(requests), self.sweep_dir)
        return []


def _with_overrides(request: Any, extra: Sequence[str]) -> Any:
    request.spec.overrides.extend(extra)
    return request
