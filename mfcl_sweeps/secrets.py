"""The one secrets policy: which keys, environment variables and values are secret, and how
anything is redacted before it is written (journal, manifest, run ids, config files, commands).

A config key or environment variable is secret when its words (split at `.`, `_`, `-` and
camelCase, lower-cased) contain one of the listed names as whole words: `wandb.api_key`,
`db.password`, `HF_TOKEN`, `GITHUB_PAT`, `PGPASSWD`-style `*_PASSWD`, `AUTHORIZATION`, but not
`data.max_tokens`, `model.tokenizer` or `video.keyframes`. Environment variables are also
secret when a word is `key`, or their name contains one of ENV_MARKERS anywhere (`PGPASSWORD`,
`MY_SERVICE_KEY`): config keys are not (`model.key_dim` is no secret). Passwords inside URLs
(`postgresql://me:***@db/x`) and whole values of DSN-named keys are hidden too.
`hydra.sweeper.secret_keys` adds names (the sweeper exports them as MFCL_SECRET_KEYS, so every
process of the sweep uses the same list).

Values found secret are remembered by this process, and `redact` replaces them wherever else they
appear (an error message, a traceback tail) once they are at least MIN_REMEMBERED characters long.
"""
from __future__ import annotations

import functools
import os
import re
from typing import Any, Iterable, Mapping, Optional, Sequence

REDACTED = "***"
DEFAULT_SECRET_KEYS = (
    "password", "passwd", "passphrase", "secret", "token", "api_key", "apikey", "access_key",
    "private_key", "auth", "authorization", "credential", "credentials", "pat", "dsn", "webhook",
    "cookie",
)
ENV_ONLY_KEYS = ("key",)  # secret as an environment variable's word, not as a config key's
# inside an environment variable's name, even within a word (PGPASSWORD, APIKEY): hiding a
# harmless variable costs nothing there, showing a secret one leaks it
ENV_MARKERS = ("PASSWORD", "PASSWD", "SECRET", "TOKEN", "KEY", "CREDENTIAL", "WEBHOOK", "PASSPHRASE")
NOT_SECRET = ("secret_keys",)  # hydra.sweeper.secret_keys names secrets; it holds none
ENV_SECRET_KEYS = "MFCL_SECRET_KEYS"  # extra names, comma-separated (hydra.sweeper.secret_keys)
MIN_REMEMBERED = 4  # shorter values are not searched for in free text (too many false hits)

_WORD_SPLIT = re.compile(r"[^A-Za-z0-9]+|(?<=[a-z0-9])(?=[A-Z])")
_URL_PASSWORD = re.compile(r"(://[^:/@\s]+:)[^@\s]+@")  # user:password@ in a URL
_OVERRIDE = re.compile(r"^([+~]{0,2})([A-Za-z_][\w.\-/@]*)=(.*)$", re.DOTALL)
_remembered: set[str] = set()
_seeded = False


def words(name: str) -> tuple[str, ...]:
    return tuple(w.lower() for w in _WORD_SPLIT.split(name) if w)


def _names(extra: Optional[Iterable[str]]) -> tuple[tuple[str, ...], ...]:
    return _listed(tuple(extra if extra is not None else configured_keys()))


@functools.lru_cache(maxsize=8)
def _listed(extra: tuple[str, ...]) -> tuple[tuple[str, ...], ...]:
    return tuple(words(n) for n in (*DEFAULT_SECRET_KEYS, *extra) if words(n))


def configured_keys(environ: Optional[Mapping[str, str]] = None) -> list[str]:
    raw = (os.environ if environ is None else environ).get(ENV_SECRET_KEYS, "")
    return [k.strip() for k in raw.split(",") if k.strip()]


def _contains(haystack: tuple[str, ...], needle: tuple[str, ...]) -> bool:
    n = len(needle)
    return any(haystack[i:i + n] == needle for i in range(len(haystack) - n + 1))


def is_secret_key(key: str, extra: Optional[Iterable[str]] = None) -> bool:
    """Is this config key (`db.password`, `+wandb.api_key`) secret?"""
    return _secret_key(key, _names(extra))


@functools.lru_cache(maxsize=4096)  # a sweep has few distinct keys, asked about once per value
def _secret_key(key: str, names: tuple[tuple[str, ...], ...]) -> bool:
    if key.rsplit(".", 1)[-1] in NOT_SECRET:
        return False
    have = words(key)
    return any(_contains(have, n) for n in names)


def is_secret_env(name: str, extra: Optional[Iterable[str]] = None) -> bool:
    """Is this environment variable secret?"""
    upper, have = name.upper(), words(name)
    return any(m in upper for m in ENV_MARKERS) or \
        any(_contains(have, n) for n in (*_names(extra), *map(words, ENV_ONLY_KEYS)))


def remember(value: Any) -> None:
    text = str(value)
    if len(text) >= MIN_REMEMBERED and text != REDACTED:
        _remembered.add(text)


def _hidden_value(key: str, value: str) -> str:
    remember(value)
    return REDACTED


def redact_text(text: str) -> str:
    """Free text with URL passwords and every remembered secret value hidden."""
    global _seeded
    if not _seeded:  # this process's own secret environment, once
        _seeded = True
        redact_env()
    text = _URL_PASSWORD.sub(rf"\g<1>{REDACTED}@", text)
    for value in sorted(_remembered, key=len, reverse=True):
        if value in text:
            text = text.replace(value, REDACTED)
    return text


def redact_override(text: str) -> str:
    """`+db.password=x` -> `+db.password=***`; anything else as free text."""
    m = _OVERRIDE.match(text)
    if m and is_secret_key(m.group(2)):
        return f"{m.group(1)}{m.group(2)}={_hidden_value(m.group(2), m.group(3))}"
    return redact_text(text)


def redact(obj: Any) -> Any:
    """A JSON-like value with every secret hidden: values under secret dict keys, `key=value`
    strings with a secret key, URL passwords, remembered values."""
    if isinstance(obj, str):
        return redact_override(obj)
    if isinstance(obj, Mapping):
        return {k: (_hidden_value(k, str(v)) if isinstance(k, str) and v is not None and is_secret_key(k)
                    and not isinstance(v, (Mapping, list, tuple)) else redact(v))
                for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(redact(v) for v in obj)
    return obj


def redact_env(env: Optional[Mapping[str, str]] = None) -> dict[str, str]:
    """The environment with secret variables' values (and URL passwords) shown as `***`."""
    own = env is None  # this process's own secrets are remembered; a mapping asked about is not
    env = os.environ if env is None else env
    out = {}
    for name, value in sorted(env.items()):
        if is_secret_env(name):
            out[name] = _hidden_value(name, value) if own else REDACTED
        else:
            out[name] = redact_text(value)
    return out


def redact_argv(argv: Sequence[str]) -> list[str]:
    """A command line with secret values as `***`: `wandb.api_key=...` overrides, `--token=...`
    and `--token VALUE` options, URL passwords."""
    out: list[str] = []
    hide_next = False
    for arg in argv:
        flag, eq, value = arg.partition("=")
        if hide_next:
            out.append(_hidden_value("", arg))
        elif eq and flag.startswith("--") and is_secret_key(flag):
            out.append(f"{flag}={_hidden_value(flag, value)}")
        else:
            out.append(redact_override(arg))
        hide_next = not hide_next and not eq and arg.startswith("--") and is_secret_key(arg)
    return out


def redacted_keys(args: Sequence[str]) -> list[str]:
    """Keys of `key=***` arguments: the values a resume must be given again."""
    out = []
    for arg in args:
        m = _OVERRIDE.match(arg)
        if m and m.group(3) == REDACTED:
            out.append(m.group(2))
    return out


def env_name_for(key: str) -> str:
    """Where `mfcl-sweeps resume` looks for a redacted value: `db.password` -> MFCL_SECRET_DB_PASSWORD."""
    return "MFCL_SECRET_" + "_".join(words(key)).upper()
