"""PoolBackend: one launch over several child backends (sources), as the driver loop sees one.

The driver asks the pool for its capacity (its enabled sources' free slots less the runs it
holds), hands it runs and polls. Each run goes to a source (affinity, then the strategy) through
that source's own backend. What a child cannot do alone is done here, alike for every kind:

- health: a source whose backend raises (unreachable), that fails `max_consecutive_failures`
  runs in a row or passes `max_failure_rate`, or that reports no free slot while idle, is
  disabled; a check every `health_check_interval_s` re-enables it once it answers again;
- failover: runs the pool holds go elsewhere; a disabled scheduler source's queued runs are
  withdrawn; in-flight runs of an unreachable source are handed back as preempted (the driver
  requeues them without spending a retry) only once the child reports them ended or after
  `lost_after_s` without an answer;
- work stealing: a run waiting in a scheduler's queue longer than `max_queue_wait_s` while
  another source has a free slot is withdrawn with the child's own cancel and, once the
  scheduler confirms it ended, handed back as preempted; a run that started (or wrote its
  result) meanwhile is kept, so no run completes twice.
"""
from __future__ import annotations

import dataclasses
import logging
import random
import time
from collections import defaultdict
from typing import Any, Mapping, Optional, Sequence

from mfcl_sweeps import backends
from mfcl_sweeps.backends.base import Backend, JobHandle, JobRequest, JobState, Submission
from mfcl_sweeps.backends.pool import attach, health, journaled, placement, runtime
from mfcl_sweeps.backends.pool.config import PoolLauncherConf
from mfcl_sweeps.backends.pool.logs import PoolLogs
from mfcl_sweeps.backends.pool.runtime import HELD, Flight, PoolSubmission, Source, one_line
from mfcl_sweeps.backends.pool.sources import PoolSetup, parse_setup
from mfcl_sweeps.backends.ssh.health import HealthRules
from mfcl_sweeps.backends.ssh.strategy import HostLoad
from mfcl_sweeps.job.jobspec import read_result

log = logging.getLogger(__name__)


class PoolBackend(Backend):
    name = "pool"
    conf = PoolLauncherConf

    # -- without a launch ------------------------------------------------------------------
    @classmethod
    def check_options(cls, raw: Mapping[str, Any]) -> PoolSetup:
        return parse_setup(raw)

    @classmethod
    def from_options(cls, raw: Mapping[str, Any], *, session: Any) -> PoolBackend:
        setup = cls.check_options(raw)
        children = [backends.get(s.kind).from_options(s.options, session=session) for s in setup.sources]
        return cls(setup, children, sweep_dir=session.sweep_dir)

    @classmethod
    def refresh_records(cls, records: Sequence[Any]) -> dict[str, dict]:
        return journaled.refresh_records(records)

    @classmethod
    def cancel_records(cls, records: Sequence[Any]) -> list[str]:
        return journaled.cancel_records(records)

    @classmethod
    def still_running(cls, record: Any) -> bool:
        return journaled.still_running(record)

    # -- one launch ------------------------------------------------------------------------
    def __init__(self, setup: PoolSetup, children: Sequence[Backend], *, sweep_dir: str) -> None:
        self.opts = setup.options
        self.sources = [Source(spec, child) for spec, child in zip(setup.sources, children)]
        for child in children:  # an SSH source with every host down is one source down: the pool tells all down
            if hasattr(child, "announce_all_down"):
                child.announce_all_down = False
        self.by_name = {s.name: s for s in self.sources}
        self.rules = HealthRules(self.opts.max_consecutive_failures, self.opts.max_failure_rate,
                                 self.opts.min_jobs_for_rate)
        self.logs = PoolLogs(sweep_dir)
        self.sweep_dir = sweep_dir
        self.attach: dict[str, tuple[str, Any]] = {}  # run id -> (source, record): held by a scheduler already
        self.rng = random.Random(self.opts.seed)
        self.turn = 0
        self.held: dict[str, JobHandle] = {}
        self.flying: dict[str, JobHandle] = {}  # every handle the driver has not seen end
        self.avoid: dict[str, set[str]] = defaultdict(set)  # run id -> sources it was taken from
        self.live = False  # False until the driver asks for capacity (a dry run never does)
        self.all_down_since: Optional[float] = None
        self.last_utilization = 0.0

    def check_runs(self, runs: Any) -> list[Any]:
        """Before anything launches: every run fits a source (else NoSourceFits says which, why)."""
        runs = list(runs)
        specs = [s.spec for s in self.sources]
        for run in runs:
            placement.check_fits(specs, run)
        self.attach = attach.held_runs(self.sweep_dir, runs, specs)
        if self.attach:
            log.info("mfcl_pool: %d run(s) still held by a scheduler: re-attached by job id", len(self.attach))
        return runs

    # -- capacity and health ---------------------------------------------------------------
    def _free(self, src: Source) -> int:
        """Free slots of a source; a child that raises is disabled as unreachable."""
        if not src.health.enabled:
            return 0
        try:
            child_free = src.backend.capacity()
        except Exception as err:  # an unreachable host, a scheduler that does not answer...
            self.disable(src, f"unreachable: {one_line(err)}")
            return 0
        free = src.spec.slots - src.running
        if child_free is not None:
            if child_free <= 0 and src.running == 0:
                self.disable(src, "takes no run while idle (its backend reports no free slot)")
                return 0
            free = min(free, child_free)
        return max(free, 0)

    def disable(self, src: Source, reason: str) -> None:
        if src.health.disable(reason, time.monotonic()):
            log.warning("mfcl_pool: source %s disabled: %s", src.name, reason)
            self.logs.health(src.name, "disabled", f"reason={reason!r}")

    def capacity(self) -> Optional[int]:
        self.live = True
        now = time.monotonic()
        health.recheck(self, now)
        self._steal(now)  # before fresh runs take the free slots a long-queued run may have
        free = sum(self._free(s) for s in self.sources)
        health.check_all_down(self, now)
        withdrawn = sum(1 for h in self.flying.values() if h.data["flight"].withdrawing)  # their slots wait
        return max(0, free - len(self.held) - withdrawn)

    # -- placement (pure but for the loads it reads) ----------------------------------------
    def _place(self, requests: Sequence[JobRequest]) -> list[Optional[int]]:
        """A source index per request (None: hold it), counting the ones placed before it."""
        frees = [self._free(s) if self.live else None for s in self.sources]
        loads = [s.load(f) for s, f in zip(self.sources, frees)]
        out: list[Optional[int]] = []
        for req in requests:
            allowed = placement.fitting([s.spec for s in self.sources], req.run)
            if not any(allowed):
                placement.check_fits([s.spec for s in self.sources], req.run)
            avoid = self.avoid.get(req.run.run_id)
            if avoid:  # taken from a source's queue: elsewhere if anywhere else fits
                others = [ok and s.name not in avoid for ok, s in zip(allowed, self.sources)]
                allowed = others if any(others) else allowed
            if not self.live:  # a dry run: every source as if idle, to show where runs would go
                loads = [HostLoad(slots=10**9, running=ld.running, started=ld.started, weight=ld.weight)
                         for ld in loads]
            i = placement.pick(self.opts.strategy, loads, allowed, self.turn, self.rng)
            if i is not None:
                ld = loads[i]
                loads[i] = HostLoad(slots=ld.slots, running=ld.running + 1, started=ld.started + 1,
                                    weight=ld.weight, enabled=ld.enabled)
                self.turn = i + 1
            out.append(i)
        return out

    def plan(self, requests: Sequence[JobRequest]) -> list[Submission]:
        held = [r for r in requests if r.run.run_id in self.attach]
        fresh = [r for r in requests if r.run.run_id not in self.attach]
        groups: dict[Optional[int], list[JobRequest]] = defaultdict(list)
        for req, i in zip(fresh, self._place(fresh)):
            groups[i].append(req)
        parts: list[tuple[Optional[str], Submission]] = []
        for name in dict.fromkeys(self.attach[r.run.run_id][0] for r in held):
            mine = [r for r in held if self.attach[r.run.run_id][0] == name]
            parts.append((name, attach.attach_submission(mine, [self.attach[r.run.run_id][1] for r in mine])))
        for i, reqs in groups.items():
            if i is None:
                parts.append((None, Submission(requests=reqs)))
            else:
                parts.extend((self.sources[i].name, child) for child in self.sources[i].backend.plan(reqs))
        return [PoolSubmission(requests=list(requests), parts=parts)] if requests else []

    # -- running ---------------------------------------------------------------------------
    def submit(self, submission: Submission) -> list[JobHandle]:
        """Each part through its source's backend (runs it refuses fail with its error; runs no
        source can take now are held); one handle per request, in the submission's order."""
        assert isinstance(submission, PoolSubmission)
        handles: dict[str, JobHandle] = {}
        for source, child in submission.parts:
            src = self.by_name.get(source or "")
            if src is not None:
                try:
                    handles.update((h.key, h) for h in self._start(src, child))
                    continue
                except Exception as err:
                    refused = f"submission to {src.name} failed: {one_line(err)}"
            for req in child.requests:
                h = JobHandle(request=req, backend_job_id=HELD, started=time.monotonic(),
                              data={"flight": Flight(), "queued": True, "journal_fields": {"source": HELD}})
                self.held[req.key] = h
                self.flying[req.key] = h
                handles[req.key] = h
            if src is not None:
                self._refuse(src, [handles[r.key] for r in child.requests], refused)
        return [handles[r.key] for r in submission.requests]

    def _refuse(self, src: Source, handles: list[JobHandle], error: str) -> None:
        """Runs a source's backend would not take (its submit command failed): each fails with
        that error (a retry goes elsewhere if another source fits) and counts against the source;
        unless its controller does not answer either: then they wait in the pool for another source."""
        if health.refused_while_down(self, src):
            for h in handles:
                self.avoid[h.request.run.run_id].add(src.name)
            return
        self.logs.health(src.name, "submit-failed", f"runs={len(handles)} reason={error!r}")
        for h in handles:
            self.held.pop(h.key, None)
            h.data["flight"].error = error
            h.request.spec.journal = False  # no worker ran: the driver journals the failure
            self.avoid[h.request.run.run_id].add(src.name)
            if reason := src.health.record(False, self.rules):
                self.disable(src, reason)

    def _start(self, src: Source, child_sub: Submission, handles: Optional[list[JobHandle]] = None) -> list[JobHandle]:
        """Submit through `src`'s backend; new pool handles, or `handles` (held ones) updated."""
        attached = bool(child_sub.extra.get("attach"))
        queued = src.backend.queues_jobs and not attached  # an attached run's state is journaled already
        for req in child_sub.requests:
            if not src.backend.queues_jobs and req.spec.journal:
                # the worker would journal without the source: the driver journals for it
                req.spec.journal = False
                req.spec.write(req.job_path)
            self.attach.pop(req.run.run_id, None)
        children = attach.attached_handles(child_sub) if attached else src.backend.submit(child_sub)
        out = []
        for k, ch in enumerate(children):
            src.running += 1
            src.started += 1
            fields = {**runtime.local_process(ch), **ch.data.get("journal_fields", {}), "source": src.name,
                      "source_kind": src.spec.kind}
            h = handles[k] if handles else JobHandle(request=ch.request, backend_job_id="", started=time.monotonic())
            h.backend_job_id = ch.backend_job_id
            h.data.update(flight=Flight(source=src.name, child=ch), queued=queued, journal_fields=fields)
            self.flying[h.key] = h
            reason = "; ".join(sorted(self.avoid.get(ch.request.run.run_id, ()))) and "taken from a queue"
            self.logs.assigned(ch.request.run.run_id, ch.request.spec.attempt, src.name, src.spec.kind,
                               ch.backend_job_id, reason)
            out.append(h)
        return out

    def _dispatch_held(self) -> None:
        """Send held runs to sources that fit them and have a free slot now."""
        if not self.held:
            return
        waiting = list(self.held.values())
        chosen = self._place([h.request for h in waiting])
        by_source: dict[int, list[JobHandle]] = defaultdict(list)
        for h, i in zip(waiting, chosen):
            if i is not None:
                by_source[i].append(h)
        for i, hs in by_source.items():
            src = self.sources[i]
            try:
                subs = src.backend.plan([h.request for h in hs])
                for child_sub in subs:
                    mine = [self.held[r.key] for r in child_sub.requests]
                    self._start(src, child_sub, mine)
                    for h in mine:
                        del self.held[h.key]
            except Exception as err:
                self._refuse(src, [h for h in hs if h.key in self.held], f"submission to {src.name} failed: "
                             f"{one_line(err)}")

    def _tick(self, now: float) -> None:
        health.recheck(self, now)  # only disabled sources are asked: none before the launch starts
        self._dispatch_held()
        self._steal(now)
        if now - self.last_utilization >= self.opts.utilization_interval_s:
            self.log_utilization()
            self.last_utilization = now

    def log_utilization(self) -> None:
        self.logs.utilization([(s.name, s.running, s.spec.slots, s.health.enabled, s.started) for s in self.sources])

    def _steal(self, now: float) -> None:
        """Withdraw runs still queued by a disabled scheduler source, or queued longer than
        max_queue_wait_s while another source that fits them has a free slot."""
        wait = self.opts.max_queue_wait_s
        for h in list(self.flying.values()):
            fl: Flight = h.data["flight"]
            src = self.by_name.get(fl.source)
            if src is None or not src.backend.queues_jobs or fl.started_running or fl.withdrawing:
                continue
            if not src.health.enabled:
                why = f"{src.name} is disabled ({src.health.reason})"
            elif wait and now - fl.submitted > wait and any(
                    o is not src and placement.why_not(o.spec, h.request.run) is None and self._free(o) > 0
                    for o in self.sources):
                why = f"waited {now - fl.submitted:.0f}s in {src.name}'s queue (max_queue_wait_s={wait:g})"
            else:
                continue
            fl.withdrawing = why
            self.logs.health(src.name, "withdrawn", f"run={h.request.run.run_id} reason={why!r}")
            try:
                src.backend.cancel([fl.child])
            except Exception as err:
                self.logs.host(src.name, f"{h.request.run.run_id}: withdrawing failed: {one_line(err)}")

    def poll(self, handles: Sequence[JobHandle]) -> dict[str, JobState]:
        now = time.monotonic()
        self._tick(now)
        states: dict[str, JobState] = {}
        per_source: dict[str, list[JobHandle]] = defaultdict(list)
        for h in handles:
            fl: Flight = h.data["flight"]
            if fl.source == HELD:
                states[h.key] = JobState(done=fl.error is not None, error=fl.error)
            else:
                per_source[fl.source].append(h)
        for name, hs in per_source.items():
            states.update(self._poll_source(self.by_name[name], hs, now))
        for key, st in states.items():
            if st.done:
                self.flying.pop(key, None)
        return states

    def _poll_source(self, src: Source, hs: list[JobHandle], now: float) -> dict[str, JobState]:
        lost = False  # unanswered for lost_after_s: whether a withdrawal took is unknown too
        try:
            if reason := health.down(self, src, now):
                raise health.NoAnswer(reason)
            child_states, src.unanswered_since = src.backend.poll([h.data["flight"].child for h in hs]), None
        except Exception as err:
            self.disable(src, f"unreachable: {one_line(err)}")
            src.unanswered_since = src.unanswered_since or now
            if now - src.unanswered_since < self.opts.lost_after_s:
                return {h.key: JobState(done=False) for h in hs}
            self.logs.health(src.name, "lost", f"runs={len(hs)} after={self.opts.lost_after_s:g}s")
            lost = True
            child_states = {h.key: JobState(done=True, preempted=True,
                                            error=f"source {src.name} unreachable for {self.opts.lost_after_s:g}s: "
                                                  "declared lost") for h in hs}
        out = {}
        for h in hs:
            st = child_states.get(h.key, JobState(done=False))
            fl: Flight = h.data["flight"]
            if not st.done:
                fl.started_running = fl.started_running or st.running
                out[h.key] = st
                continue
            src.running -= 1
            attach.adopt_result(fl.child)
            fields = {**st.fields, "source": src.name, "source_kind": src.spec.kind}
            if fl.withdrawing and not lost and read_result(h.request.spec.result_path) is None:
                self.avoid[h.request.run.run_id].add(src.name)
                out[h.key] = JobState(done=True, preempted=True, error=f"withdrawn: {fl.withdrawing}", fields=fields)
                continue
            ok = st.error is None and not st.preempted and not st.run_failed and st.exit_code in (0, None)
            if st.preempted:
                self.logs.health(src.name, "lost", f"run={h.request.run.run_id} reason={st.error!r}")
            if reason := src.health.record(ok, self.rules):
                self.disable(src, reason)
            out[h.key] = dataclasses.replace(st, fields=fields)
        return out

    def _children_of(self, handles: Sequence[JobHandle]) -> dict[str, list[JobHandle]]:
        per: dict[str, list[JobHandle]] = defaultdict(list)
        for h in handles:
            fl: Flight = h.data["flight"]
            self.held.pop(h.key, None)
            if fl.source != HELD:
                per[fl.source].append(fl.child)
        return per

    def cancel(self, handles: Sequence[JobHandle]) -> None:
        for name, children in self._children_of(handles).items():
            self.by_name[name].backend.cancel(children)

    def kill(self, handles: Sequence[JobHandle]) -> None:
        for name, children in self._children_of(handles).items():
            self.by_name[name].backend.kill(children)

    def close(self) -> None:
        if self.live:
            self.log_utilization()
        for src in self.sources:
            try:
                src.backend.close()
            except Exception as err:  # one source's cleanup never hides another's
                log.warning("mfcl_pool: closing source %s: %s", src.name, one_line(err))
