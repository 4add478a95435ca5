"""The mfcl sweeper's work: spec -> validation -> manifest (identity, resume, claims) -> launches.

The sweeper never knows which backend runs a job: mfcl launchers get planned runs through
`launch_planned` (identity and per-run resources included, streamed); any other launcher gets
Hydra's `launch(overrides, initial_job_idx)`, called so that each run's job number is its index.
"""
from __future__ import annotations

import logging
import os
import signal
import socket
import time
import uuid
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

from mfcl_sweeps import model
from mfcl_sweeps.batches import batched, contiguous_chunks, growing_batches
from mfcl_sweeps.config import MfclSweeperConf
from mfcl_sweeps.errors import MfclError, SweepFailed
from mfcl_sweeps.fsio import writable
from mfcl_sweeps.job.jobspec import declare_env_keys, identity_overrides
from mfcl_sweeps.model import PlannedRun
from mfcl_sweeps.options import parse_options
from mfcl_sweeps.secrets import ENV_SECRET_KEYS, redact
from mfcl_sweeps.spec.overrides import quote_override_value

log = logging.getLogger("mfcl_sweeps")

HYDRA_DEFAULT_SWEEP_DIR = "multirun/${now:%Y-%m-%d}/${now:%H-%M-%S}"
RESCAN_S = 1.0  # claim mode: seconds between looks at runs other workers hold
DONE_ELSEWHERE = (model.COMPLETED, model.FAILED, model.CANCELLED)  # another worker's outcome stands


def storage_dir(name: str, cwd: str) -> str:
    root = os.environ.get("MFCL_STORAGE_ROOT")
    return str(Path(root, name) if root else Path(cwd, "multirun", name))


class SweepCore:
    def __init__(self, options: dict[str, Any]) -> None:
        self.options = options
        self.hydra_context: Any = None
        self.config: Any = None
        self.launcher: Any = None
        self.repeats = 0  # runs of the spec dropped as repeats of an earlier run's config
        self.foreign_failed: list[PlannedRun] = []  # runs that failed on a launcher of Hydra's
        self.held: list[PlannedRun] = []  # claim mode: runs other live workers held when this one passed them

    def opt(self, key: str, default: Any = None) -> Any:
        from omegaconf import OmegaConf

        value = self.options.get(key, default)
        if OmegaConf.is_config(value):
            value = OmegaConf.to_container(value, resolve=True)
        return default if value is None or (isinstance(value, (dict, list)) and not value) else value

    def setup(self, *, hydra_context: Any, task_function: Any, config: Any) -> None:
        from hydra.core.plugins import Plugins

        self.hydra_context, self.config = hydra_context, config
        # every option checked (mfcl_sweeps.config) before the launcher is made or anything written
        parse_options(MfclSweeperConf, {k: v for k in self.options if (v := self.opt(k)) is not None},
                      "the mfcl sweeper", group="hydra.sweeper")
        if self.opt("secret_keys"):  # for every process of the sweep, jobs included (mfcl_sweeps.secrets)
            os.environ[ENV_SECRET_KEYS] = ",".join(map(str, self.opt("secret_keys")))
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config)
        if not self.is_mfcl_launcher():  # Hydra's launchers: keep tracebacks of jobs run elsewhere
            import sys

            from mfcl_sweeps.callbacks import KeepTraceback

            main_file = getattr(sys.modules["__main__"], "__file__", None)
            hydra_context.callbacks.callbacks.append(KeepTraceback(main_file and os.path.abspath(main_file)))

    # -- what to run -----------------------------------------------------------------------
    def load_spec(self, arguments: list[str]) -> Any:
        import dataclasses

        from mfcl_sweeps.expand import check_not_empty
        from mfcl_sweeps.spec import SpecOptions, load_spec

        options = SpecOptions(**{f.name: self.opt(f.name) for f in dataclasses.fields(SpecOptions)})
        spec = load_spec(self.opt("sweep_file"), cli_overrides=list(arguments), params=self.opt("params", {}),
                         options=options, config_loader=self.hydra_context.config_loader)
        check_not_empty(spec)
        return spec

    def resume_mode(self) -> str:
        # Hydra users rerun the same command after editing code and expect it to run again;
        # a named sweep or a claim worker means "continue this sweep".
        return self.opt("resume") or ("skip_completed" if (self.opt("name") or self.opt("claim")) else "none")

    def sweep_dir(self) -> str:
        from omegaconf import OmegaConf, open_dict

        name = self.opt("name")
        # Hydra's default dir is a timestamp; one the user set (command line or config) wins over
        # the named-sweep default, as hydra.sweep.dir always does in Hydra.
        explicit = OmegaConf.to_container(self.config.hydra.sweep, resolve=False)["dir"] != HYDRA_DEFAULT_SWEEP_DIR
        if name and not explicit:
            path = storage_dir(name, os.getcwd())
            with open_dict(self.config):
                self.config.hydra.sweep.dir = path  # launchers read it from the shared config
        return str(Path(str(self.config.hydra.sweep.dir)).absolute())

    def is_mfcl_launcher(self) -> bool:
        return hasattr(self.launcher, "launch_planned")

    # -- the sweep -----------------------------------------------------------------------------
    def sweep(self, arguments: list[str]) -> Any:
        """The sweep; a Ctrl-C outside the driver loop (which handles stop signals itself) ends
        it with one line and exit 130, no traceback."""
        from mfcl_sweeps.launch.interrupt import SweepInterrupted, say

        try:
            with writable():  # a full or read-only disk met outside fsio/journal: one line
                return self._sweep(arguments)
        except KeyboardInterrupt:
            line = "interrupted: 0 runs stopped (none was running)"
            say(line)
            raise SweepInterrupted(signal.SIGINT, line) from None

    def _sweep(self, arguments: list[str]) -> Any:
        from mfcl_sweeps import expand, notify
        from mfcl_sweeps.state import drivers

        spec = self.load_spec(arguments)
        notify_options = notify.parse_options(self.opt("notify"))  # a bad setting fails before launching
        total = expand.count(spec) - self.drop_repeats(spec)
        if self.opt("validate", True):
            from mfcl_sweeps.validate import validate_spec

            validate_spec(spec, self.hydra_context.config_loader, self.config)
        if self.opt("dry_run", False):
            return self.dry_run(spec, total)
        resume = self.resume_mode()
        sweep_dir = self.sweep_dir()
        extra = [f"hydra.sweep.dir={quote_override_value(sweep_dir)}"] if self.opt("name") else []
        git = self.check_git()
        part = self.launcher.driver_part() if self.is_mfcl_launcher() else None
        leave = drivers.enter(sweep_dir, claim=bool(self.opt("claim", False)), part=part)
        try:
            return self._drive(spec, resume, sweep_dir, total, extra, git, notify_options)
        finally:
            leave()

    def _drive(self, spec: Any, resume: str, sweep_dir: str, total: int, extra: list[str], git: Optional[dict],
               notify_options: Any) -> Any:
        from mfcl_sweeps import notify

        manifest = self.open_manifest(sweep_dir, spec, total, git)
        self.claim_owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        # A claim worker heart-beats while it lives; stopping retires it, which frees its claims at once.
        stop_heartbeat = manifest.start_heartbeat(self.claim_owner) if self.opt("claim", False) else None
        notifier = notify.SweepNotifier.start(notify_options, manifest, self.config)
        try:
            todo = self.count_to_do(manifest, spec, resume, total)  # 0 and no claim: nothing to launch
            batches = self.launch(self.runs_to_do(manifest, spec, resume), manifest, manifest.sweep_id, todo, extra) \
                if todo or self.opt("claim", False) else []
            while self.held:  # claim mode: a run another worker held is done, or taken over once that worker dies
                won = self.retake(manifest, resume)
                if won:
                    batches += self.launch(iter(won), manifest, manifest.sweep_id, len(won), extra)
                else:
                    time.sleep(RESCAN_S)
        except MfclError as err:  # the launch stopped (e.g. every SSH host down): say why, then fail as before
            notifier.stopped(str(err))
            raise
        finally:
            notifier.stop()
            if stop_heartbeat is not None:
                stop_heartbeat()
        manifest.write_snapshot()
        try:
            return self.finish(manifest, batches, sweep_dir)
        finally:
            notifier.ended()

    def drop_repeats(self, spec: Any) -> int:
        """Count the runs repeating an earlier run's config, which `runs_to_do` then skips: one
        record per config, so the manifest's total is the number of jobs run."""
        from mfcl_sweeps.duplicates import count_repeats

        self.repeats = count_repeats(spec)
        if self.repeats:
            log.info("mfcl: %d repeated run(s) dropped: same config as an earlier run (each config runs once)",
                     self.repeats)
        return self.repeats

    def check_git(self) -> Optional[dict]:
        from mfcl_sweeps.state.sysinfo import check_git, git_info, git_warnings

        info = git_info(os.getcwd())
        # Refusing when behind protects a sweep that several checkouts share (claim workers,
        # clusters told apart by name); a local sweep runs as Hydra would run it, with a warning.
        required = bool(self.opt("require_up_to_date", False) or self.opt("claim", False)
                        or self.opt("cluster") or os.environ.get("MFCL_CLUSTER"))
        problem = check_git(info, bool(self.opt("allow_behind", False)), required=required)
        if problem:
            raise MfclError(problem)
        for warning in git_warnings(info or {}):
            log.warning("mfcl: %s; the manifest records it", warning)
        return info

    def open_manifest(self, sweep_dir: str, spec: Any, total: int, git: Optional[dict]) -> Any:
        from omegaconf import OmegaConf

        from mfcl_sweeps import backends
        from mfcl_sweeps.duplicates import runs_by_group
        from mfcl_sweeps.state import store as stores
        from mfcl_sweeps.state.manifest import SweepManifest
        from mfcl_sweeps.state.sysinfo import command_info

        Path(sweep_dir).mkdir(parents=True, exist_ok=True)
        cluster = self.opt("cluster") or os.environ.get("MFCL_CLUSTER") or "local"
        # a database store (docs/store.md) is opened first: one that cannot be used stops the sweep here
        store = stores.open_chosen(sweep_dir, self.opt("store"), self.config, name=self.opt("name"), cluster=cluster,
                                   claim_timeout=float(self.opt("claim_timeout", 600.0)))
        OmegaConf.save(OmegaConf.create(redact(OmegaConf.to_container(self.config))), Path(sweep_dir) / "multirun.yaml")
        manifest = SweepManifest(sweep_dir, claim_timeout=float(self.opt("claim_timeout", 600.0)),
                                 still_running=backends.still_running, store=store)
        counts = {**runs_by_group(spec, self.repeats), "total": total}  # status: each group's pending
        manifest.record_plan(spec.to_dict(), spec.spec_hash(), counts, command_info(), cluster,
                             sweep_id=self.opt("name") or None, git=git)
        return manifest

    def count_to_do(self, manifest: Any, spec: Any, resume: str, total: int) -> int:
        """Runs this driver launches, for its counters (0: unknown, as in claim mode)."""
        from mfcl_sweeps.duplicates import unique_runs
        from mfcl_sweeps.state.todo import survey

        if not self.opt("only_runs") and (resume == "none" or not manifest.records()):
            return 0 if self.opt("claim", False) else total
        todo = survey(manifest, manifest.assign(unique_runs(spec, self.repeats)), resume, self.opt("only_runs", []))
        return 0 if self.opt("claim", False) else todo

    def runs_to_do(self, manifest: Any, spec: Any, resume: str) -> Iterator[PlannedRun]:
        """Runs still to execute, lazily; in claim mode each is claimed just before it runs."""
        from mfcl_sweeps.duplicates import unique_runs
        from mfcl_sweeps.state.todo import wanted

        claim, chosen = bool(self.opt("claim", False)), self.opt("only_runs", [])
        for run in manifest.assign(unique_runs(spec, self.repeats)):
            if not wanted(manifest, run, resume, chosen):
                continue
            if claim and not manifest.claim(run, self.claim_owner, node_rank=run.resources.node_rank):
                self.held.append(run)
                continue
            yield run
        if self.held:
            log.info("mfcl: %d run(s) are held by other workers; this worker takes over any whose worker dies",
                     len(self.held))

    def retake(self, manifest: Any, resume: str) -> list[PlannedRun]:
        """The held runs this worker now holds (their owner died or retired before finishing
        them); runs another worker finished are dropped, the rest stay held."""
        won, still = [], []
        manifest.refresh()
        for run in self.held:
            rec = manifest.record(run.config_hash)
            if (rec is not None and rec.status in DONE_ELSEWHERE) or not manifest.should_run(run, resume)[0]:
                continue
            if manifest.claim(run, self.claim_owner, node_rank=run.resources.node_rank):
                won.append(run)
            else:
                still.append(run)
        self.held = still
        if won:
            log.warning("mfcl: took over %d run(s) of workers that died: %s", len(won),
                        ", ".join(r.run_id for r in won[:5]) + (" ..." if len(won) > 5 else ""))
        return won

    def launch(self, todo: Iterator[PlannedRun], manifest: Any, sweep_id: str, total: int,
               extra: list[str]) -> list[list[Any]]:
        """Launch batch by batch; returns one list of JobReturns per batch, as BasicSweeper does."""
        batches: list[list[Any]] = []
        max_batch = self.opt("max_batch_size")
        if self.is_mfcl_launcher():
            for batch in batched(todo, max_batch) if max_batch else [todo]:
                size = len(batch) if isinstance(batch, list) else total  # runs this call launches
                batches.append(list(self.launcher.launch_planned(
                    batch, sweep_id=sweep_id, manifest=manifest, total=size, extra_overrides=extra)))
            return batches
        # Hydra's launch() takes a whole list of overrides: grow the lists so that a large sweep's
        # first job does not wait for every run's identity (a user's max_batch_size is kept as is).
        for batch in batched(todo, max_batch) if max_batch else growing_batches(todo):
            rets: list[Any] = []
            for chunk in contiguous_chunks(batch):
                identity = [identity_overrides(r, sweep_id, manifest.sweep_dir) for r in chunk]
                declare_env_keys(self.config, {o.split("=", 1)[0].rsplit(".", 1)[1] for i in identity for o in i})
                overrides = [[*r.overrides, *i, *extra] for r, i in zip(chunk, identity)]
                chunk_rets = self.launcher.launch(overrides, initial_job_idx=chunk[0].index)
                self.foreign_failed += self.journal_foreign(manifest, chunk, chunk_rets)
                rets.extend(chunk_rets)
            batches.append(rets)
        return batches

    @staticmethod
    def journal_foreign(manifest: Any, runs: Sequence[PlannedRun], rets: Sequence[Any]) -> list[PlannedRun]:
        """Hydra's own launchers do not journal: record their outcomes here; return the failed
        runs. They keep no traceback either (Hydra's job log does not get it): a failed run's
        goes to its run log."""
        from mfcl_sweeps.job.jobspec import log_path_for
        from mfcl_sweeps.job.worker import outcome

        failed = []
        for run, ret in zip(runs, rets):
            status, fields = outcome(ret)
            if status == model.FAILED:
                failed.append(run)
                log_path = Path(log_path_for(manifest.sweep_dir, run.run_id))
                log_path.parent.mkdir(parents=True, exist_ok=True)
                with open(log_path, "a", encoding="utf-8") as f:
                    f.write(fields["traceback"])
            manifest.transition(run, status, **fields)
        return failed

    def finish(self, manifest: Any, batches: list[list[Any]], sweep_dir: str) -> list[list[Any]]:
        from hydra.core.utils import JobStatus

        failed_now = any(r.status != JobStatus.COMPLETED for batch in batches for r in batch)
        if failed_now and not self.is_mfcl_launcher():  # mfcl launchers' driver loop prints its own
            from mfcl_sweeps.launch.driver import report_failures

            report_failures(manifest, self.foreign_failed)
        if failed_now and self.opt("fail_on_error", True):
            failed = sorted(r.run_id for r in manifest.records().values() if r.status == model.FAILED)
            if failed:  # runs stopped by `mfcl-sweeps cancel` are cancelled, not failed
                self.report(sweep_dir)  # Hydra skips on_multirun_end when sweep() raises
                raise SweepFailed(failed, sweep_dir)
        return batches

    def report(self, sweep_dir: str) -> None:
        callbacks = self.config.hydra.get("callbacks") or {}
        if not any("mfcl" in str(cb.get("_target_", "")) for cb in callbacks.values()):
            return
        from mfcl_sweeps.report import write_final_report

        try:
            write_final_report(sweep_dir)
        except MfclError as err:
            log.error("mfcl: report not written: %s", err)

    def dry_run(self, spec: Any, total: int) -> None:
        from mfcl_sweeps.dryrun import print_dry_run

        print_dry_run(spec, total, self.repeats, self.launcher, self.opt("name") or "dry-run")
