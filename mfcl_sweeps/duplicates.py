"""Repeated configs in an mfcl sweep: dropped up front, so every config runs once and the
manifest's total is the number of jobs run (records are keyed by config hash).

Checking costs a pass over every run's hash, so it is done only when the spec's structure allows
a repeat at all: several blocks, an axis with the same setting twice, or two axes setting one key.
A plain grid of distinct values (the 1,000,000-run case) is never scanned.
"""
from __future__ import annotations

import dataclasses
from collections import Counter
from typing import Iterator

from mfcl_sweeps.expand import count_by_group, iter_runs
from mfcl_sweeps.model import PlannedRun
from mfcl_sweeps.spec.types import SweepSpec


def _key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def may_repeat(spec: SweepSpec) -> bool:
    if len(spec.blocks) > 1:
        return True
    for block in spec.blocks:
        keys_so_far: set[str] = set()
        for axis in block.axes:
            settings = {(frozenset(s.overrides), s.env) for s in axis.settings}
            keys = {_key(o) for s in axis.settings for o in s.overrides}
            if len(settings) < len(axis.settings) or keys & keys_so_far:
                return True
            keys_so_far |= keys
    return False


def count_repeats(spec: SweepSpec) -> int:
    """How many runs repeat the config of an earlier run."""
    if not may_repeat(spec):
        return 0
    seen: set[str] = set()
    repeats = 0
    for run in iter_runs(spec):
        repeats += run.config_hash in seen
        seen.add(run.config_hash)
    return repeats


def unique_runs(spec: SweepSpec, repeats: int) -> Iterator[PlannedRun]:
    """`iter_runs(spec)` without the runs whose config an earlier run has (`repeats` from
    `count_repeats`: with none, no set of hashes is kept), numbered 0, 1, 2, ..."""
    if not repeats:
        yield from iter_runs(spec)
        return
    seen: set[str] = set()
    for run in iter_runs(spec):
        if run.config_hash not in seen:
            # renumbered, so that indices stay contiguous (Hydra's launchers number jobs in a row)
            yield dataclasses.replace(run, position=len(seen))
            seen.add(run.config_hash)


MAX_LISTED = 100_000  # runs of a random sample listed to count them per group


def runs_by_group(spec: SweepSpec, repeats: int) -> dict[str, int]:
    """How many of `unique_runs(spec, repeats)` each group has: closed-form for plain grids;
    listed only when repeats or a random sample make that the one way to know."""
    by_group = None if repeats else count_by_group(spec)
    if by_group is None and not repeats and spec.max_runs > MAX_LISTED:
        return {}  # a huge random sample is not listed twice before its first job: status counts it as a whole
    if by_group is None:
        by_group = dict(Counter(run.group for run in unique_runs(spec, repeats)))
    return by_group
