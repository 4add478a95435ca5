"""Lazy expansion of a SweepSpec into PlannedRuns, run counting without expansion, run identity.

A block's runs are the Cartesian product of its axes (last axis varies fastest, as in Hydra's
BasicSweeper); blocks are concatenated. `exclude`, `shuffle` and `max_runs` apply to that
sequence, in that order.
"""
from __future__ import annotations

import hashlib
import itertools
import random
from typing import Any, Iterable, Iterator, Mapping, Optional, Sequence

from mfcl_sweeps.errors import SweepSpecError
from mfcl_sweeps.model import PlannedRun
from mfcl_sweeps.spec import limits
from mfcl_sweeps.spec import overrides as ov
from mfcl_sweeps.spec.types import Block, Setting, SweepSpec

HASH_CHARS = 16
INDEX_WIDTH = 5  # run ids sort by index up to 99,999 runs; larger indices just get longer
MAX_RUN_ID = 100


def config_hash(overrides: Iterable[str], env: Optional[Mapping[str, str]] = None) -> str:
    """A stable hash of a run's task overrides (and the extra job env it gets, e.g.
    MFCL_AMP_DTYPE, which changes the run without changing an override), independent of order."""
    items = sorted(o.strip() for o in overrides)
    items += sorted(f"env:{k}={v}" for k, v in (env or {}).items())
    return hashlib.sha1("\0".join(items).encode()).hexdigest()[:HASH_CHARS]


def make_run_id(index: int, group: str, combo: str) -> str:
    """`<index, zero-padded to 5>_<group>[_<combo>]`, filesystem-safe, at most 100 characters."""
    if index < 0:
        raise ValueError(f"a run index is >= 0, got {index}")
    run_id = f"{index:0{INDEX_WIDTH}d}_{ov.slug(group)}"
    if combo:
        run_id += f"_{combo}"
    return run_id[:MAX_RUN_ID].rstrip("_-")


# ----------------------------------------------------------------------------- matching


def _same(a: Any, b: Any) -> bool:
    return a == b and isinstance(a, bool) == isinstance(b, bool)


def _values(combo: Sequence[Setting]) -> dict:
    return {k: v for s in combo for k, v in s.values}


def _excluded(values: Mapping[str, Any], exclude: Sequence[tuple[tuple[str, Any], ...]]) -> bool:
    return any(all(k in values and _same(values[k], v) for k, v in entry) for entry in exclude)


def _block_matching(block: Block, assignment: Mapping[str, Any]) -> Optional[int]:
    """How many of the block's runs set every key of `assignment` to its value; None when a key
    is set by more than one axis (then only iterating knows)."""
    n, covered = 1, set()
    for axis in block.axes:
        axis_keys = {k for s in axis.settings for k, _ in s.values}
        relevant = [k for k in assignment if k in axis_keys]
        if not relevant:
            n *= len(axis.settings)
            continue
        if covered & set(relevant):
            return None
        covered.update(relevant)
        n *= sum(1 for s in axis.settings
                 if all(k in (vals := dict(s.values)) and _same(vals[k], assignment[k]) for k in relevant))
    return n if covered == set(assignment) else 0


def _merge(merged: Mapping[str, Any], entry: tuple[tuple[str, Any], ...]) -> Optional[dict]:
    """The assignment matching `merged` and `entry` at once, or None if they contradict."""
    out = dict(merged)
    for k, v in entry:
        if k in out and not _same(out[k], v):
            return None
        out[k] = v
    return out


def _excluded_count(block: Block, exclude: Sequence[tuple[tuple[str, Any], ...]]) -> Optional[int]:
    """How many of the block's runs `exclude` drops, by inclusion-exclusion over the subsets of
    entries that can match together (a contradicting or empty subset prunes all its supersets);
    None if only iterating can tell (a key set by two axes, or more than MAX_COUNT_STEPS terms)."""
    removed, steps = 0, 0
    stack: list[tuple[int, dict, int]] = [(0, {}, 1)]  # (next entry, merged assignment, sign)
    while stack:
        start, merged, sign = stack.pop()
        for i in range(start, len(exclude)):
            both = _merge(merged, exclude[i])
            if both is None:
                continue
            steps += 1
            matching = _block_matching(block, both) if steps <= limits.MAX_COUNT_STEPS else None
            if matching is None:
                return None
            if matching:
                removed += sign * matching
                stack.append((i + 1, both, -sign))
    return removed


def _block_count(block: Block, exclude: Sequence[tuple[tuple[str, Any], ...]], spec: SweepSpec) -> int:
    if not exclude:
        return block.size
    removed = _excluded_count(block, exclude)
    if removed is not None:
        return block.size - removed
    if block.size > limits.MAX_COUNT_STEPS:
        key, file, line = spec.exclude_at
        raise SweepSpecError(f"cannot count {block.size:,} runs against {len(exclude)} exclude entries "
                             "without listing them; use fewer entries, or entries that each fix the "
                             "keys of one axis", key=key, file=file, line=line)
    return sum(1 for combo in _block_combos(block) if not _excluded(_values(combo), exclude))


def count(spec: SweepSpec) -> int:
    """The number of runs `iter_runs(spec)` yields, computed without expanding plain grids."""
    total = sum(_block_count(block, spec.exclude, spec) for block in spec.blocks)
    return total if spec.max_runs is None else min(total, spec.max_runs)


def count_by_group(spec: SweepSpec) -> Optional[dict[str, int]]:
    """Runs per group, as `count` counts them; None when only listing the runs can tell (a
    random sample: max_runs of shuffled runs)."""
    if spec.shuffle and spec.max_runs is not None:
        return None
    left = spec.max_runs
    out: dict[str, int] = {}
    for block in spec.blocks:
        n = _block_count(block, spec.exclude, spec)
        if left is not None:
            n, left = min(n, left), left - min(n, left)
        out[block.group] = out.get(block.group, 0) + n
    return out


def check_not_empty(spec: SweepSpec) -> None:
    """A one-line error, at the exclude entries, when they remove every run of `spec`; and at
    `shuffle` when it would have to permute more runs than fit in memory."""
    total = sum(block.size for block in spec.blocks)
    if spec.shuffle and spec.max_runs is None and total > limits.MAX_SHUFFLED:
        raise SweepSpecError(limits.too_many("shuffle of every run", total, limits.MAX_SHUFFLED,
                                             "set hydra.sweeper.max_runs to run a random sample"), key="shuffle")
    for i, entry in enumerate(spec.exclude):
        if all(_block_matching(block, dict(entry)) == 0 for block in spec.blocks):
            _, file, line = spec.exclude_at
            shown = ", ".join(f"{k}={v!r}" for k, v in entry)
            raise SweepSpecError(f"matches no run ({shown} never occurs together); fix or drop it",
                                 key=f"exclude[{i}]", file=file, line=line)
    if spec.exclude and count(spec) == 0:
        key, file, line = spec.exclude_at
        raise SweepSpecError("the exclude entries remove every run: nothing left to sweep",
                             key=key, file=file, line=line)


# ----------------------------------------------------------------------------- expansion


def _block_combos(block: Block) -> Iterator[tuple[Setting, ...]]:
    return itertools.product(*(axis.settings for axis in block.axes))


def _combo_at(spec: SweepSpec, position: int) -> tuple[Block, tuple[Setting, ...]]:
    """The run at `position` of the unshuffled, unfiltered sequence (mixed-radix decoding)."""
    for block in spec.blocks:
        if position < block.size:
            picked = []
            for axis in reversed(block.axes):
                position, i = divmod(position, len(axis.settings))
                picked.append(axis.settings[i])
            return block, tuple(reversed(picked))
        position -= block.size
    raise IndexError(position)


def _ordered(spec: SweepSpec) -> Iterator[tuple[Block, tuple[Setting, ...]]]:
    if not spec.shuffle:
        for block in spec.blocks:
            for combo in _block_combos(block):
                yield block, combo
        return
    total = sum(block.size for block in spec.blocks)
    rng = random.Random(spec.seed)
    if spec.exclude and spec.max_runs is not None and total > limits.MAX_SHUFFLED:
        # too many to permute: distinct positions drawn one by one, until max_runs pass exclude
        seen: set[int] = set()
        while len(seen) < total:
            position = rng.randrange(total)
            if position not in seen:
                seen.add(position)
                yield _combo_at(spec, position)
        return
    # Without exclude only max_runs positions are ever needed: sample just those.
    wanted = total if spec.exclude or spec.max_runs is None else min(spec.max_runs, total)
    for position in rng.sample(range(total), wanted):
        yield _combo_at(spec, position)


def _planned(block: Block, combo: Sequence[Setting], position: int) -> PlannedRun:
    overrides = tuple(o for s in combo for o in s.overrides)
    env = {k: v for s in combo for k, v in s.env}
    resources, metadata = block.resources, dict(block.metadata)
    name = budget = None
    for s in combo:
        if s.resources is not None:
            resources = s.resources.merged_over(resources)
        metadata.update(s.metadata)
        name = s.name if s.name is not None else name
        budget = s.budget if s.budget is not None else budget
    return PlannedRun(
        overrides=overrides, config_hash=config_hash(overrides, env), group=block.group,
        combo="_".join(s.slug for s in combo if s.slug), name=name, env=env, resources=resources,
        budget=budget, metadata=metadata, position=position,
    )


def iter_runs(spec: SweepSpec) -> Iterator[PlannedRun]:
    """The runs of `spec`, lazily, with `position` set (index and run_id come from the manifest)."""
    position = 0
    for block, combo in _ordered(spec):
        if spec.max_runs is not None and position >= spec.max_runs:
            return
        if spec.exclude and _excluded(_values(combo), spec.exclude):
            continue
        yield _planned(block, combo, position)
        position += 1
