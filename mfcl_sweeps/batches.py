"""How a sweep's runs are cut into launch() calls: fixed-size batches (`max_batch_size`), the
growing batches Hydra's own launchers get otherwise, and chunks of consecutive run indices."""
from __future__ import annotations

import itertools
from typing import Iterable, Iterator, Sequence

from mfcl_sweeps.model import PlannedRun


def contiguous_chunks(runs: Sequence[PlannedRun]) -> Iterator[list[PlannedRun]]:
    """Split runs into chunks of consecutive indices, so a launcher numbering jobs
    `initial_job_idx + position` gives each run its own index."""
    chunk: list[PlannedRun] = []
    for run in runs:
        if chunk and run.index != chunk[-1].index + 1:
            yield chunk
            chunk = []
        chunk.append(run)
    if chunk:
        yield chunk


def batched(it: Iterable[PlannedRun], n: int) -> Iterator[list[PlannedRun]]:
    it = iter(it)
    while batch := list(itertools.islice(it, n)):
        yield batch


FIRST_BATCH = 100  # runs in the first launch() call to a launcher of Hydra's; each next call doubles


def growing_batches(it: Iterable[PlannedRun], first: int = FIRST_BATCH) -> Iterator[list[PlannedRun]]:
    """Batches of `first`, 2*`first`, 4*`first`... runs, taken from `it` only when asked for.
    The first job then waits for `first` runs' identities whatever the sweep's size, and a
    sweep of N runs makes about log2(N / first) calls (a launcher that runs a batch in parallel
    drains at each boundary; with doubling that is a few job lengths over a whole sweep)."""
    it, size = iter(it), first
    while batch := list(itertools.islice(it, size)):
        yield batch
        size *= 2
