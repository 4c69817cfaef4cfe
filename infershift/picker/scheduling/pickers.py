"""Pickers: turn weighted scores into a primary endpoint plus fallbacks."""
from __future__ import annotations

import random
from collections.abc import Sequence

from ..endpoints import Endpoint
from .plugins import Picker, SchedRequest


class MaxScorePicker(Picker):
    """Highest score wins; ties broken at random; fallbacks follow in score order."""

    type_name = "max-score-picker"
    parameter_names = ()

    def __init__(self, name: str, parameters: dict, rng: random.Random):
        super().__init__(name, parameters)
        self.rng = rng

    def pick(self, req: SchedRequest, eps: Sequence[Endpoint], scores: list[float], n: int) -> list[Endpoint]:
        if n == 1:
            best = max(scores) - 1e-9
            top = [i for i, s in enumerate(scores) if s >= best]
            return [eps[top[0] if len(top) == 1 else self.rng.choice(top)]]
        rnd = self.rng.random
        order = sorted(zip(scores, [rnd() for _ in eps], range(len(eps))), reverse=True)
        return [eps[i] for _, _, i in order[:n]]


class RandomPicker(Picker):
    type_name = "random-picker"
    parameter_names = ()

    def __init__(self, name: str, parameters: dict, rng: random.Random):
        super().__init__(name, parameters)
        self.rng = rng

    def pick(self, req: SchedRequest, eps: Sequence[Endpoint], scores: list[float], n: int) -> list[Endpoint]:
        return self.rng.sample(list(eps), min(n, len(eps)))


class RoundRobinPicker(Picker):
    """Baseline: cycle through the candidates in address order, ignoring scores."""

    type_name = "round-robin-picker"
    parameter_names = ()

    def __init__(self, name: str, parameters: dict, rng: random.Random):
        super().__init__(name, parameters)
        self.next = 0

    def pick(self, req: SchedRequest, eps: Sequence[Endpoint], scores: list[float], n: int) -> list[Endpoint]:
        ordered = sorted(eps, key=lambda e: e.address)
        start = self.next % len(ordered)
        self.next += 1
        rotated = ordered[start:] + ordered[:start]
        return rotated[:n]
