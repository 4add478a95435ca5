"""The Hydra callback behind `hydra/callbacks=mfcl`: a manifest and a report for any sweep.

With a sweeper and launcher that know nothing of mfcl (BasicSweeper, Optuna, submitit...) it
journals each job's start and end from `on_job_start`/`on_job_end`, which run where the job
runs (inside the job process for submitit; the sweep dir must be on a shared filesystem), and
at `on_multirun_end` writes `sweep_manifest.json` and the report.

When an mfcl sweeper or launcher runs the job, the job's `hydra.job.env_set` carries
`MFCL_SWEEP_ID` and the worker journals the job itself; the callback then only writes the final
snapshot and report. A detached launch (`hydra.launcher.detach=true`) has no results yet at the
end of the multirun: snapshot only; run `mfcl-sweeps aggregate SWEEP_DIR` later.

The callback holds only its options, so launchers can pickle it to ship it with jobs.
"""
from __future__ import annotations

import atexit
import hashlib
import json
import logging
import os
import re
import socket
from typing import Any, Optional

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from mfcl_sweeps import model
from mfcl_sweeps.errors import MfclError, OptionError

log = logging.getLogger(__name__)


def sweep_dir_of(config: DictConfig) -> str:
    """`hydra.sweep.dir`, absolute against the directory the command was started in."""
    return os.path.join(str(config.hydra.runtime.cwd), str(config.hydra.sweep.dir))


def journaled_by_mfcl(config: DictConfig) -> bool:
    """True when an mfcl sweeper or launcher started this job (it journals the job itself)."""
    return OmegaConf.select(config, f"hydra.job.env_set.{model.ENV_SWEEP_ID}") is not None


def _is_mfcl_sweeper(config: DictConfig) -> bool:
    return "mfcl_sweeps" in str(OmegaConf.select(config, "hydra.sweeper._target_") or "")


# sweep dir -> the notifier watching it, for sweeps the mfcl sweeper does not run (it notifies itself)
_NOTIFIERS: dict[str, Any] = {}


@atexit.register
def _notify_unfinished() -> None:
    """Hydra skips on_multirun_end when a BasicSweeper job raised: still send what is known."""
    for notifier in _NOTIFIERS.values():
        notifier.report = None  # on_multirun_end wrote none
        notifier.stop()
        notifier.ended()
    _NOTIFIERS.clear()


class MfclCallback(Callback):
    def __init__(self, report: bool = True, html: bool = True, plots: bool = True,
                 metric: Optional[str] = None, mode: Optional[str] = None, live: bool = True,
                 live_interval_s: float = 30.0, notify: Any = None) -> None:
        if mode not in (None, "min", "max"):  # checked when Hydra builds the callback, before any job
            raise OptionError(f"hydra.callbacks.mfcl.mode must be min or max (or null), got {mode!r}")
        if float(live_interval_s) <= 0:
            raise OptionError(f"hydra.callbacks.mfcl.live_interval_s must be > 0, got {live_interval_s!r}")
        self.report, self.html, self.plots, self.metric, self.mode = report, html, plots, metric, mode
        self.live, self.live_interval_s = live, live_interval_s
        self.notify = OmegaConf.to_container(notify) if OmegaConf.is_config(notify) else notify

    def _start_live(self, config: DictConfig) -> None:
        """Keep reports/index.html current while the sweep runs: a detached refresher that follows
        the journal (mfcl_sweeps.report.live), started here, in the sweep's own process."""
        if not (self.report and self.live and self.html):
            return
        from mfcl_sweeps.report import live

        try:
            live.kick(sweep_dir_of(config), interval_s=self.live_interval_s, parent=os.getpid(),
                      metric=self.metric, mode=self.mode)
        except OSError as err:  # a read-only or full sweep dir must not fail the sweep
            log.warning("mfcl: live report not started: %s", err)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        """Starts the live report; records the command, git state and environment for a sweep the
        mfcl sweeper does not plan (it records its own plan)."""
        self._start_live(config)
        if _is_mfcl_sweeper(config):
            if self.notify and (self.notify.get("webhook_env") or (self.notify.get("email") or {}).get("to")):
                log.warning("mfcl: hydra.callbacks.mfcl.notify is not used with hydra/sweeper=mfcl; "
                            "set hydra.sweeper.notify instead")
            return
        from mfcl_sweeps.state.manifest import SweepManifest

        spec = {"sweeper": OmegaConf.select(config, "hydra.sweeper._target_"),
                "launcher": OmegaConf.select(config, "hydra.launcher._target_"),
                "arguments": list(config.hydra.overrides.task)}
        spec_hash = hashlib.sha1(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]
        manifest = SweepManifest(sweep_dir_of(config))
        manifest.record_plan(spec, spec_hash, {"total": 0})
        from mfcl_sweeps import notify

        options = notify.parse_options(self.notify, where="hydra.callbacks.mfcl.notify")
        if options is not None:  # kept off the callback, which launchers pickle
            _NOTIFIERS[manifest.sweep_dir] = notify.SweepNotifier.start(options, manifest, config)

    def _run(self, config: DictConfig) -> model.PlannedRun:
        from mfcl_sweeps.launch.core import runs_from_overrides

        return runs_from_overrides([list(config.hydra.overrides.task)], int(config.hydra.job.num))[0]

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        if journaled_by_mfcl(config):
            return
        from mfcl_sweeps.state.manifest import SweepManifest

        SweepManifest(sweep_dir_of(config)).transition(
            self._run(config), model.RUNNING, job_dir=str(config.hydra.runtime.output_dir),
            host=socket.gethostname(), pid=os.getpid(), backend="hydra")

    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:
        if journaled_by_mfcl(config):
            return
        from mfcl_sweeps.job.worker import outcome
        from mfcl_sweeps.state.manifest import SweepManifest

        status, fields = outcome(job_return)  # the one JobReturn -> journal mapping
        fields.setdefault("job_dir", str(config.hydra.runtime.output_dir))
        SweepManifest(sweep_dir_of(config)).transition(self._run(config), status, **fields)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        finish_sweep(sweep_dir_of(config), detached=bool(OmegaConf.select(config, "hydra.launcher.detach")),
                     report=self.report, html=self.html, plots=self.plots, metric=self.metric, mode=self.mode)
        notifier = _NOTIFIERS.pop(os.path.abspath(sweep_dir_of(config)), None)
        if notifier is not None:
            notifier.stop()
            notifier.ended()


class KeepTraceback(Callback):
    """Added by the mfcl sweeper under Hydra's launchers: where the job ran, it puts a failed
    job's traceback text on its JobReturn, which joblib and submitit pickle back to the driver
    without the traceback itself (the driver then logs and journals it whole).

    cloudpickle ships the functions of the main script by value and names their file
    `<dynamic-code>`: those frames get the script's path (and source line) back."""

    def __init__(self, main_file: Optional[str] = None) -> None:
        self.main_file = main_file

    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:
        from mfcl_sweeps.job.failures import keep_traceback

        if keep_traceback(job_return) and self.main_file:
            job_return.mfcl_traceback = _DYNAMIC_CODE.sub(self._frame, job_return.mfcl_traceback)

    def _frame(self, match: "re.Match[str]") -> str:
        import linecache

        source = linecache.getline(self.main_file or "", int(match["line"])).strip()
        return f'File "{self.main_file}", line {match["line"]}, in {match["name"]}' + (
            f"\n    {source}" if source else "")


_DYNAMIC_CODE = re.compile(r'File "<dynamic-code>", line (?P<line>\d+), in (?P<name>[^\n]+)')


def finish_sweep(sweep_dir: str, *, detached: bool = False, report: bool = True, **report_options: Any) -> None:
    """Final `sweep_manifest.json`, then the report unless the launch was detached.

    A report that cannot be written is logged, not raised: the runs themselves are done.
    """
    from mfcl_sweeps.state.manifest import SweepManifest

    SweepManifest(sweep_dir).write_snapshot()
    if detached:
        log.info("mfcl: detached launch, no report yet; run `mfcl-sweeps aggregate %s` when the jobs are done",
                 sweep_dir)
        return
    if not report:
        return
    from mfcl_sweeps.report import live, write_report

    live.stop(sweep_dir)  # a live refresher must not overwrite the final page
    try:
        files = write_report(sweep_dir, **report_options)
    except MfclError as err:
        log.error("mfcl: report not written: %s", err)
        return
    log.info("mfcl: report %s", files.html or files.markdown)
