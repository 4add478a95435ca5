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
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Optional, Union

from mfcl_sweeps import model
from mfcl_sweeps.errors import ManifestError
from mfcl_sweeps.state.journal import (HOST, Journal, link_exclusive, pid_start_time, process_alive, read_json_file,
                                 self_test, state_dir)
from mfcl_sweeps.model import PlannedRun
from mfcl_sweeps.state.records import Checkpoint, RecordStore, RunRecord, journal_tail, read_checkpoint, write_checkpoint

__all__ = ["SweepManifest", "RunRecord", "PlanInfo", "load_snapshot", "transition_op", "identity_of"]

SNAPSHOT_NAME = "sweep_manifest.json"
SNAPSHOT_VERSION = 1
RESUME_MODES = ("none", "skip_completed", "rerun_failed_only")
DEFAULT_CLAIM_TIMEOUT_S = 600.0
ENV_CLUSTER = "MFCL_CLUSTER"
ACTIVE_STATES = (model.PENDING, model.CLAIMED, model.RUNNING)
CHECKPOINT_AFTER_OPS = 20_000

# transition fields that set a RunRecord attribute; any other field is kept in `extra`
_FIELDS = ("host", "pid", "pgid", "backend", "backend_job_id", "job_dir", "exit_code", "error", "attempt",
           "return_value", "owner", "cluster", "start_time", "end_time", "stderr_tail")
_IDENTITY = ("run_id", "index", "group", "name", "overrides", "budget", "metadata")


@dataclass
class PlanInfo:
    spec_hash: str
    base: int
    count: int
    counts_by_group: dict
    op: dict  # the whole plan op (spec, command, git, env, cluster, sweep_id)


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


def _dir_sweep_id(sweep_dir: str) -> str:
    parts = Path(sweep_dir).parts
    return "_".join(parts[-2:]) if len(parts) >= 2 else parts[-1]


def _safe_name(owner: str) -> str:
    import hashlib

    slug = re.sub(r"[^A-Za-z0-9_.-]", "_", owner)[:80]
    return f"{slug}-{hashlib.sha1(owner.encode()).hexdigest()[:8]}"


def atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def backend_hook(backend: Optional[str], name: str) -> Optional[Callable]:
    """`name` of backend `backend`, or None when that backend has no such hook."""
    from mfcl_sweeps import backends

    return backends.hook(backend, name)


class SweepManifest:
    """Journal replay, index assignment, resume decisions, claims and the snapshot of one sweep dir.

    Creating one is cheap and writes nothing; state is read from the journal on demand, and
    only the ops appended since the previous read are parsed.
    """

    def __init__(self, sweep_dir: Union[str, os.PathLike], *, claim_timeout: float = DEFAULT_CLAIM_TIMEOUT_S,
                 lock_grace: Optional[float] = None) -> None:
        self.sweep_dir = os.path.abspath(os.fspath(sweep_dir))
        self.state_dir = state_dir(self.sweep_dir)
        self.claim_timeout = float(claim_timeout)
        self.journal = Journal(self.sweep_dir, lock_grace)
        self._records = RecordStore()
        self._plans: dict[str, PlanInfo] = {}  # in journal order
        self._next_free = 0  # lowest index above every index given so far
        self._current: Optional[PlanInfo] = None
        self._identified: set[str] = set()  # hashes whose identity this object has journaled
        self._claims_ready = False
        self._plan_cluster: Optional[str] = None  # the latest plan's cluster

    # -- replay -------------------------------------------------------------------------------
    def refresh(self) -> int:
        """Apply the ops appended since the last refresh; return how many there were."""
        if self.journal.lines_read == 0 and not self._plans and not len(self._records):
            self._load_checkpoint()
        ops = self.journal.read_new()
        for op in ops:
            kind = op.get("op")
            if kind == "t":
                self._apply_transition(op)
            elif kind == "plan":
                self._apply_plan(op)
        if len(ops) >= CHECKPOINT_AFTER_OPS:
            try:  # a long replay is worth keeping for the next reader
                self.checkpoint()
            except OSError:
                pass  # a read-only sweep dir: replay from the journal each time
        return len(ops)

    def _load_checkpoint(self) -> None:
        cp = read_checkpoint(self.state_dir, self.journal.path)
        if cp is None:
            return
        for spec_hash, base, count, by_group, op in cp.state["plans"]:
            self._plans[spec_hash] = PlanInfo(spec_hash, base, count, by_group, op)
        self._next_free, self._plan_cluster = cp.state["next_free"], cp.state["plan_cluster"]
        self._records = cp.records
        self.journal.resume_at(cp.ino, cp.offset, cp.lines)

    def checkpoint(self) -> None:
        """Save this replay (see records.py) so later readers parse only newer journal lines."""
        ino, offset, lines = self.journal.position()
        if not lines:
            return
        state = {"plans": [(p.spec_hash, p.base, p.count, p.counts_by_group, p.op) for p in self._plans.values()],
                 "next_free": self._next_free, "plan_cluster": self._plan_cluster}
        write_checkpoint(self.state_dir, self.journal.path,
                         Checkpoint(ino, offset, lines, journal_tail(self.journal.path, offset), state, self._records))

    def _apply_plan(self, op: dict) -> None:
        if op["spec_hash"] in self._plans:
            return
        info = PlanInfo(op["spec_hash"], self._next_free, int(op["count"]), op.get("counts_by_group") or {}, op)
        self._plans[info.spec_hash] = info
        self._next_free += info.count
        self._plan_cluster = op.get("cluster") or self._plan_cluster

    def _apply_transition(self, op: dict) -> None:
        h = op["h"]
        rec = self._records.get(h)
        if rec is None:
            rec = RunRecord(h, cluster=self._plan_cluster)
            self._records.add(rec)
        ident = op.get("id")
        if ident and not rec.run_id:
            for k in _IDENTITY:
                if k in ident:
                    setattr(rec, k, ident[k])
            if rec.index >= self._next_free:
                self._next_free = rec.index + 1
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
            if k in _FIELDS:
                setattr(rec, k, v)
            else:
                rec.extra[k] = v

    @property
    def cluster(self) -> str:
        return self._plan_cluster or os.environ.get(ENV_CLUSTER) or "local"

    def records(self) -> dict[str, RunRecord]:
        """config hash -> RunRecord for every run the journal has seen (a fresh replay)."""
        self.refresh()
        return self._records.all()

    def records_with_status(self, *statuses: str) -> list[RunRecord]:
        """The records in these states (cheaper than records() on a checkpointed sweep)."""
        self.refresh()
        return self._records.with_status(statuses)

    def summary(self) -> list[tuple[str, str, Optional[float], Optional[float]]]:
        """(status, group, start_time, end_time) per record, without building the records."""
        self.refresh()
        return list(self._records.summary())

    def plans(self) -> list[PlanInfo]:
        self.refresh()
        return list(self._plans.values())

    @property
    def sweep_id(self) -> str:
        self.refresh()
        first = next(iter(self._plans.values()), None)
        return (first.op.get("sweep_id") if first else None) or _dir_sweep_id(self.sweep_dir)

    # -- plan and indices -----------------------------------------------------------------
    def record_plan(self, spec_dict: Mapping, spec_hash: str, counts: Union[Mapping[str, int], int],
                    command: Optional[dict] = None, cluster: Optional[str] = None, *,
                    sweep_id: Optional[str] = None, git: Optional[dict] = None) -> PlanInfo:
        """Journal the plan once per distinct spec (one line whatever its size) and make it the
        plan that `assign` numbers. `counts` is runs per group, optionally with a "total" key
        (or just a total)."""
        from mfcl_sweeps.state import sysinfo

        self.refresh()
        if spec_hash not in self._plans:
            by_group = {"default": int(counts)} if isinstance(counts, int) else {k: int(v) for k, v in counts.items()}
            total = by_group.pop("total", None)
            total = sum(by_group.values()) if total is None else total
            command = command or sysinfo.command_info()
            op = {"op": "plan", "t": time.time(), "sweep_id": sweep_id or self.sweep_id, "spec_hash": spec_hash,
                  "count": total, "counts_by_group": by_group, "spec": dict(spec_dict),
                  "command": command, "git": git if git is not None else sysinfo.git_info(command.get("cwd")),
                  "env": sysinfo.redacted_env(), "cluster": cluster or os.environ.get(ENV_CLUSTER) or "local"}
            self.journal.append([op])
            self.refresh()
        self._current = self._plans[spec_hash]
        return self._current

    def _plan_index_path(self, spec_hash: str) -> Path:
        return self.state_dir / "plans" / f"{spec_hash}.idx"

    def _earlier_indices(self, plan: PlanInfo) -> dict[str, int]:
        """hash -> index from the index files of the plans recorded before `plan`."""
        out: dict[str, int] = {}
        for info in self._plans.values():
            if info is plan:
                break
            try:
                text = self._plan_index_path(info.spec_hash).read_text()
            except FileNotFoundError:
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
        earlier = self._earlier_indices(plan) if plan is not next(iter(self._plans.values())) else {}
        given: list[str] = []
        for counter, run in enumerate(runs):
            h = run.config_hash
            rec = self._records.get(h)
            if rec is not None and rec.index >= 0:
                index, run_id = rec.index, rec.run_id or make_run_id(rec.index, run.group, run.combo)
            else:
                index = earlier.get(h, plan.base + (run.position if run.position >= 0 else counter))
                run_id = make_run_id(index, run.group, run.combo)
            given.append(f"{h} {index}\n")
            yield run.with_identity(index, run_id)
        path = self._plan_index_path(plan.spec_hash)
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(path, "".join(given))

    def planned_hashes(self) -> Optional[set[str]]:
        """Hashes of the current (else latest) plan, when its index file exists."""
        self.refresh()
        if not self._plans:
            return None
        plan = self._current or next(reversed(self._plans.values()))
        try:
            return {line.split(" ", 1)[0] for line in self._plan_index_path(plan.spec_hash).read_text().splitlines()}
        except FileNotFoundError:
            return None

    # -- resume -------------------------------------------------------------------------------
    def should_run(self, run: PlannedRun, resume: str) -> tuple[bool, str]:
        """(run it?, why) for `run` under `resume` (none | skip_completed | rerun_failed_only)."""
        if resume not in RESUME_MODES:
            raise ManifestError(f"hydra.sweeper.resume={resume!r}: expected one of {', '.join(RESUME_MODES)}")
        self.refresh()
        rec = self._records.get(run.config_hash)
        status = rec.status if rec is not None else None
        if resume == "none":
            return True, "resume=none"
        if status == model.COMPLETED:
            return False, "completed"
        if resume == "rerun_failed_only":
            return (True, "failed before") if status == model.FAILED else (False, "not failed")
        return True, {None: "new", model.FAILED: "failed before", model.CANCELLED: "cancelled before",
                      model.PREEMPTED: "preempted"}.get(status, "interrupted")

    # -- transitions --------------------------------------------------------------------------
    def transition(self, run: Union[PlannedRun, str], status: str, **fields: Any) -> None:
        """Journal `run`'s new state (one line). Fields: host, pid, pgid, backend, backend_job_id,
        job_dir, exit_code, error, attempt, return_value, start_time, end_time, owner, cluster;
        others are kept in the record's `extra`."""
        if status not in model.RUN_STATES:
            raise ManifestError(f"run state {status!r}: expected one of {', '.join(model.RUN_STATES)}")
        h = run.config_hash if isinstance(run, PlannedRun) else str(run)
        identity = None
        if isinstance(run, PlannedRun):
            known = self._records.get(h)
            if h not in self._identified and not (known is not None and known.run_id):
                identity = identity_of(run)
        elif h not in self._records:
            self.refresh()
            if h not in self._records:
                raise ManifestError(f"{self.sweep_dir}: no run with config hash {h!r} in the journal")
        self.journal.append([transition_op(h, status, fields, identity)])
        self._identified.add(h)

    # -- claims -------------------------------------------------------------------------------
    @property
    def claims_dir(self) -> Path:
        return self.state_dir / "claims"

    @property
    def owners_dir(self) -> Path:
        return self.state_dir / "owners"

    def _open_claims(self) -> None:
        if not self._claims_ready:
            self.claims_dir.mkdir(parents=True, exist_ok=True)
            self.owners_dir.mkdir(parents=True, exist_ok=True)
            self_test(self.claims_dir)
            self._claims_ready = True

    def claim(self, run: PlannedRun, owner: str, node_rank: Optional[int] = None) -> bool:
        """True when `owner` now holds `run` (the first claim wins). A claim whose owner is gone
        (retired, a dead process of this host, or no heartbeat for `claim_timeout`) is taken over
        by creating the next claim generation: exactly one contender creates it, the others
        get False and must not run the run."""
        self._open_claims()
        stem = run.config_hash + (f".{node_rank}" if node_rank is not None else "")
        me = {"owner": owner, "host": HOST, "pid": os.getpid(), "pid_start": pid_start_time(os.getpid()),
              "t": time.time()}
        generation = 0
        while True:
            path = self.claims_dir / (stem if generation == 0 else f"{stem}@{generation}")
            if link_exclusive(path, me):
                break
            if (self.claims_dir / f"{stem}@{generation + 1}").exists():
                generation += 1
                continue
            holder = read_json_file(path) or {}
            if holder.get("owner") == owner:
                self.heartbeat(owner)
                return True
            if not self._holder_gone(holder, path, run.config_hash):
                return False
            generation += 1
        self.heartbeat(owner)
        if generation > 0:
            self.refresh()  # its old owner may have completed it just before going away
            rec = self._records.get(run.config_hash)
            if rec is not None and rec.status == model.COMPLETED:
                return False
        self.transition(run, model.CLAIMED, owner=owner, host=HOST, claim_generation=generation,
                        **({"node_rank": node_rank} if node_rank is not None else {}))
        return True

    def _owner_path(self, owner: str) -> Path:
        return self.owners_dir / f"{_safe_name(owner)}.json"

    def heartbeat(self, owner: str, *, retired: bool = False) -> None:
        """Say that `owner` is alive (or, with retired=True, gone for good: its claims are free)."""
        self.owners_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self._owner_path(owner), json.dumps(
            {"owner": owner, "host": HOST, "pid": os.getpid(), "pid_start": pid_start_time(os.getpid()),
             "t": time.time(), "retired": retired}))

    def retire(self, owner: str) -> None:
        self.heartbeat(owner, retired=True)

    def start_heartbeat(self, owner: str, interval: Optional[float] = None) -> Callable[[], None]:
        """Heartbeat `owner` from a daemon thread; returns stop(), which also retires the owner."""
        interval = interval or min(60.0, max(0.5, self.claim_timeout / 4))
        stop = threading.Event()

        def beat() -> None:
            while not stop.wait(interval):
                self.heartbeat(owner)

        thread = threading.Thread(target=beat, name=f"mfcl-heartbeat-{owner}", daemon=True)
        self.heartbeat(owner)
        thread.start()

        def stopper() -> None:
            stop.set()
            thread.join()
            self.retire(owner)

        return stopper

    def _filesystem_now(self) -> float:
        """Now on the sweep filesystem's clock (the mtime it gives a file just written), so
        heartbeat ages are measured without trusting that hosts' clocks agree."""
        probe = self.owners_dir / f".clock-{HOST}-{os.getpid()}"
        with open(probe, "w") as f:
            f.write("x")
        return os.stat(probe).st_mtime

    def _holder_gone(self, holder: dict, claim_path: Path, config_hash: str) -> bool:
        owner = holder.get("owner")
        beat = read_json_file(self._owner_path(owner)) if owner else None
        if beat and beat.get("retired"):
            gone = True
        else:
            who = beat or holder
            alive = process_alive(who.get("host"), who.get("pid"), who.get("pid_start"))
            if alive is None:  # another host: judge by the age of its last heartbeat
                try:
                    last = os.stat(self._owner_path(owner) if beat else claim_path).st_mtime
                except FileNotFoundError:
                    return False
                alive = self._filesystem_now() - last <= self.claim_timeout
            gone = not alive
        return gone and not self._backend_still_running(config_hash)

    def _backend_still_running(self, config_hash: str) -> bool:
        """A run handed to a scheduler lives as long as its job does, whatever its driver did."""
        self.refresh()
        rec = self._records.get(config_hash)
        if rec is None or rec.status not in ACTIVE_STATES or not rec.backend_job_id:
            return False
        refresh = backend_hook(rec.backend, "refresh_records")
        if refresh is None:
            return False
        fields = (refresh([rec]) or {}).get(config_hash, {})
        return fields.get("status", rec.status) in ACTIVE_STATES

    # -- snapshot -----------------------------------------------------------------------------
    def counts(self) -> dict[str, int]:
        """{"total": n, <status>: n...}; planned runs the journal has not seen count as pending."""
        self.refresh()
        by_status = Counter(row[0] for row in self._records.summary())
        planned = self.planned_hashes()
        if planned is not None:
            total = len(planned | self._records.hashes())
        else:
            latest = next(reversed(self._plans.values()), None) if self._plans else None
            total = max(len(self._records), latest.count if latest else 0)
        by_status[model.PENDING] += total - len(self._records)
        return {"total": total, **{s: by_status[s] for s in model.RUN_STATES if by_status[s]}}

    def snapshot(self) -> dict:
        self.refresh()
        plans = list(self._plans.values())
        latest = plans[-1].op if plans else {}
        runs = sorted(self._records.all().values(), key=lambda r: (r.index, r.config_hash))
        return {
            "version": SNAPSHOT_VERSION, "sweep_id": self.sweep_id, "sweep_dir": self.sweep_dir,
            "cluster": self.cluster, "spec": latest.get("spec", {}),
            "plans": [{"spec_hash": p.spec_hash, "count": p.count, "counts_by_group": p.counts_by_group,
                       "base": p.base} for p in plans],
            "command": latest.get("command", {}), "git": latest.get("git", {}), "env": latest.get("env", {}),
            "counts": self.counts(), "runs": [r.to_dict() for r in runs],
        }

    def write_snapshot(self) -> Path:
        """Rewrite `<sweep_dir>/sweep_manifest.json` atomically (temp file + rename), one run per
        line (json's indenting encoder is pure Python: 20x slower on 100,000 runs); and checkpoint
        the replay."""
        snap = self.snapshot()
        runs = snap.pop("runs")
        head = json.dumps(snap, indent=1, default=str)
        body = ",\n".join("  " + json.dumps(r, default=str) for r in runs)
        path = Path(self.sweep_dir) / SNAPSHOT_NAME
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, head[:-2] + ',\n "runs": [\n' + body + ("\n" if runs else "") + " ]\n}\n")
        self.checkpoint()  # snapshot() just refreshed: this is the replay it shows
        return path


def load_snapshot(sweep_dir: Union[str, os.PathLike]) -> dict:
    path = Path(sweep_dir) / SNAPSHOT_NAME
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ManifestError(f"{path}: no sweep manifest here; is {sweep_dir} a sweep dir?") from None
    except ValueError as err:
        raise ManifestError(f"{path}: unreadable sweep manifest ({err})") from None
