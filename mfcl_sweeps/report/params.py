"""Each run's overrides -> its swept parameters as values (one column per key), and the seed keys.

Override strings are parsed once per distinct string with Hydra's own override parser, so a
value such as `name='a b'` or `x=[1, 2]` stays one value (splitting on whitespace made two
wrong columns). `key=<int|float|bare word>`, nearly every override a sweep makes, is read by
a regex that gives the same value as Hydra (tests/test_report_params.py compares them): the
parser costs ~0.5 ms a string, 5 s for 10,000 distinct seeds.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Optional, Sequence

import pandas as pd

DEFAULT = "(default)"  # label of a run that does not set a swept key
INJECTED_PREFIXES = ("runtime.budget.",)  # set by the sweeper from a sweep file's `budget:`
SEED_LEAVES = ("seed",)  # a key whose last part is one of these is a seed key

_INT = re.compile(r"[-+]?\d+\Z")
_FLOAT = re.compile(r"[-+]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?\Z")
_BARE = re.compile(r"[A-Za-z_][A-Za-z0-9_\-./]*\Z")
_KEYWORDS = {"true", "false", "null", "nan", "inf"}
_SIMPLE_KEY = re.compile(r"[+~]*([A-Za-z_][\w.\-/@]*)\Z")


@dataclass(frozen=True)
class Parsed:
    key: str  # the config key, without `+`/`++`/`~`
    value: Any  # plain Python (lists and dicts as their override text, so they can be grouped)
    deleted: bool = False


def _hashable(value: Any) -> Any:
    if isinstance(value, (list, dict)):
        from mfcl_sweeps.spec.overrides import format_value

        return format_value(value)
    return value


@lru_cache(maxsize=200_000)
def parse(text: str) -> Parsed:
    """One override string as (key, value); Hydra's parser for all but the simplest forms."""
    key, sep, raw = text.partition("=")
    simple = _SIMPLE_KEY.match(key)
    if sep and simple and not key.startswith("~"):
        if _INT.match(raw):
            return Parsed(simple.group(1), int(raw))
        if _FLOAT.match(raw):
            return Parsed(simple.group(1), float(raw))
        if _BARE.match(raw) and raw.lower() not in _KEYWORDS:
            return Parsed(simple.group(1), raw)
    from mfcl_sweeps.spec import overrides as ov

    try:
        parsed = ov.parse_override(text)
    except Exception:  # Hydra accepted it when the run started; keep the text rather than fail the report
        return Parsed(ov.canonical_key(key), raw if sep else None)
    if parsed.is_delete():
        return Parsed(parsed.key_or_group, None, deleted=True)
    return Parsed(parsed.key_or_group, _hashable(ov.plain_value(parsed.value())))


def injected(key: str) -> bool:
    return key.startswith(INJECTED_PREFIXES)


def seed_keys_of(manifest: dict) -> set:
    """Keys of the spec's `seeds:` axis (its `seed_key`), plus any key ending in `seed`."""
    keys = set()
    for block in (manifest.get("spec") or {}).get("blocks") or ():
        for axis in block.get("axes") or ():
            if axis.get("source") == "seeds":
                keys.update(parse(o).key for s in axis.get("settings") or () for o in s.get("overrides") or ())
    return keys


def is_seed(key: str, spec_seed_keys: set) -> bool:
    return key in spec_seed_keys or key.rsplit(".", 1)[-1] in SEED_LEAVES


def user_overrides(overrides: Sequence[str]) -> str:
    """The overrides a user chose (without the sweeper's budget keys), space-separated for reading."""
    return " ".join(o for o in overrides if not injected(parse(o).key))


@dataclass
class Params:
    values: pd.DataFrame  # one column per swept key (values differ between runs); NaN = not set
    seed_keys: list  # swept keys that are seeds
    config_keys: list  # swept keys that are not seeds: a config is a group + these values


def swept(overrides: Sequence[Sequence[str]], manifest: dict, index: Optional[pd.Index] = None) -> Params:
    """The keys whose value differs between runs (a run without the key counts as a value)."""
    rows = []
    for items in overrides:
        row = {}
        for text in items:
            p = parse(text)
            if not injected(p.key):
                row[p.key] = "~" if p.deleted else p.value
        rows.append(row)
    frame = pd.DataFrame(rows, index=index, dtype=object)  # ints stay ints next to a missing value
    if len(frame):
        frame = frame[[c for c in frame.columns if frame[c].astype(str).nunique(dropna=False) > 1]]
    spec_seeds = seed_keys_of(manifest)
    seeds = [c for c in frame.columns if is_seed(c, spec_seeds)]
    return Params(frame, seeds, [c for c in frame.columns if c not in seeds])


def numeric(values: pd.Series) -> Optional[pd.Series]:
    """`values` as floats when every set value is a number (bools are not), else None."""
    present = values.dropna()
    if present.empty or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in present):
        return None
    return pd.to_numeric(values, errors="coerce")


def labels(values: pd.Series) -> pd.Series:
    """Category labels: the value as text, DEFAULT where the run does not set the key."""
    return values.map(lambda v: DEFAULT if v is None or (isinstance(v, float) and v != v) else str(v))
