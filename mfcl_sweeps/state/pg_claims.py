"""Claims and heartbeats in the database store (pg.py), under the rules of claims.ClaimRules.

A claim generation is a row of `mfcl_claims`; its primary key (sweep, stem, generation) makes
the first INSERT win, as link() does for claim files. Each INSERT carries a fresh token, so a
claim retried after a lost acknowledgement is recognised as this call's own. Heartbeats are
rows of `mfcl_owners` stamped with the database's `now()`: ages are measured on one clock,
whatever the clocks of the clusters' hosts say.
"""
from __future__ import annotations

import logging
import uuid
from typing import Any, Optional

from mfcl_sweeps.errors import StoreError
from mfcl_sweeps.state import claims as claim_rules

log = logging.getLogger("mfcl_sweeps")


class PgClaimBook(claim_rules.ClaimRules):
    def __init__(self, store: Any, claim_timeout: float) -> None:  # a pg.PgStore (no import: no cycle)
        self.store = store
        self.claim_timeout = float(claim_timeout)

    def _create(self, stem: str, generation: int, owner: str) -> bool:
        me, token = claim_rules.owner_info(owner), str(uuid.uuid4())

        def work(conn: Any) -> bool:
            made = conn.execute(
                "INSERT INTO mfcl_claims (sweep, stem, generation, owner, token, host, pid, pid_start) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING RETURNING 1",
                (self.store.sweep, stem, generation, owner, token, me["host"], me["pid"], me["pid_start"])).fetchone()
            if made:
                return True
            row = conn.execute("SELECT token FROM mfcl_claims WHERE sweep = %s AND stem = %s AND generation = %s",
                               (self.store.sweep, stem, generation)).fetchone()
            return row is not None and str(row[0]) == token  # ours, made by a try whose answer was lost

        return self.store.run(work)

    def _exists(self, stem: str, generation: int) -> bool:
        return bool(self.store.run(lambda conn: conn.execute(
            "SELECT 1 FROM mfcl_claims WHERE sweep = %s AND stem = %s AND generation = %s",
            (self.store.sweep, stem, generation)).fetchone()))

    def _holder(self, stem: str, generation: int) -> Optional[dict]:
        row = self.store.run(lambda conn: conn.execute(
            "SELECT owner, host, pid, pid_start FROM mfcl_claims WHERE sweep = %s AND stem = %s AND generation = %s",
            (self.store.sweep, stem, generation)).fetchone())
        return dict(zip(("owner", "host", "pid", "pid_start"), row)) if row else None

    def _beat(self, owner: str) -> Optional[dict]:
        row = self.store.run(lambda conn: conn.execute(
            "SELECT host, pid, pid_start, retired FROM mfcl_owners WHERE sweep = %s AND owner = %s",
            (self.store.sweep, owner)).fetchone())
        return dict(zip(("host", "pid", "pid_start", "retired"), row)) if row else None

    def _age(self, owner: Optional[str], stem: str, generation: int) -> Optional[float]:
        if owner is not None:
            query, args = "SELECT extract(epoch FROM now() - beat) FROM mfcl_owners WHERE sweep = %s AND owner = %s", \
                (self.store.sweep, owner)
        else:
            query, args = ("SELECT extract(epoch FROM now() - t) FROM mfcl_claims "
                           "WHERE sweep = %s AND stem = %s AND generation = %s", (self.store.sweep, stem, generation))
        row = self.store.run(lambda conn: conn.execute(query, args).fetchone())
        return float(row[0]) if row else None

    def heartbeat(self, owner: str, *, retired: bool = False) -> None:
        me = claim_rules.owner_info(owner)
        self.store.run(lambda conn: conn.execute(
            "INSERT INTO mfcl_owners (sweep, owner, host, pid, pid_start, retired, beat) "
            "VALUES (%s, %s, %s, %s, %s, %s, now()) ON CONFLICT (sweep, owner) DO UPDATE SET host = excluded.host, "
            "pid = excluded.pid, pid_start = excluded.pid_start, retired = excluded.retired, beat = now()",
            (self.store.sweep, owner, me["host"], me["pid"], me["pid_start"], retired)))

    def beat_safely(self, owner: str) -> None:
        """A heartbeat that outlived the store's retries: say so and try again next time (the
        run goes on; if the outage outlasts claim_timeout, another worker may take the claim over)."""
        try:
            self.heartbeat(owner)
        except StoreError as err:
            log.warning("mfcl: heartbeat of %s not recorded: %s", owner, err)
