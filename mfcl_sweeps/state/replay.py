"""The journal's meaning: a pure reducer from ops to plans and run records (no I/O), as Optuna's
JournalStorageReplayResult. Everything a sweep dir "is" is `SweepState` after its ops."""
from __future__ import annotations

import dataclasses
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any, Mapping, Optional

from mfcl_sweeps import model
from mfcl_sweeps.errors import ManifestError
from mfcl_sweeps.model import PlannedRun
from mfcl_sweeps.state.records import TRANSITION_FIELDS, RecordStore, RunRecord

FIELDS = tuple(TRANSITION_FIELDS)  # transition fields that set a RunRecord attribute; others go to `extra`
IDENTITY = ("run_id", "index", "group", "name", "overrides", "budget", "metadata")


@dataclass
class PlanInfo:
    spec_hash: str
    base: int
    count: int
    counts_by_group: dict
    op: dict  # the whole plan op (spec, command, git, env, cluster, sweep_id)


UNSEEN_GROUP = "(not started)"  # status row of planned runs whose group the plan did not count


def spread_unseen(groups: dict[str, Counter], plan: Optional[PlanInfo], unseen: int) -> None:
    """Count the `unseen` planned runs (the journal has no line of them yet) as pending in their
    groups, from the plan's runs per group; any no group accounts for go to UNSEEN_GROUP. A plan
    line's groups are used only if its own spec has them: journals written before plans were
    counted per group say {"default": N} for every sweep, which would show a phantom group."""
    by_group = plan.counts_by_group if plan is not None else {}
    spec_groups = {b.get("group") for b in (plan.op.get("spec") or {}).get("blocks") or []} if plan else set()
    if spec_groups and not set(by_group) <= spec_groups:
        by_group = {}
    for group, n in by_group.items():
        add = min(unseen, max(0, n - sum(groups[group].values()))) if group in groups else min(unseen, n)
        if add:
            groups[group][model.PENDING] += add
            unseen -= add
    if unseen > 0:
        groups[UNSEEN_GROUP][model.PENDING] += unseen


def identity_of(run: PlannedRun) -> dict:
    budget = dataclasses.asdict(run.budget) if run.budget is not None else None
    return {"run_id": run.run_id, "index": run.index, "group": run.group, "name": run.name,
            "overrides": list(run.overrides), "budget": budget, "metadata": dict(run.metadata)}


def transition_op(config_hash: str, status: str, fields: Mapping[str, Any],
                  identity: Optional[dict] = None) -> dict:
    """The journal line of one state change (identity only on a run's first line)."""
    op: dict[str, Any] = {"op": "t", "h": config_hash, "s": status, "t": time.time()}
    if fields:
        op["f"] = dict(fields)
    if identity is not None:
        op["id"] = identity
    return op


class SweepState:
    """Plans (in journal order), run records, and the lowest index above every index given."""

    def __init__(self) -> None:
        self.records = RecordStore()
        self.plans: dict[str, PlanInfo] = {}
        self.next_free = 0
        self.plan_cluster: Optional[str] = None  # the latest plan's cluster

    def apply(self, op: dict) -> None:
        kind = op.get("op")
        if kind == "t":
            self._apply_transition(op)
        elif kind == "plan":
            self._apply_plan(op)

    # -- checkpoint form (see records.py): plain data only
    def dump(self) -> dict:
        return {"plans": [(p.spec_hash, p.base, p.count, p.counts_by_group, p.op) for p in self.plans.values()],
                "next_free": self.next_free, "plan_cluster": self.plan_cluster}

    def load(self, state: dict, records: RecordStore) -> None:
        for spec_hash, base, count, by_group, op in state["plans"]:
            self.plans[spec_hash] = PlanInfo(spec_hash, base, count, by_group, op)
        self.next_free, self.plan_cluster = state["next_free"], state["plan_cluster"]
        self.records = records

    def _apply_plan(self, op: dict) -> None:
        if op["spec_hash"] in self.plans:
            return
        info = PlanInfo(op["spec_hash"], self.next_free, int(op["count"]), op.get("counts_by_group") or {}, op)
        self.plans[info.spec_hash] = info
        self.next_free += info.count
        self.plan_cluster = op.get("cluster") or self.plan_cluster

    def _apply_transition(self, op: dict) -> None:
        h = op["h"]
        rec = self.records.get(h)
        if rec is None:
            rec = RunRecord(h, cluster=self.plan_cluster)
            self.records.add(rec)
        ident = op.get("id")
        if ident and not rec.run_id:
            for k in IDENTITY:
                if k in ident:
                    setattr(rec, k, ident[k])
            if rec.index >= self.next_free:
                self.next_free = rec.index + 1
        status, t, fields = op["s"], op["t"], op.get("f") or {}
        if rec.status == model.CANCELLED and status == model.FAILED:
            return  # the kill that cancelled it, as reported by its driver: cancelled stays
        if status == model.RUNNING:
            rec.attempts += 1
            rec.start_time, rec.end_time, rec.exit_code, rec.error, rec.stderr_tail = t, None, None, None, None
        elif status == model.PREEMPTED:
            rec.preemptions += 1
        if status in model.FINAL_STATES or status == model.PREEMPTED:
            rec.end_time = t
        rec.status = status
        for k, v in fields.items():
            if k in FIELDS:
                setattr(rec, k, v)
            else:
                rec.extra[k] = v


def check_state(status: str) -> None:
    if status not in model.RUN_STATES:
        raise ManifestError(f"run state {status!r}: expected one of {', '.join(model.RUN_STATES)}")
