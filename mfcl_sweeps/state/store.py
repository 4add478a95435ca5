"""Where a sweep's state lives: the sweep dir's file journal (default) or a PostgreSQL database.

Both keep the same things behind one small interface (`Store`), which the manifest facade uses:
append ops and read the ops after the last read (the state is their replay, replay.py), the
hash -> index text of each plan (write once), and claims with generations and heartbeats
(claims.ClaimRules). The choice is `hydra.sweeper.store` (or `$MFCL_STORE`): `file`, or
`postgresql://USER@HOST:PORT/DATABASE`. A sweep dir on a database keeps a pointer,
`.mfcl/store.json` (the URL without its password, and the sweep's name in the database), so
every process that opens the sweep dir (workers, `status`, the report) finds the same store.

Passwords are never written: the pointer has none; a process finds it in `$MFCL_STORE` (when it
names the same server, user and database), `PGPASSWORD` or `~/.pgpass`, as libpq does.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Optional, Protocol, Union
from urllib.parse import quote

from mfcl_sweeps.errors import StoreError
from mfcl_sweeps.fsio import atomic_write
from mfcl_sweeps.layout import SweepLayout, sweep_id_of
from mfcl_sweeps.state.claims import DEFAULT_CLAIM_TIMEOUT_S, ClaimBook, ClaimRules
from mfcl_sweeps.state.journal import Journal
from mfcl_sweeps.state.records import Checkpoint, journal_tail, read_checkpoint
from mfcl_sweeps.state.storeurl import (
    ENV_STORE,
    FILE,
    OPTION,
    StoreURL,
    hide_password,
    parse_url,
    raw_password,
    with_env_password,
)


class Store(Protocol):
    kind: str
    claims: ClaimRules

    def append(self, ops: list[dict], *, last_words: bool = False) -> None:
        """`last_words`: a full-disk stop's last lines, which may use space kept for them."""

    def read_new(self) -> list[dict]: ...

    @property
    def lines_read(self) -> int: ...

    def exists(self) -> bool: ...

    def plan_index(self, spec_hash: str) -> Optional[str]: ...

    def save_plan_index(self, spec_hash: str, text: str) -> None: ...

    def plan_indices(self) -> dict[str, str]: ...

    def describe(self) -> str: ...

    def load_checkpoint(self, state_dir: Path) -> Optional[Checkpoint]:
        """The sweep dir's replay checkpoint if it agrees with this store (reading then resumes
        after it), else None."""

    def checkpoint_position(self) -> Optional[tuple]:
        """(ino, offset, lines, tail) of a checkpoint taken now (records.Checkpoint), or None."""


class FileStore:
    """The sweep dir's own journal (journal.py), plan index files and claim files."""

    kind = FILE

    def __init__(self, sweep_dir: Union[str, os.PathLike], claim_timeout: float = DEFAULT_CLAIM_TIMEOUT_S,
                 lock_grace: Optional[float] = None) -> None:
        self.layout = SweepLayout.of(os.fspath(sweep_dir))
        self.journal = Journal(sweep_dir, lock_grace)
        self.claims = ClaimBook(self.layout, claim_timeout)

    def append(self, ops: list[dict], *, last_words: bool = False) -> None:
        self.journal.append(ops, last_words=last_words)

    def read_new(self) -> list[dict]:
        return self.journal.read_new()

    @property
    def lines_read(self) -> int:
        return self.journal.lines_read

    def exists(self) -> bool:
        return self.journal.path.exists()

    def plan_index(self, spec_hash: str) -> Optional[str]:
        try:
            return Path(self.layout.plan_index(spec_hash)).read_text()
        except FileNotFoundError:
            return None

    def save_plan_index(self, spec_hash: str, text: str) -> None:
        path = Path(self.layout.plan_index(spec_hash))
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(path, text)

    def plan_indices(self) -> dict[str, str]:
        """spec hash -> index text of every plan (export)."""
        plans = Path(self.layout.plan_index("x")).parent
        return {p.stem: p.read_text() for p in sorted(plans.glob("*.idx"))} if plans.is_dir() else {}

    def describe(self) -> str:
        return str(self.journal.path)

    def load_checkpoint(self, state_dir: Path) -> Optional[Checkpoint]:
        cp = read_checkpoint(state_dir, self.journal.path)
        if cp is not None:
            self.journal.resume_at(cp.ino, cp.offset, cp.lines)
        return cp

    def checkpoint_position(self) -> Optional[tuple]:
        ino, offset, lines = self.journal.position()
        return (ino, offset, lines, journal_tail(self.journal.path, offset)) if lines else None


def keeps_state(sweep_dir: Union[str, os.PathLike]) -> bool:
    """Whether the sweep dir has a store to replay (its journal, or a pointer to a database);
    without one, its `sweep_manifest.json` is all there is. Touches no database."""
    layout = SweepLayout.of(os.fspath(sweep_dir))
    return os.path.exists(layout.journal) or os.path.exists(layout.store_pointer)


def read_pointer(sweep_dir: Union[str, os.PathLike]) -> Optional[dict]:
    """The sweep dir's `.mfcl/store.json` ({"store": URL without password, "sweep": name}), if any."""
    path = Path(SweepLayout.of(os.fspath(sweep_dir)).store_pointer)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except ValueError as err:
        raise StoreError(f"{path}: unreadable store pointer ({err}); delete it to use the file journal") from None
    if not isinstance(data, dict) or not data.get("store") or not data.get("sweep"):
        raise StoreError(f"{path}: a store pointer needs 'store' and 'sweep'; delete it to use the file journal")
    return data


def write_pointer(sweep_dir: Union[str, os.PathLike], url: Optional[StoreURL], name: str,
                  cluster: Optional[str] = None) -> None:
    """Point the sweep dir at a database sweep (url None: back to the file journal); `cluster`
    is the cluster this sweep dir belongs to (runs of others are shown as remote)."""
    path = Path(SweepLayout.of(os.fspath(sweep_dir)).store_pointer)
    if url is None:
        path.unlink(missing_ok=True)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, json.dumps({"store": url.public(), "sweep": name, "cluster": cluster}, indent=1) + "\n")


def open_store(sweep_dir: Union[str, os.PathLike], *, url: Optional[StoreURL] = None, name: Optional[str] = None,
               claim_timeout: float = DEFAULT_CLAIM_TIMEOUT_S, lock_grace: Optional[float] = None,
               create: bool = False, cluster: Optional[str] = None) -> Store:
    """The store of `sweep_dir`: the one its pointer names, else its file journal.

    With `url` (a sweep being started with a database store), `name` is the sweep's name in the
    database; `create=True` creates it there if new and writes the pointer. A sweep dir that
    already keeps its state elsewhere is refused with one line saying how to move it."""
    pointer = read_pointer(sweep_dir)
    if url is None:
        if pointer is None:
            return FileStore(sweep_dir, claim_timeout, lock_grace)
        where = SweepLayout.of(os.fspath(sweep_dir)).store_pointer
        url, name = parse_url(pointer["store"], where), pointer["sweep"]
    else:
        name = name or (pointer["sweep"] if pointer else sweep_id_of(sweep_dir))
        if pointer is not None and (pointer["store"], pointer["sweep"]) != (url.public(), name):
            raise StoreError(f"{sweep_dir} keeps its state in {pointer['store']} (sweep {pointer['sweep']}), not "
                             f"{url.redacted} (sweep {name}); give that store and name, or use another sweep dir")
        if pointer is None and FileStore(sweep_dir).exists():
            raise StoreError(f"{sweep_dir} keeps its state in its file journal; move it to the database first "
                             f"(mfcl-sweeps store export {sweep_dir} {url.redacted}) or use another sweep dir")
    from mfcl_sweeps.state.pg import PgStore

    store = PgStore(with_env_password(url), str(name), claim_timeout=claim_timeout, create=create)
    store.cluster = (pointer or {}).get("cluster") or cluster
    if create and pointer is None:
        write_pointer(sweep_dir, url, str(name), cluster)
    return store


def open_chosen(sweep_dir: str, option: Optional[str], config: Any, *, name: Optional[str], cluster: str,
                claim_timeout: float) -> Optional[Store]:
    """The sweeper's store: `hydra.sweeper.store`, else `$MFCL_STORE`, else what the sweep dir
    uses (None: its pointer or file journal, as any other reader finds it).

    A database store is opened (created if new) before anything is written or launched; its
    URL, with the password, is handed to the sweep's jobs through `$MFCL_STORE` (the
    environment, never a file), and the config that is saved and sent to jobs shows it redacted."""
    key, value = (OPTION, option) if option else (ENV_STORE, os.environ.get(ENV_STORE, ""))
    url = parse_url(value, key)
    if url is None:
        if option == FILE and read_pointer(sweep_dir) is not None:
            raise StoreError(f"{OPTION}=file: {sweep_dir} keeps its state in a database; move it back first "
                             f"(mfcl-sweeps store import {sweep_dir}) or use another sweep dir")
        return None
    store = open_store(sweep_dir, url=url, name=name, claim_timeout=claim_timeout, create=True, cluster=cluster)
    found = store.url  # with the password found for it (URL, or an earlier $MFCL_STORE); else libpq's own
    os.environ[ENV_STORE] = found.public(quote(found.password, safe="") if found.password else None)
    hide_passwords(config, raw_password(value))
    return store


def hide_passwords(config: Any, password: Optional[str]) -> None:
    """Redact the store URL's password in the sweeper's store option and Hydra's record of the
    command line (both are saved to multirun.yaml and each job's .hydra/)."""
    from omegaconf import open_dict

    if not password:
        return
    with open_dict(config):
        if config.hydra.sweeper.get("store"):
            config.hydra.sweeper.store = hide_password(str(config.hydra.sweeper.store), password)
        overrides = config.hydra.overrides.get("hydra")
        if overrides:
            config.hydra.overrides.hydra = [hide_password(str(o), password) for o in overrides]
