"""A sweep's state in PostgreSQL (psycopg 3): the same ops, plan indices and claims as the file
journal, for sweeps that run on clusters sharing no filesystem (docs/store.md).

Tables (schema versioned in `mfcl_schema`, migrated here at connect under an advisory lock):
`mfcl_sweeps` (one row per sweep name: its next op number), `mfcl_ops` (the journal: one row per
op, the same JSON text as a journal line), `mfcl_plan_index` (the `.idx` text of each plan),
`mfcl_claims` (one row per claim generation; the primary key makes the first claim win) and
`mfcl_owners` (heartbeats, timed by the database's clock `now()`).

Ops are numbered under the sweep row's lock, so they commit in number order and a reader that
asks for "after n" never skips one still in flight. Every op carries a client-made uuid, so an
append retried after a lost acknowledgement is not written twice.

Faults: opening fails at once with one line (bad URL, unreachable, wrong password, missing
database); later, a lost connection is retried with backoff for `$MFCL_STORE_RETRY_S` seconds
(default 600), then fails with one line.
"""
from __future__ import annotations

import json
import logging
import os
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Optional, TypeVar

from mfcl_sweeps.errors import StoreError
from mfcl_sweeps.secrets import redact
from mfcl_sweeps.state.claims import DEFAULT_CLAIM_TIMEOUT_S
from mfcl_sweeps.state.records import Checkpoint, load_checkpoint
from mfcl_sweeps.state.storeurl import StoreURL

log = logging.getLogger("mfcl_sweeps")
T = TypeVar("T")

ENV_RETRY = "MFCL_STORE_RETRY_S"
DEFAULT_RETRY_S = 600.0
CONNECT_TIMEOUT_S = 10
ADVISORY_LOCK = 0x6D66636C  # "mfcl": serializes schema migrations between processes

# Each entry moves the schema one version up; never edit a released entry, append a new one.
MIGRATIONS = [
    """
    CREATE TABLE mfcl_sweeps (
        id bigserial PRIMARY KEY, name text NOT NULL UNIQUE, next_seq bigint NOT NULL DEFAULT 0,
        created timestamptz NOT NULL DEFAULT now());
    CREATE TABLE mfcl_ops (
        sweep bigint NOT NULL REFERENCES mfcl_sweeps(id) ON DELETE CASCADE, seq bigint NOT NULL,
        uid uuid NOT NULL, op text NOT NULL, PRIMARY KEY (sweep, seq), UNIQUE (sweep, uid));
    CREATE TABLE mfcl_plan_index (
        sweep bigint NOT NULL REFERENCES mfcl_sweeps(id) ON DELETE CASCADE, spec_hash text NOT NULL,
        body text NOT NULL, PRIMARY KEY (sweep, spec_hash));
    CREATE TABLE mfcl_claims (
        sweep bigint NOT NULL REFERENCES mfcl_sweeps(id) ON DELETE CASCADE, stem text NOT NULL,
        generation int NOT NULL, owner text NOT NULL, token uuid NOT NULL, host text, pid int, pid_start text,
        t timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (sweep, stem, generation));
    CREATE TABLE mfcl_owners (
        sweep bigint NOT NULL REFERENCES mfcl_sweeps(id) ON DELETE CASCADE, owner text NOT NULL,
        host text, pid int, pid_start text, retired boolean NOT NULL DEFAULT false,
        beat timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (sweep, owner));
    """,
]
SCHEMA_VERSION = len(MIGRATIONS)


def _psycopg() -> Any:
    try:
        import psycopg
    except ImportError:
        raise StoreError("a postgresql:// store needs psycopg: pip install 'mfcl-sweeps[postgres]'") from None
    return psycopg


def _why(err: BaseException) -> str:
    """The useful line of a libpq error ('FATAL:  password authentication failed for user "x"')."""
    text = " ".join(str(err).split())
    for marker in ("FATAL: ", "failed: ", "connection failed: "):
        if marker in text:
            text = text.rsplit(marker, 1)[1]
    return text.strip()


def open_error(url: StoreURL, err: BaseException) -> StoreError:
    """One line naming the store and what to change."""
    why = _why(err)
    if "password authentication failed" in why or "no password supplied" in why:
        fix = "give the right password in PGPASSWORD, ~/.pgpass or the URL"
    elif "does not exist" in why and "database" in why:
        fix = f"create it (createdb -O {url.user or 'ROLE'} {url.dbname}) or fix the URL"
    elif "role" in why and "does not exist" in why:
        fix = "create the role (docs/store.md) or fix the user in the URL"
    else:
        fix = "is the server running and reachable from this host? (check host and port)"
    return StoreError(f"cannot open the sweep store {url.redacted}: {why}; {fix}")


class PgStore:
    """One sweep in a PostgreSQL database. Each thread gets its own connection (the heartbeat
    thread beats while the main thread appends), opened lazily and reopened after a fault."""

    kind = "postgresql"

    def __init__(self, url: StoreURL, name: str, *, claim_timeout: float = DEFAULT_CLAIM_TIMEOUT_S,
                 create: bool = False, retry_s: Optional[float] = None) -> None:
        from mfcl_sweeps.state.pg_claims import PgClaimBook

        self.url, self.name = url, name
        self.retry_s = float(os.environ.get(ENV_RETRY, DEFAULT_RETRY_S)) if retry_s is None else retry_s
        self._local = threading.local()
        self._seq = 0  # the last op number read
        self._lines = 0
        self._id: Optional[int] = None
        self.cluster: Optional[str] = None  # the cluster of the sweep dir that opened it (store.open_store)
        self.claims = PgClaimBook(self, claim_timeout)
        if create:  # a sweep starting: a store that cannot be used stops it at once, with one line
            conn = self._connection(first=True)
            self._migrate(conn)
            self._id = self._sweep_id(conn, create)
        else:  # a worker or reader of a running sweep: wait out an outage (its run's end must be recorded)
            self._id = self.run(lambda conn: self._migrate(conn) or self._sweep_id(conn, False))

    # -- connections and retries ---------------------------------------------------------------
    def _connection(self, first: bool = False) -> Any:
        conn = getattr(self._local, "conn", None)
        if conn is not None and not conn.closed:
            return conn
        psycopg = _psycopg()
        try:
            conn = psycopg.connect(autocommit=True, connect_timeout=CONNECT_TIMEOUT_S,
                                   application_name="mfcl-sweeps", **self.url.connect_kwargs())
        except psycopg.OperationalError as err:
            if first:
                raise open_error(self.url, err) from None
            raise
        self._local.conn = conn
        return conn

    def run(self, work: Callable[[Any], T]) -> T:
        """`work(connection)`, retried with backoff while the database is unreachable."""
        psycopg = _psycopg()
        deadline, delay, warned = time.monotonic() + self.retry_s, 0.2, False
        while True:
            try:
                result = work(self._connection())
                if warned:
                    log.warning("mfcl: sweep store %s is back", self.url.redacted)
                return result
            except (psycopg.OperationalError, psycopg.InterfaceError) as err:
                conn = getattr(self._local, "conn", None)
                if conn is not None and (conn.closed or conn.broken):
                    conn.close()
                if time.monotonic() + delay > deadline:
                    raise StoreError(f"sweep store {self.url.redacted} unreachable for {self.retry_s:.0f} s "
                                     f"({_why(err)}); nothing more recorded (set {ENV_RETRY} to wait longer)") from None
                if not warned:
                    log.warning("mfcl: sweep store %s unreachable (%s); retrying for up to %.0f s",
                                self.url.redacted, _why(err), self.retry_s)
                    warned = True
                time.sleep(delay)
                delay = min(delay * 2, 5.0)

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()

    # -- schema -------------------------------------------------------------------------------
    def _migrate(self, conn: Any) -> None:
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (ADVISORY_LOCK,))
            conn.execute("CREATE TABLE IF NOT EXISTS mfcl_schema (version int NOT NULL)")
            row = conn.execute("SELECT max(version) FROM mfcl_schema").fetchone()
            version = row[0] or 0
            if version > SCHEMA_VERSION:
                raise StoreError(f"sweep store {self.url.redacted} has schema version {version}, newer than this "
                                 f"mfcl-sweeps knows ({SCHEMA_VERSION}); upgrade mfcl-sweeps")
            for number in range(version, SCHEMA_VERSION):
                conn.execute(MIGRATIONS[number])
                conn.execute("INSERT INTO mfcl_schema (version) VALUES (%s)", (number + 1,))

    def _sweep_id(self, conn: Any, create: bool) -> Optional[int]:
        if create:
            conn.execute("INSERT INTO mfcl_sweeps (name) VALUES (%s) ON CONFLICT (name) DO NOTHING", (self.name,))
        row = conn.execute("SELECT id FROM mfcl_sweeps WHERE name = %s", (self.name,)).fetchone()
        return row[0] if row else None

    @property
    def sweep(self) -> int:
        """The sweep's row id; the row is made by the first write (a reader creates nothing)."""
        if self._id is None:
            self._id = self.run(lambda conn: self._sweep_id(conn, True))
        return self._id

    def _found(self) -> bool:
        if self._id is None:
            self._id = self.run(lambda conn: self._sweep_id(conn, False))
        return self._id is not None

    # -- ops ----------------------------------------------------------------------------------
    def append(self, ops: list[dict], *, last_words: bool = False) -> None:  # the database's disk is not the sweep's
        rows = [(str(uuid.uuid4()), json.dumps(redact(op), separators=(",", ":"), default=str)) for op in ops]
        sweep, retried = self.sweep, False

        def one(conn: Any) -> None:
            # one statement, so one round trip: the sweep row stays locked until it commits; a
            # retry of a committed op is dropped by its uid (leaving a harmless gap in seq)
            conn.execute("WITH s AS (UPDATE mfcl_sweeps SET next_seq = next_seq + 1 WHERE id = %s RETURNING next_seq) "
                         "INSERT INTO mfcl_ops (sweep, seq, uid, op) SELECT %s, next_seq, %s, %s FROM s "
                         "ON CONFLICT (sweep, uid) DO NOTHING", (sweep, sweep, *rows[0]))

        def many(conn: Any) -> None:
            nonlocal retried
            with conn.transaction():
                if retried and conn.execute("SELECT 1 FROM mfcl_ops WHERE sweep = %s AND uid = %s",
                                            (sweep, rows[0][0])).fetchone():
                    return  # the first try committed; its acknowledgement was lost
                retried = True
                last = conn.execute("UPDATE mfcl_sweeps SET next_seq = next_seq + %s WHERE id = %s RETURNING next_seq",
                                    (len(rows), sweep)).fetchone()[0]
                with conn.cursor() as cur, cur.copy("COPY mfcl_ops (sweep, seq, uid, op) FROM STDIN") as copy:
                    for i, (uid, op) in enumerate(rows, start=last - len(rows) + 1):  # a batch in one stream
                        copy.write_row((sweep, i, uid, op))

        work = one if len(rows) == 1 else many
        self.run(work)

    def read_new(self) -> list[dict]:
        if not self._found():
            return []
        query = "SELECT seq, op FROM mfcl_ops WHERE sweep = %s AND seq > %s ORDER BY seq"
        rows = self.run(lambda conn: conn.execute(query, (self._id, self._seq)).fetchall())
        if not rows:
            return []
        ops = json.loads("[" + ",".join(op for _, op in rows) + "]")  # one parse: as the journal's reader
        self._seq = rows[-1][0]
        self._lines += len(ops)
        return ops

    @property
    def lines_read(self) -> int:
        return self._lines

    def exists(self) -> bool:
        return self._found() and bool(self.run(lambda conn: conn.execute(
            "SELECT 1 FROM mfcl_ops WHERE sweep = %s LIMIT 1", (self._id,)).fetchone()))

    # -- plan indices -------------------------------------------------------------------------
    def plan_index(self, spec_hash: str) -> Optional[str]:
        if not self._found():
            return None
        row = self.run(lambda conn: conn.execute(
            "SELECT body FROM mfcl_plan_index WHERE sweep = %s AND spec_hash = %s", (self._id, spec_hash)).fetchone())
        return row[0] if row else None

    def save_plan_index(self, spec_hash: str, text: str) -> None:
        self.run(lambda conn: conn.execute(
            "INSERT INTO mfcl_plan_index (sweep, spec_hash, body) VALUES (%s, %s, %s) ON CONFLICT DO NOTHING",
            (self.sweep, spec_hash, text)))

    def plan_indices(self) -> dict[str, str]:
        """spec hash -> index text of every plan (export)."""
        if not self._found():
            return {}
        return dict(self.run(lambda conn: conn.execute(
            "SELECT spec_hash, body FROM mfcl_plan_index WHERE sweep = %s", (self._id,)).fetchall()))

    def describe(self) -> str:
        return f"{self.url.redacted} (sweep {self.name})"

    # -- replay checkpoint: a local cache of the replay, as for the file journal --------------------
    def _tail(self, seq: int) -> bytes:
        """What proves a checkpoint was taken of this very sweep: its database, name and last op's uid."""
        row = self.run(lambda conn: conn.execute("SELECT uid FROM mfcl_ops WHERE sweep = %s AND seq = %s",
                                                 (self._id, seq)).fetchone())
        return f"{self.url.public()} {self.name} {row[0] if row else None}".encode()

    def load_checkpoint(self, state_dir: Path) -> Optional[Checkpoint]:
        cp = load_checkpoint(state_dir)
        if cp is None or not self._found() or cp.ino != self._id or cp.tail != self._tail(cp.offset):
            return None
        self._seq, self._lines = cp.offset, cp.lines
        return cp

    def checkpoint_position(self) -> Optional[tuple]:
        return (self._id, self._seq, self._lines, self._tail(self._seq)) if self._lines else None
