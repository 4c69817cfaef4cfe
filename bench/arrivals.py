"""Open-loop arrival schedules."""
from __future__ import annotations

import random


def poisson_offsets(rate: float, count: int, rng: random.Random, duration: float | None = None) -> list[float]:
    """Send times (seconds from start) of a Poisson process at `rate` per second.

    Bounded by `count` and, if given, by `duration`: whichever comes first.
    """
    if rate <= 0:
        raise ValueError(f"rate must be > 0 requests/s, got {rate}")
    if count < 0:
        raise ValueError(f"count must be >= 0, got {count}")
    out: list[float] = []
    t = 0.0
    while len(out) < count:
        t += rng.expovariate(rate)
        if duration is not None and t > duration:
            break
        out.append(t)
    return out
