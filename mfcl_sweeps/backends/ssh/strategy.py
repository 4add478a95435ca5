"""Which host gets the next job: pure choice functions over the hosts' current load."""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Optional, Sequence


@dataclass(frozen=True)
class HostLoad:
    slots: int
    running: int
    started: int = 0  # jobs sent to this host so far in this launch
    weight: float = 1.0
    enabled: bool = True

    @property
    def free(self) -> bool:
        return self.enabled and self.running < self.slots


def least_loaded(hosts: Sequence[HostLoad], turn: int, rng: random.Random) -> int:
    """The host with the smallest busy fraction; ties go to the earlier host."""
    return min((i for i, h in enumerate(hosts) if h.free), key=lambda i: hosts[i].running / hosts[i].slots)


def round_robin(hosts: Sequence[HostLoad], turn: int, rng: random.Random) -> int:
    """The first host with a free slot at or after position `turn` (cyclically)."""
    n = len(hosts)
    return next((turn + k) % n for k in range(n) if hosts[(turn + k) % n].free)


def random_choice(hosts: Sequence[HostLoad], turn: int, rng: random.Random) -> int:
    return rng.choice([i for i, h in enumerate(hosts) if h.free])


def weighted(hosts: Sequence[HostLoad], turn: int, rng: random.Random) -> int:
    """Jobs in proportion to weight: the host furthest below its share (fewest started per
    unit of weight, counting this one); ties go to the heavier, then the earlier host."""
    return min((i for i, h in enumerate(hosts) if h.free),
               key=lambda i: ((hosts[i].started + 1) / hosts[i].weight, -hosts[i].weight, i))


CHOOSERS = {"least_loaded": least_loaded, "round_robin": round_robin, "random": random_choice, "weighted": weighted}


def choose(strategy: str, hosts: Sequence[HostLoad], turn: int, rng: random.Random) -> Optional[int]:
    """Index of the host for the next job, or None when no enabled host has a free slot."""
    if not any(h.free for h in hosts):
        return None
    return CHOOSERS[strategy](hosts, turn, rng)
