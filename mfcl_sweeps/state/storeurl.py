"""The store URL: `postgresql://USER[:PASSWORD]@HOST:PORT/DATABASE[?PARAM=...]` parsed once, shown
only with its password hidden, and completed with the password of `$MFCL_STORE` when that names
the same server, user and database (see store.py)."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Optional
from urllib.parse import parse_qsl, quote, unquote, urlsplit

from mfcl_sweeps.errors import StoreError

ENV_STORE = "MFCL_STORE"
OPTION = "hydra.sweeper.store"
FILE = "file"
SCHEMES = ("postgresql", "postgres")
REDACTED = "***"
USAGE = "use `file` (the sweep dir's journal, the default) or postgresql://USER@HOST:PORT/DATABASE"


@dataclass(frozen=True)
class StoreURL:
    """A parsed `postgresql://` URL. `password` is None when it is to come from the environment."""

    user: Optional[str]
    password: Optional[str] = field(repr=False)
    host: Optional[str]
    port: Optional[int]
    dbname: str
    options: tuple = ()  # query parameters (sslmode=...), passed to libpq as they are

    def public(self, password: Optional[str] = None) -> str:
        """The URL without its password (with `password` in its place when given)."""
        auth = quote(self.user or "", safe="")
        if auth and password is not None:
            auth += ":" + password
        netloc = (auth + "@" if auth else "") + (self.host or "") + (f":{self.port}" if self.port else "")
        query = "&".join(f"{k}={quote(v, safe='')}" for k, v in self.options)
        return f"postgresql://{netloc}/{quote(self.dbname, safe='')}" + (f"?{query}" if query else "")

    @property
    def redacted(self) -> str:
        """For messages and logs: `postgresql://me:***@db:5432/sweeps`."""
        return self.public(REDACTED if self.password else None)

    def server(self) -> tuple:
        return self.user, self.host, self.port, self.dbname

    def connect_kwargs(self) -> dict:
        kwargs = {"host": self.host, "port": self.port, "user": self.user, "dbname": self.dbname,
                  "password": self.password, **dict(self.options)}
        return {k: v for k, v in kwargs.items() if v is not None}


def raw_password(value: str) -> Optional[str]:
    try:
        return urlsplit(value).password or None
    except ValueError:
        return None


def hide_password(text: str, password: Optional[str]) -> str:
    """`text` with `password` (as it appears in a URL: `:password@`) shown as ***."""
    return text.replace(f":{password}@", f":{REDACTED}@") if password else text


def parse_url(value: str, key: str = OPTION) -> Optional[StoreURL]:
    """None for the file journal; a StoreURL for a database. Raises StoreError (one line)."""
    value = (value or "").strip()
    if value in ("", FILE):
        return None
    shown = f"{key}={hide_password(value, raw_password(value))}"
    scheme, sep, _ = value.partition("://")
    if not sep or scheme.lower() not in SCHEMES:
        raise StoreError(f"{shown}: unknown store; {USAGE}")
    parts = urlsplit(value)
    try:
        port = parts.port
    except ValueError as err:
        raise StoreError(f"{shown}: not a valid PostgreSQL URL ({err}); {USAGE}") from None
    dbname = unquote(parts.path.lstrip("/"))
    if not dbname or "/" in dbname:
        raise StoreError(f"{shown}: the URL names no database; {USAGE}")
    password = unquote(parts.password) if parts.password is not None else None
    # a URL as recorded in a command (`mfcl-sweeps resume`): its password comes from the environment
    password = None if password in ("", REDACTED) else password
    return StoreURL(unquote(parts.username) if parts.username else None, password, parts.hostname or None, port,
                    dbname, tuple(parse_qsl(parts.query)))


def with_env_password(url: StoreURL) -> StoreURL:
    """`url`, with the password of `$MFCL_STORE` when that names the same server, user and database."""
    if url.password is not None:
        return url
    try:
        env = parse_url(os.environ.get(ENV_STORE, ""), ENV_STORE)
    except StoreError:
        return url
    if env is not None and env.password and env.server() == url.server():
        return StoreURL(url.user, env.password, url.host, url.port, url.dbname, url.options)
    return url
