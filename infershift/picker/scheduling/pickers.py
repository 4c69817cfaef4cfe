"""Pickers: turn weighted scores into a primary endpoint plus fallbacks."""
from __future__ import annotations

import random
from collections.abc import Sequence

from ..endpoints import Endpoint
from ..errors import ConfigError
from .plugins import Picker, SchedRequest


def _max_endpoints(name: str, parameters: dict) -> int:
    """Upstream's `maxNumOfEndpoints`: how many endpoints the picker returns (primary + fallbacks)."""
    n = parameters.get("maxNumOfEndpoints", 1)
    if isinstance(n, bool) or not isinstance(n, int):
        raise ConfigError(f"scheduling plugin {name}.parameters.maxNumOfEndpoints: expected an integer, got {n!r}")
    return n if n > 0 else 1  # upstream: a value <= 0 falls back to the default


class MaxScorePicker(Picker):
    """Highest score wins; ties broken at random; fallbacks follow in score order."""

    type_name = "max-score-picker"
    parameter_names = ("maxNumOfEndpoints",)

    def __init__(self, name: str, parameters: dict, rng: random.Random):
        super().__init__(name, parameters)
        self.rng = rng
        self.max_endpoints = _max_endpoints(name, parameters)

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
    parameter_names = ("maxNumOfEndpoints",)

    def __init__(self, name: str, parameters: dict, rng: random.Random):
        super().__init__(name, parameters)
        self.rng = rng
        self.max_endpoints = _max_endpoints(name, parameters)

    def pick(self, req: SchedRequest, eps: Sequence[Endpoint], scores: list[float], n: int) -> list[Endpoint]:
        return self.rng.sample(list(eps), min(n, len(eps)))


class WeightedRandomPicker(Picker):
    """Upstream's weighted-random-picker: endpoints drawn with probability proportional to their
    score (A-Res: key = u ** (1 / score), highest keys win); uniform when every score is 0."""

    type_name = "weighted-random-picker"
    parameter_names = ("maxNumOfEndpoints",)

    def __init__(self, name: str, parameters: dict, rng: random.Random):
        super().__init__(name, parameters)
        self.rng = rng
        self.max_endpoints = _max_endpoints(name, parameters)

    def pick(self, req: SchedRequest, eps: Sequence[Endpoint], scores: list[float], n: int) -> list[Endpoint]:
        if not any(s > 0 for s in scores):
            return self.rng.sample(list(eps), min(n, len(eps)))
        rnd = self.rng.random
        keys = [(rnd() or 1e-10) ** (1.0 / s) if s > 0 else 0.0 for s in scores]
        order = sorted(range(len(eps)), key=keys.__getitem__, reverse=True)
        return [eps[i] for i in order[:n]]


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
