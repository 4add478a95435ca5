"""Launcher and sweeper options: declared once (mfcl_sweeps.config), checked once, here.

A launcher's (or the sweeper's) config dataclass is the one place where an option's name, type,
default and checks are written: each check sits in its field's metadata (`opt(default, at_least(1))`).
`parse_options` turns `hydra.launcher.*` into a backend's frozen options (and `hydra.sweeper.*`
into the sweeper's): unknown keys are refused (with the nearest known name), numbers given as
strings are coerced, every check runs, and every complaint has one wording:
`hydra.launcher.X=V: why; what to change` (`hydra.sweeper.X=V: ...` for the sweeper).

Hydra-free and cheap to import: the plugin modules import the config dataclasses at start-up.
"""
from __future__ import annotations

import dataclasses
import re
import typing
from typing import Any, Callable, Mapping, Optional, Union

from mfcl_sweeps.errors import OptionError

# Options every mfcl launcher has (hydra.launcher.*), handled by the driver; the rest go to the backend.
COMMON_OPTIONS = ("detach", "retries", "retry_backoff_s", "launch_delay", "progress", "output")

# A check gets the field's value (never None) and every option's value; it returns None when the
# value is fine, else "why; what to change".
Check = Callable[[Any, Mapping[str, Any]], Optional[str]]


def opt(default: Any, *checks: Check) -> Any:
    """A config field with its checks beside it; `list` or `dict` as the default means an empty one."""
    if default in (list, dict):
        return dataclasses.field(default_factory=default, metadata={"checks": checks})
    return dataclasses.field(default=default, metadata={"checks": checks})


def problem(key: str, value: Any, why: str, group: str = "hydra.launcher") -> OptionError:
    """The one wording of a bad option of `group`."""
    return OptionError(f"{group}.{key}={value!r}: {why}")


# -- the checks --------------------------------------------------------------------------------
def at_least(low: float, unit: str = "") -> Check:
    return lambda v, _: None if v >= low else f"must be >= {low:g}{unit}; set {low:g} or more"


def above(low: float, unit: str = "") -> Check:
    return lambda v, _: None if v > low else f"must be > {low:g}{unit}; set a larger value"


def between(low: float, high: float) -> Check:
    return lambda v, _: None if low <= v <= high else f"must be in {low:g}..{high:g}; set a value in that range"


def one_of(*choices: str) -> Check:
    return lambda v, _: None if v in choices else f"must be one of {', '.join(choices)}; pick one of them"


def port(v: Any, _: Mapping[str, Any]) -> Optional[str]:
    return None if is_port(v) else "must be a TCP port in 1..65535; set a port number in that range"


def one_line(v: Any, _: Mapping[str, Any]) -> Optional[str]:
    if isinstance(v, str) and v.strip() and "\n" not in v:
        return None
    return "must be a non-empty one-line string (or null); give one line of text"


def matches(pattern: str, what: str) -> Check:
    rx = re.compile(pattern)
    return lambda v, _: None if isinstance(v, str) and rx.fullmatch(v) else what


def each(check: Check) -> Check:
    """`check` on every item of a list (the first failure is reported)."""
    def check_items(values: Any, all_values: Mapping[str, Any]) -> Optional[str]:
        for item in values:
            why = check(item, all_values)
            if why:
                return f"item {item!r}: {why}"
        return None
    return check_items


def at_most_option(other: str) -> Check:
    """No larger than another option's value (e.g. poll_min_s <= poll_max_s)."""
    def check(v: Any, values: Mapping[str, Any]) -> Optional[str]:
        limit = values.get(other)
        return None if limit is None or v <= limit else f"must be <= {other}={limit!r}; lower it or raise {other}"
    return check


def ssh_option(v: Any, _: Mapping[str, Any]) -> Optional[str]:
    # `-o` values only: a value starting with "-" would be read by ssh as another flag.
    if isinstance(v, str) and "=" in v and not v.startswith("-"):
        return None
    return "is not an ssh option; write Name=value (as after `ssh -o`), e.g. ProxyJump=bastion"


def is_port(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and 0 < v < 65536


def split_endpoint(endpoint: str, key: str) -> tuple[str, Optional[int]]:
    """(host, port or None) of `host[:port]` (IPv6 hosts in brackets)."""
    m = re.fullmatch(r"(\[[^\]]+\]|[^:\[\]]+)(?::(\d+))?", str(endpoint))
    if not m or (m.group(2) is not None and not is_port(int(m.group(2)))):
        raise OptionError(f"{key}={endpoint!r}: must be host or host:port (port 1..65535); fix the address")
    return m.group(1), int(m.group(2)) if m.group(2) else None


def endpoint(v: Any, _: Mapping[str, Any]) -> Optional[str]:
    try:
        split_endpoint(v, "")
    except OptionError:
        return "must be host or host:port (port 1..65535); fix the address"
    return None


def conf_string(conf: Union[str, Mapping[str, Any], None], key: str) -> str:
    """torchrun's `k1=v1,k2=v2` form of a rendezvous conf given as a mapping or a string."""
    if conf is None or conf == "":
        return ""
    if isinstance(conf, Mapping):
        for k, v in conf.items():
            if any(c in str(k) + str(v) for c in ",="):
                raise OptionError(f"{key}.{k}={v!r}: keys and values cannot hold ',' or '='; rename them")
        return ",".join(f"{k}={v}" for k, v in conf.items())
    if isinstance(conf, str) and all("=" in part for part in conf.split(",")):
        return conf
    raise OptionError(f"{key}={conf!r}: must be a mapping or a 'key=value,key=value' string; rewrite it so")


# -- parsing -----------------------------------------------------------------------------------
def _number_kind(hint: Any) -> Optional[type]:
    """int or float for a field typed (Optional) int/float, else None."""
    args = [a for a in typing.get_args(hint) if a is not type(None)] if typing.get_origin(hint) is Union else [hint]
    return args[0] if len(args) == 1 and args[0] in (int, float) else None


def _coerce(key: str, value: Any, kind: type, group: str) -> Any:
    try:
        if isinstance(value, bool) or (kind is int and float(value) != int(float(value))):
            raise ValueError(value)
        return kind(float(value)) if kind is int else kind(value)
    except (TypeError, ValueError):
        what = "an integer" if kind is int else "a number"
        raise problem(key, value, f"must be {what}; write it as digits", group) from None


def _is_list(hint: Any) -> bool:
    return any(typing.get_origin(h) in (list, tuple) for h in (hint, *typing.get_args(hint)))


def _frozen(value: Any, hint: Any) -> Any:
    if isinstance(value, str) and _is_list(hint):  # `setup="module load x"`: a one-line list
        return (value,)
    if isinstance(value, (list, tuple)):
        return tuple(value)
    if isinstance(value, Mapping):
        return dict(value)
    return value


_OPTION_TYPES: dict[type, type] = {}


def options_type(conf: type) -> type:
    """The frozen options a backend reads, made from its launcher config: the options the
    driver handles (COMMON_OPTIONS) and `_target_` left out, lists as tuples."""
    if conf not in _OPTION_TYPES:
        fields = []
        for f in dataclasses.fields(conf):
            if f.name in COMMON_OPTIONS or f.name == "_target_":
                continue
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
            if isinstance(default, list):
                fields.append((f.name, tuple, dataclasses.field(default=tuple(default))))
            elif isinstance(default, dict) or dataclasses.is_dataclass(default):  # a nested conf: its mapping
                fields.append((f.name, Mapping[str, Any], dataclasses.field(default_factory=dict)))
            else:
                fields.append((f.name, f.type, dataclasses.field(default=default)))
        name = conf.__name__.replace("LauncherConf", "Options")
        _OPTION_TYPES[conf] = dataclasses.make_dataclass(name, fields, frozen=True)
    return _OPTION_TYPES[conf]


def parse_options(conf: type, raw: Mapping[str, Any], launcher: str, *, group: str = "hydra.launcher",
                  **defaults: Any) -> Any:
    """`hydra.launcher.*` (with or without the common options) -> the backend's frozen options;
    with group="hydra.sweeper", the sweeper's options (`launcher` then names the sweeper).
    `defaults` replaces config defaults that are Hydra interpolations (`${hydra.job.name}`) for
    callers that bypass Hydra. Raises OptionError (one line) for the first bad option."""
    fields = {f.name: f for f in dataclasses.fields(conf) if f.name != "_target_"}
    for key in raw:
        if key not in fields:
            import difflib

            near = difflib.get_close_matches(str(key), list(fields), n=1)
            hint = f"did you mean {near[0]}?" if near else "remove it"
            raise problem(key, raw[key], f"not an option of {launcher}; {hint} (options: {', '.join(sorted(fields))})",
                          group)
    hints = typing.get_type_hints(conf)
    values: dict[str, Any] = {}
    for name, f in fields.items():
        if name in raw:
            value = raw[name]
        elif name in defaults:
            value = defaults[name]
        else:
            value = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        kind = _number_kind(hints.get(name))
        if kind is not None and value is not None:
            value = _coerce(name, value, kind, group)
        values[name] = _frozen(value, hints.get(name))
    for name, f in fields.items():
        value = values[name]
        if value is None:
            continue
        for check in f.metadata.get("checks", ()):
            why = check(value, values)
            if why:
                raise problem(name, raw.get(name, value), why, group)  # as the user wrote it
    options = options_type(conf)
    return options(**{k: v for k, v in values.items() if k in {f.name for f in dataclasses.fields(options)}})
