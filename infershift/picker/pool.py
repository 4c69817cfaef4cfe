"""The live pool: endpoints from discovery, the current config and scheduler, swapped atomically."""
from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from .config import PickerConfig, StaticEndpoint
from .endpoints import Endpoint
from .scheduling import Scheduler, build_scheduler


@dataclass(frozen=True)
class Generation:
    """What one request uses from start to end, even if a reload replaces it meanwhile."""

    config: PickerConfig
    scheduler: Scheduler


@dataclass(frozen=True)
class Snapshot:
    """The ready endpoints as of `at`; rebuilt at most every `snapshot_ttl`, so per-snapshot work
    (filters, load scores) is shared by the requests that arrive meanwhile."""

    id: int
    at: float
    ready: list


class Pool:
    def __init__(self, config: PickerConfig, clock: Callable[[], float], rng: random.Random, fallbacks: int = 0,
                 snapshot_ttl: float = 0.01):
        self.clock = clock
        self.rng = rng
        self.fallbacks = fallbacks
        self.snapshot_ttl = snapshot_ttl
        self._snap: Snapshot | None = None
        self._snap_ids = 0
        self.endpoints: dict[str, Endpoint] = {}
        self.on_endpoints_changed: list[Callable[[], None]] = []
        self.gen = Generation(config, build_scheduler(config.scheduling, rng, fallbacks=fallbacks))
        if config.endpoints is not None:
            self.set_endpoints(config.endpoints)

    def apply_config(self, config: PickerConfig) -> None:
        """Build everything first, then swap one reference: requests in flight keep the old generation."""
        sched = build_scheduler(config.scheduling, self.rng, previous=self.gen.scheduler, fallbacks=self.fallbacks)
        self.gen = Generation(config, sched)
        self._snap = None
        if config.endpoints is not None:
            self.set_endpoints(config.endpoints)

    def set_endpoints(self, eps: tuple[StaticEndpoint, ...] | list[StaticEndpoint]) -> None:
        new: dict[str, Endpoint] = {}
        for s in eps:
            models = frozenset(s.models) if s.models is not None else None
            old = self.endpoints.get(s.address)
            if old is not None:  # keep learned state (metrics, models) for endpoints that stay
                old.name, old.static_models = s.name, models
                new[s.address] = old
            else:
                new[s.address] = Endpoint(s.address, s.name, models)
        changed = new.keys() != self.endpoints.keys()
        self.endpoints = new
        self._snap = None
        if changed:
            for cb in self.on_endpoints_changed:
                cb()

    def ready(self) -> list[Endpoint]:
        """Endpoints whose metrics are fresh: stale or unreachable servers leave the candidate set."""
        now = self.clock()
        stale = self.gen.config.stale_after
        return [e for e in self.endpoints.values() if now - e.last_ok <= stale]

    def snapshot(self) -> Snapshot:
        now = self.clock()
        s = self._snap
        if s is None or now - s.at >= self.snapshot_ttl or now < s.at:
            self._snap_ids += 1
            s = self._snap = Snapshot(self._snap_ids, now, self.ready())
        return s
