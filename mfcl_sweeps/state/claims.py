"""Exactly-once claims for claim-mode workers: first claim wins; a gone holder's claim is taken
over by exactly one contender; heartbeats say who is alive.

A claim is a file made with `link()` (journal.link_exclusive) in `.mfcl/claims/`; taking over
creates the next generation (`<hash>@<n>`), so of the contenders that judged a holder gone,
exactly one creates that name. Heartbeat ages are read on the sweep filesystem's clock (the
mtime it gives a file just written), so hosts' clocks need not agree. Whether a run still lives
in a scheduler is not this module's business: takeover asks the `still_held` callable it is given.

The rules (`ClaimRules`) are apart from where claims live: `ClaimBook` keeps them in files,
`pg_claims.PgClaimBook` in a database (state/pg.py), with the same generations and heartbeats.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import threading
import time
from pathlib import Path
from typing import Callable, Optional

from mfcl_sweeps.fsio import atomic_write
from mfcl_sweeps.layout import SweepLayout
from mfcl_sweeps.liveness import HOST, pid_start_time, process_alive
from mfcl_sweeps.state.journal import link_exclusive, read_json_file, self_test

DEFAULT_CLAIM_TIMEOUT_S = 600.0
ALREADY_MINE = -1  # take(): the owner held this claim already


def _safe_name(owner: str) -> str:
    slug = re.sub(r"[^A-Za-z0-9_.-]", "_", owner)[:80]
    return f"{slug}-{hashlib.sha1(owner.encode()).hexdigest()[:8]}"


def owner_info(owner: str) -> dict:
    """Who `owner` is: its host and process (a claim or heartbeat carries it)."""
    return {"owner": owner, "host": HOST, "pid": os.getpid(), "pid_start": pid_start_time(os.getpid()),
            "t": time.time()}


class ClaimRules:
    """First claim wins; a gone holder is taken over through the next generation. Subclasses say
    where claims and heartbeats live (`_create`, `_exists`, `_holder`, `_beat`, `_age`, `heartbeat`)."""

    claim_timeout: float

    def _open(self) -> None:
        """Prepare the claim store before the first claim (a subclass may check it)."""

    def _create(self, stem: str, generation: int, owner: str) -> bool:
        raise NotImplementedError

    def _exists(self, stem: str, generation: int) -> bool:
        raise NotImplementedError

    def _holder(self, stem: str, generation: int) -> Optional[dict]:
        raise NotImplementedError

    def _beat(self, owner: str) -> Optional[dict]:
        """The owner's last heartbeat (host, pid, pid_start, retired), None if it never beat."""
        raise NotImplementedError

    def _age(self, owner: Optional[str], stem: str, generation: int) -> Optional[float]:
        """Seconds since the owner's last heartbeat (owner None: since the claim was made), on
        the store's own clock; None when that cannot be read."""
        raise NotImplementedError

    def heartbeat(self, owner: str, *, retired: bool = False) -> None:
        raise NotImplementedError

    def take(self, stem: str, owner: str, still_held: Callable[[], bool]) -> Optional[int]:
        """The claim generation `owner` now holds for `stem` (ALREADY_MINE if it held it before),
        or None when another live owner holds it. `still_held()` is asked before a gone
        holder's claim is taken over: True keeps the claim where it is."""
        self._open()
        generation = 0
        while True:
            if self._create(stem, generation, owner):
                break
            if self._exists(stem, generation + 1):
                generation += 1
                continue
            holder = self._holder(stem, generation) or {}
            if holder.get("owner") == owner:
                self.heartbeat(owner)
                return ALREADY_MINE
            if not self._holder_gone(holder, stem, generation) or still_held():
                return None
            generation += 1
        self.heartbeat(owner)
        return generation

    def _holder_gone(self, holder: dict, stem: str, generation: int) -> bool:
        """Retired, a dead process of this host (zombies included), or no heartbeat for
        `claim_timeout` from another host."""
        owner = holder.get("owner")
        beat = self._beat(owner) if owner else None
        if beat and beat.get("retired"):
            return True
        who = beat or holder
        alive = process_alive(who.get("host"), who.get("pid"), who.get("pid_start"))
        if alive is None:  # another host: judge by the age of its last heartbeat
            age = self._age(owner if beat else None, stem, generation)
            if age is None:
                return False
            alive = age <= self.claim_timeout
        return not alive

    def retire(self, owner: str) -> None:
        self.heartbeat(owner, retired=True)

    def beat_safely(self, owner: str) -> None:
        """One heartbeat from the heartbeat thread (a subclass may survive a store outage)."""
        self.heartbeat(owner)

    def start_heartbeat(self, owner: str, interval: Optional[float] = None) -> Callable[[], None]:
        """Heartbeat `owner` from a daemon thread; returns stop(), which also retires the owner."""
        interval = interval or min(60.0, max(0.5, self.claim_timeout / 4))
        stop = threading.Event()

        def beat() -> None:
            while not stop.wait(interval):
                self.beat_safely(owner)

        thread = threading.Thread(target=beat, name=f"mfcl-heartbeat-{owner}", daemon=True)
        self.heartbeat(owner)
        thread.start()

        def stopper() -> None:
            stop.set()
            thread.join()
            self.retire(owner)

        return stopper


class ClaimBook(ClaimRules):
    """Claims as files made with link() in `.mfcl/claims/`, heartbeats as `.mfcl/owners/*.json`."""

    def __init__(self, layout: SweepLayout, claim_timeout: float = DEFAULT_CLAIM_TIMEOUT_S) -> None:
        self.claims_dir, self.owners_dir = Path(layout.claims), Path(layout.owners)
        self.claim_timeout = float(claim_timeout)
        self._ready = False

    def _open(self) -> None:
        if not self._ready:
            self.claims_dir.mkdir(parents=True, exist_ok=True)
            self.owners_dir.mkdir(parents=True, exist_ok=True)
            self_test(self.claims_dir)
            self._ready = True

    def _path(self, stem: str, generation: int) -> Path:
        return self.claims_dir / (stem if generation == 0 else f"{stem}@{generation}")

    def _create(self, stem: str, generation: int, owner: str) -> bool:
        return link_exclusive(self._path(stem, generation), owner_info(owner))

    def _exists(self, stem: str, generation: int) -> bool:
        return self._path(stem, generation).exists()

    def _holder(self, stem: str, generation: int) -> Optional[dict]:
        return read_json_file(self._path(stem, generation))

    def _beat(self, owner: str) -> Optional[dict]:
        return read_json_file(self._owner_path(owner))

    def _age(self, owner: Optional[str], stem: str, generation: int) -> Optional[float]:
        try:
            last = os.stat(self._owner_path(owner) if owner else self._path(stem, generation)).st_mtime
        except FileNotFoundError:
            return None
        return self._filesystem_now() - last

    # -- owners -------------------------------------------------------------------------------
    def _owner_path(self, owner: str) -> Path:
        return self.owners_dir / f"{_safe_name(owner)}.json"

    def heartbeat(self, owner: str, *, retired: bool = False) -> None:
        """Say that `owner` is alive (or, with retired=True, gone for good: its claims are free)."""
        self.owners_dir.mkdir(parents=True, exist_ok=True)
        atomic_write(self._owner_path(owner), json.dumps({**owner_info(owner), "retired": retired}))

    def _filesystem_now(self) -> float:
        probe = self.owners_dir / f".clock-{HOST}-{os.getpid()}"
        with open(probe, "w") as f:
            f.write("x")
        return os.stat(probe).st_mtime
