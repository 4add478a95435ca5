"""Python values <-> Hydra override strings, and the short slugs used in run ids.

Values from a YAML/JSON sweep file become override strings that Hydra's own parser reads
back as the same value: strings are written bare only when they cannot be mistaken for
anything else, otherwise single-quoted with Hydra's escaping rules.
"""
from __future__ import annotations

import math
import re
from functools import lru_cache
from typing import Any, Optional

from mfcl_sweeps.secrets import is_secret_key

# Bare strings Hydra reads back as the same string (group option names like `dir/name` too).
_BARE = re.compile(r"[A-Za-z_][A-Za-z0-9_\-./]*\Z")
_KEYWORDS = {"true", "false", "null", "nan", "inf"}
_DICT_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_\-]*\Z")
# A run of backslashes followed by a quote or the end: Hydra reads those backslashes as escapes.
_BACKSLASHES_BEFORE_QUOTE = re.compile(r"(\\*)('|\Z)")
_SLUG_BAD = re.compile(r"[^A-Za-z0-9.+\-]+")


class FormatError(ValueError):
    """A value has no Hydra override form (e.g. a dict key with special characters)."""


def format_value(value: Any) -> str:
    """The override-string form of `value` (the part after `=`)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        if _BARE.match(value) and value.lower() not in _KEYWORDS:
            return value
        return quote_override_value(value)
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(format_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{_dict_key(k)}:{format_value(v)}" for k, v in value.items()) + "}"
    raise FormatError(f"cannot write a {type(value).__name__} value as a Hydra override: {value!r}")


def quote_override_value(text: str) -> str:
    """A string as a quoted Hydra override value that parses back byte for byte: in a quoted value
    a backslash is literal unless a run of them precedes a quote or the closing quote, so only
    those runs are doubled (and each quote escaped)."""

    def escape(match: re.Match) -> str:
        return match.group(1) * 2 + ("\\'" if match.group(2) else "")

    return "'" + _BACKSLASHES_BEFORE_QUOTE.sub(escape, text) + "'"


def _dict_key(key: Any) -> str:
    if isinstance(key, bool) or not isinstance(key, (str, int)):
        raise FormatError(f"dict key {key!r} cannot be written in a Hydra override")
    if isinstance(key, str) and not _DICT_KEY.match(key):
        raise FormatError(f"dict key {key!r} cannot be written in a Hydra override "
                          "(letters, digits, '_' and '-' only)")
    return str(key)


def format_override(key: str, value: Any) -> str:
    return f"{key}={format_value(value)}"


def canonical_key(key: str) -> str:
    """The config key an override acts on, without its `+`, `++` or `~` prefix."""
    return key.lstrip("~+")


@lru_cache(maxsize=None)
def _parser():
    from hydra.core.override_parser.overrides_parser import OverridesParser

    return OverridesParser.create()


def parse_override(text: str, config_loader: Any = None):
    """Hydra's own parse of one override (raises Hydra's OverrideParseException)."""
    parsed = _parser().parse_override(text)
    parsed.config_loader = config_loader  # glob() asks it for the group's options
    return parsed


def plain_value(element: Any) -> Any:
    """A parsed Hydra element as plain Python (quoted strings become str)."""
    from hydra.core.override_parser.types import Override

    return Override._convert_value(element)


def slug(text: str, limit: int = 32) -> str:
    """A filesystem-safe fragment of `text` (letters, digits, `.`, `+`, `-`)."""
    return _SLUG_BAD.sub("-", text).strip("-")[:limit] or "x"


def value_slug(key: str, value: Any) -> str:
    short_key = canonical_key(key).rsplit(".", 1)[-1]
    if is_secret_key(key):  # run ids name files and logs: never a secret in them
        return f"{slug(short_key, 16)}-redacted"
    if isinstance(value, float):
        text = f"{value:.4g}"  # a slug names a run for people; the index keeps it unique
    else:
        text = value if isinstance(value, str) else _safe_format(value)
    return f"{slug(short_key, 16)}-{slug(text, 24)}"


def _safe_format(value: Any) -> str:
    try:
        return format_value(value)
    except FormatError:
        return str(value)


def is_group_option_name(value: Any) -> Optional[str]:
    """`value` as a config group option name (`resnet18`, `dir/name`), or None if it is not one."""
    if isinstance(value, str) and _BARE.match(value) and value.lower() not in _KEYWORDS:
        return value
    return None
