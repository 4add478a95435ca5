"""A sweep dir's state: a replay of its journal (see journal.py).

The journal holds two kinds of ops. A *plan* op (one per distinct spec, whatever the number
of runs) carries the spec, its counts, the command, git state and redacted environment. A
*transition* op carries one run's new state; the first one for a run also carries its identity
(run id, index, group, overrides...). Untouched runs are never written: a 100,000-run plan is
one line, and each update costs one appended line.

Indices: the first plan gives index = expansion position. A later plan (an edited grid) keeps
the index of every hash seen before and gives new hashes `base + position`, where `base` lies
above every index given so far. `base` is computed during replay from the plan op's place in
the journal, so every worker replaying the journal agrees. The hash -> index map of each plan
is kept in `.mfcl/plans/<spec_hash>.idx` (written once, when the plan is first fully assigned),
so a hash planned but never started still keeps its index after an edit.

Where ops, plan indices and claims live is the store's business (store.py): the sweep dir's
files by default, or a PostgreSQL database (pg.py) named by the sweep dir's store pointer.
"""
from __future__ import annotations

import os
import time
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Optional, Union

from mfcl_sweeps import model
from mfcl_sweeps.errors import ManifestError
from mfcl_sweeps.layout import SweepLayout, sweep_id_of
from mfcl_sweeps.liveness import me, run_alive
from mfcl_sweeps.model import PlannedRun
from mfcl_sweeps.state import snapshot as snapshots
from mfcl_sweeps.state.claims import ALREADY_MINE, DEFAULT_CLAIM_TIMEOUT_S
from mfcl_sweeps.state.records import Checkpoint, RunRecord, write_checkpoint
from mfcl_sweeps.state.replay import PlanInfo, SweepState, check_state, identity_of, transition_op
from mfcl_sweeps.state.store import FILE, Store, open_store

__all__ = ["SweepManifest", "RunRecord", "PlanInfo", "transition_op", "identity_of"]

ENV_CLUSTER = "MFCL_CLUSTER"
CHECKPOINT_AFTER_OPS = 20_000


class SweepManifest:
    """The state layer's face: the journal's replay, index assignment, resume decisions,
    transitions, claims and the snapshot of one sweep dir.

    Creating one is cheap and writes nothing; state is read from the journal on demand, and
    only the ops appended since the previous read are parsed. `still_running(record)` is what
    claim takeover asks before taking a gone owner's run (does a scheduler still hold its job?);
    the state layer itself knows no backend.
    """

    def __init__(self, sweep_dir: Union[str, os.PathLike], *, claim_timeout: float = DEFAULT_CLAIM_TIMEOUT_S,
                 lock_grace: Optional[float] = None,
                 still_running: Optional[Callable[[RunRecord], bool]] = None, store: Optional[Store] = None) -> None:
        self.sweep_dir = os.path.abspath(os.fspath(sweep_dir))
        self.layout = SweepLayout(self.sweep_dir)
        self.state_dir = Path(self.layout.state)
        self.store = store or open_store(self.sweep_dir, claim_timeout=claim_timeout, lock_grace=lock_grace)
        self.journal = getattr(self.store, "journal", None)  # the file journal (None on a database)
        self.claims = self.store.claims
        self._cluster: Optional[str] = None  # this process's cluster, once record_plan names it
        self._still_running = still_running
        self._state = SweepState()
        self._current: Optional[PlanInfo] = None
        self._identified: set[str] = set()  # hashes whose identity this object has journaled

    # -- replay -------------------------------------------------------------------------------
    def refresh(self) -> int:
        """Apply the ops appended since the last refresh; return how many there were."""
        if self.store.lines_read == 0 and not self._state.plans and not len(self._state.records):
            self._load_checkpoint()
        ops = self.store.read_new()
        for op in ops:
            self._state.apply(op)
        if len(ops) >= CHECKPOINT_AFTER_OPS:
            try:  # a long replay is worth keeping for the next reader
                self.checkpoint()
            except OSError:
                pass  # a read-only sweep dir: replay from the journal each time
        return len(ops)

    def _load_checkpoint(self) -> None:
        cp = self.store.load_checkpoint(self.state_dir)
        if cp is not None:
            self._state.load(cp.state, cp.records)

    def checkpoint(self) -> None:
        """Save this replay (see records.py) so later readers parse only newer ops."""
        at = self.store.checkpoint_position()
        if at is not None:
            write_checkpoint(self.state_dir, Checkpoint(*at, self._state.dump(), self._state.records))

    @property
    def cluster(self) -> str:
        return self._state.plan_cluster or os.environ.get(ENV_CLUSTER) or "local"

    def records(self) -> dict[str, RunRecord]:
        """config hash -> RunRecord for every run the journal has seen (a fresh replay)."""
        self.refresh()
        return self._state.records.all()

    def record(self, config_hash: str) -> Optional[RunRecord]:
        """One run's record from the replay as of the last refresh (O(1))."""
        return self._state.records.get(config_hash)

    def records_with_status(self, *statuses: str) -> list[RunRecord]:
        """The records in these states (cheaper than records() on a checkpointed sweep)."""
        self.refresh()
        return self._state.records.with_status(statuses)

    def summary(self) -> list[tuple[str, str, Optional[float], Optional[float]]]:
        """(status, group, start_time, end_time) per record, without building the records."""
        self.refresh()
        return list(self._state.records.summary())

    def plans(self) -> list[PlanInfo]:
        self.refresh()
        return list(self._state.plans.values())

    @property
    def sweep_id(self) -> str:
        self.refresh()
        first = next(iter(self._state.plans.values()), None)
        return (first.op.get("sweep_id") if first else None) or sweep_id_of(self.sweep_dir)

    # -- plan and indices -----------------------------------------------------------------
    def record_plan(self, spec_dict: Mapping, spec_hash: str, counts: Union[Mapping[str, int], int],
                    command: Optional[dict] = None, cluster: Optional[str] = None, *,
                    sweep_id: Optional[str] = None, git: Optional[dict] = None) -> PlanInfo:
        """Journal the plan once per distinct spec (one line whatever its size) and make it the
        plan that `assign` numbers. `counts` is runs per group, optionally with a "total" key
        (or just a total)."""
        from mfcl_sweeps.state import sysinfo

        self.refresh()
        if spec_hash not in self._state.plans:
            by_group = {"default": int(counts)} if isinstance(counts, int) else {k: int(v) for k, v in counts.items()}
            total = by_group.pop("total", None)
            total = sum(by_group.values()) if total is None else total
            command = command or sysinfo.command_info()
            op = {"op": "plan", "t": time.time(), "sweep_id": sweep_id or self.sweep_id, "spec_hash": spec_hash,
                  "count": total, "counts_by_group": by_group, "spec": dict(spec_dict),
                  "command": command, "git": git if git is not None else sysinfo.git_info(command.get("cwd")),
                  "env": sysinfo.redacted_env(), "cluster": cluster or os.environ.get(ENV_CLUSTER) or "local"}
            self.store.append([op])
            self.refresh()
        self._cluster = cluster or os.environ.get(ENV_CLUSTER) or "local"
        self._current = self._state.plans[spec_hash]
        return self._current

    def _earlier_indices(self, plan: PlanInfo) -> dict[str, int]:
        """hash -> index from the index files of the plans recorded before `plan`."""
        out: dict[str, int] = {}
        for info in self._state.plans.values():
            if info is plan:
                break
            text = self.store.plan_index(info.spec_hash)
            if text is None:
                continue  # its driver died before numbering it all; its started runs are journaled
            for line in text.splitlines():
                h, idx = line.split()
                out.setdefault(h, int(idx))
        return out

    def assign(self, runs: Iterable[PlannedRun]) -> Iterator[PlannedRun]:
        """Set index and run_id on each run (lazily), stable per config hash (see module doc)."""
        from mfcl_sweeps.expand import make_run_id

        if self._current is None:
            raise ManifestError(f"{self.sweep_dir}: assign() needs record_plan() first")
        self.refresh()
        plan = self._current
        earlier = self._earlier_indices(plan) if plan is not next(iter(self._state.plans.values())) else {}
        given: list[str] = []
        for counter, run in enumerate(runs):
            h = run.config_hash
            rec = self._state.records.get(h)
            if rec is not None and rec.index >= 0:
                index, run_id = rec.index, rec.run_id or make_run_id(rec.index, run.group, run.combo)
            else:
                index = earlier.get(h, plan.base + (run.position if run.position >= 0 else counter))
                run_id = make_run_id(index, run.group, run.combo)
            given.append(f"{h} {index}\n")
            yield run.with_identity(index, run_id)
        if self.store.plan_index(plan.spec_hash) is None:
            self.store.save_plan_index(plan.spec_hash, "".join(given))

    def planned_hashes(self) -> Optional[set[str]]:
        """Hashes of the current (else latest) plan, when its index file exists."""
        self.refresh()
        if not self._state.plans:
            return None
        plan = self._current or next(reversed(self._state.plans.values()))
        text = self.store.plan_index(plan.spec_hash)
        if text is None:
            return None
        return {line.split(" ", 1)[0] for line in text.splitlines()}

    # -- resume -------------------------------------------------------------------------------
    def should_run(self, run: PlannedRun, resume: str) -> tuple[bool, str]:
        """(run it?, why) for `run` under `resume` (none | skip_completed | rerun_failed_only | skip_finished)."""
        if resume not in model.RESUME_MODES:
            raise ManifestError(f"hydra.sweeper.resume={resume!r}: expected one of {', '.join(model.RESUME_MODES)}")
        self.refresh()
        rec = self._state.records.get(run.config_hash)
        status = rec.status if rec is not None else None
        if resume == "none":
            return True, "resume=none"
        if status == model.COMPLETED:
            return False, "completed"
        if resume == "rerun_failed_only":
            if status is None:  # todo.survey names these: a changed override makes every config new
                return False, "new"
            return (True, "failed before") if status == model.FAILED else (False, "not failed")
        if resume == "skip_finished" and status == model.FAILED:  # `mfcl-sweeps complete` without --retry-failed
            return False, "failed"
        if status in (model.CLAIMED, model.RUNNING) and run_alive(rec) is False:
            return True, "lost (its process is gone)"
        return True, {None: "new", model.FAILED: "failed before", model.CANCELLED: "cancelled before",
                      model.PREEMPTED: "preempted"}.get(status, "interrupted")

    # -- transitions --------------------------------------------------------------------------
    def transition(self, run: Union[PlannedRun, str], status: str, **fields: Any) -> None:
        """Journal `run`'s new state (one line). Fields: host, pid, pgid, backend, backend_job_id,
        job_dir, exit_code, error, attempt, return_value, start_time, end_time, owner, cluster;
        others are kept in the record's `extra`."""
        self.transitions([(run, status, fields)])

    def transitions(self, changes: list[tuple[Union[PlannedRun, str], str, dict]], *, last_words: bool = False) -> None:
        """Journal several runs' new states, (run, status, fields) as `transition` takes them, in
        one append (one write + fsync, or one database transaction): a driver's pending lines for
        a whole submission cost what one line does. `last_words`: see Store.append."""
        ops = [self._transition_op(run, status, fields) for run, status, fields in changes]
        if ops:
            self.store.append(ops, last_words=last_words)
        self._identified.update(op["h"] for op in ops)

    def _transition_op(self, run: Union[PlannedRun, str], status: str, fields: dict) -> dict:
        check_state(status)
        h = run.config_hash if isinstance(run, PlannedRun) else str(run)
        identity = None
        if isinstance(run, PlannedRun):
            known = self._state.records.get(h)
            if h not in self._identified and not (known is not None and known.run_id):
                identity = identity_of(run)
        elif h not in self._state.records:
            self.refresh()
            if h not in self._state.records:
                raise ManifestError(f"{self.sweep_dir}: no run with config hash {h!r} in the journal")
        return transition_op(h, status, fields, identity)

    def interrupt_on_full_disk(self, runs: list[tuple[PlannedRun, int]], error: str) -> None:
        """Journal (run, attempt) pairs `interrupted` with `error`, in one append that may use the
        journal's reserve: the last lines of a sweep a full disk stopped (docs/manifest.md)."""
        now = time.time()
        self.transitions([(run, model.INTERRUPTED, {"end_time": now, "attempt": attempt, "error": error})
                          for run, attempt in runs], last_words=True)

    # -- claims -------------------------------------------------------------------------------
    def claim(self, run: PlannedRun, owner: str, node_rank: Optional[int] = None) -> bool:
        """True when `owner` now holds `run` (the first claim wins; see claims.py). A run whose
        old owner completed it just before going away is not claimed again."""
        stem = run.config_hash + (f".{node_rank}" if node_rank is not None else "")
        generation = self.claims.take(stem, owner, lambda: self._held_elsewhere(run.config_hash))
        if generation is None:
            return False
        if generation == ALREADY_MINE:
            return True
        if generation > 0:
            self.refresh()
            rec = self._state.records.get(run.config_hash)
            if rec is not None and rec.status == model.COMPLETED:
                return False
        where = {"cluster": self._cluster} if self._cluster and self.store.kind != FILE else {}  # runs of many clusters
        # the claiming driver's process: `status` shows the run lost if it dies before the job starts
        self.transition(run, model.CLAIMED, owner=owner, **me(), claim_generation=generation, **where,
                        **({"node_rank": node_rank} if node_rank is not None else {}))
        return True

    def _held_elsewhere(self, config_hash: str) -> bool:
        """A run handed to a scheduler lives as long as its job does, whatever its driver did."""
        if self._still_running is None:
            return False
        self.refresh()
        rec = self._state.records.get(config_hash)
        return rec is not None and rec.status in model.ACTIVE_STATES and bool(rec.backend_job_id) \
            and self._still_running(rec)

    def heartbeat(self, owner: str, *, retired: bool = False) -> None:
        self.claims.heartbeat(owner, retired=retired)

    def retire(self, owner: str) -> None:
        self.claims.retire(owner)

    def start_heartbeat(self, owner: str, interval: Optional[float] = None) -> Callable[[], None]:
        return self.claims.start_heartbeat(owner, interval)

    # -- snapshot -----------------------------------------------------------------------------
    def counts(self) -> dict[str, int]:
        """{"total": n, <status>: n...}; planned runs the journal has not seen count as pending."""
        self.refresh()
        records, plans = self._state.records, self._state.plans
        by_status = Counter(row[0] for row in records.summary())
        planned = self.planned_hashes()
        if planned is not None:
            total = len(planned | records.hashes())
        else:
            latest = next(reversed(plans.values()), None) if plans else None
            total = max(len(records), latest.count if latest else 0)
        by_status[model.PENDING] += total - len(records)
        return {"total": total, **{s: by_status[s] for s in model.SHOWN_STATES if by_status[s]}}

    def snapshot(self) -> dict:
        self.refresh()
        plans = list(self._state.plans.values())
        latest = plans[-1].op if plans else {}
        runs = sorted(self._state.records.all().values(), key=lambda r: (r.index, r.config_hash))
        snap = {
            "version": snapshots.SNAPSHOT_VERSION, "sweep_id": self.sweep_id, "sweep_dir": self.sweep_dir,
            "cluster": self.cluster, "spec": latest.get("spec", {}),
            "plans": [{"spec_hash": p.spec_hash, "count": p.count, "counts_by_group": p.counts_by_group,
                       "base": p.base} for p in plans],
            "command": latest.get("command", {}), "git": latest.get("git", {}), "env": latest.get("env", {}),
            "counts": self.counts(), "runs": [r.to_dict() for r in runs],
        }
        if self.store.kind != FILE:
            # a database sweep seen from this sweep dir: runs of another cluster have their job
            # dirs and logs on that cluster, not here
            here = self._cluster or getattr(self.store, "cluster", None) or self.cluster
            for row in snap["runs"]:
                row["remote"] = bool(row["cluster"] and row["cluster"] != here)
            snap.update(store=self.store.describe(), local_cluster=here)
        return snap

    def write_snapshot(self) -> Path:
        """Rewrite `<sweep_dir>/sweep_manifest.json` atomically, and checkpoint the replay."""
        path = snapshots.write(self.sweep_dir, self.snapshot())
        self.checkpoint()  # snapshot() just refreshed: this is the replay it shows
        return path
