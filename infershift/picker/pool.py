"""The live pool: endpoints from discovery, the current config and scheduler, swapped atomically."""
from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, replace

from .config import PickerConfig, StaticEndpoint
from .endpoints import Endpoint
from .lora import LoraLoader
from .metrics_parse import ENGINE_LABELS, ServerMetrics
from .scheduling import Scheduler, build_scheduler


@dataclass(frozen=True)
class Generation:
    """What one request uses from start to end, even if a reload replaces it meanwhile."""

    config: PickerConfig
    scheduler: Scheduler


@dataclass(frozen=True)
class Snapshot:
    """The routable endpoints as of `at` (`ready`: every endpoint of the pool; the stale ones read
    as saturated) and how many of them have fresh metrics; rebuilt at most every `snapshot_ttl`, so
    per-snapshot work (filters, load scores) is shared by the requests that arrive meanwhile."""

    id: int
    at: float
    ready: list
    fresh: int = 0


def stale_view(m: ServerMetrics, waiting: float) -> ServerMetrics:
    """How a stale endpoint reads to the scheduler: saturated (KV full, the longest queue of the pool),
    its adapters and cache geometry as last seen. Upstream's EPP scores endpoints with missing or
    stale metrics as 100 % saturated and, when every candidate is saturated, routes to them anyway
    (llm-d-router pkg/epp/framework/plugins/flowcontrol/saturationdetector/utilization/README.md);
    the saturation and admission filters here do the same with a KV usage of 1.0. The queue is the
    pool's longest plus one, not a huge number, so queue scores of fresh endpoints keep their spread."""
    return replace(m, waiting=waiting, kv_usage=1.0)


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
        self.on_endpoint_removed: list[Callable[[str], None]] = []  # address of each endpoint that left
        self.lora = LoraLoader(self)  # on-demand LoRA adapters (lora.onDemand)
        self.on_endpoint_removed.append(self.lora.forget)
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
        else:
            self._apply_on_demand()

    def _apply_on_demand(self) -> None:
        rules = self.lora.configure(getattr(self.gen.config, "lora_on_demand", None) or {})
        for e in self.endpoints.values():
            e.on_demand = rules

    def set_endpoints(self, eps: tuple[StaticEndpoint, ...] | list[StaticEndpoint]) -> None:
        new: dict[str, Endpoint] = {}
        layer = getattr(self.gen.config.scheduling, "data_layer", None)  # an EndpointPickerConfig's data layer
        label_key = getattr(layer, "engine_label_key", None)
        for s in eps:
            models = frozenset(s.models) if s.models is not None else None
            labels = dict(s.labels)
            engine = s.engine or next((labels[k] for k in (label_key, *ENGINE_LABELS) if k and labels.get(k)), None)
            old = self.endpoints.get(s.address)
            if old is not None and old.name == s.name:  # keep learned state (metrics, models) for endpoints that stay
                old.static_models, old.engine, old.labels = models, engine, labels
                new[s.address] = old
            else:  # new, or another server (pod) on an address seen before: start cold
                new[s.address] = Endpoint(s.address, s.name, models, engine=engine, labels=labels)
        gone = [a for a, e in self.endpoints.items() if new.get(a) is not e]
        changed = new.keys() != self.endpoints.keys() or bool(gone)
        self.endpoints = new
        self._snap = None
        self._apply_on_demand()
        for addr in gone:
            self.forget(addr)
        if changed:
            for cb in self.on_endpoints_changed:
                cb()

    def forget(self, address: str) -> None:
        """An endpoint left (or another server took its address): what was learned about it goes, so a
        new cold server there is not scored as holding the old one's prefixes."""
        sched = self.gen.scheduler
        for p in (*sched.filters, *(s for s, _ in sched.scorers), sched.picker):
            fn = getattr(p, "forget_endpoint", None)
            if fn is not None:
                fn(address)
        for cb in self.on_endpoint_removed:
            cb(address)

    def ready(self) -> list[Endpoint]:
        """Endpoints whose metrics are fresh (readiness counts these)."""
        now = self.clock()
        stale = self.gen.config.stale_after
        return [e for e in self.endpoints.values() if now - e.last_ok <= stale]

    def routable(self) -> tuple[list[Endpoint], int]:
        """Every endpoint, the stale ones marked and reading as saturated; and the count of fresh ones.
        A metrics outage thus degrades routing (everything looks saturated: sheddable requests are
        shed, the rest still routed) instead of turning into 503 for everything."""
        now = self.clock()
        stale_after = self.gen.config.stale_after
        eps = list(self.endpoints.values())
        fresh = [e for e in eps if now - e.last_ok <= stale_after]
        if len(fresh) == len(eps):
            for e in eps:
                if e.stale:
                    e.stale, e.metrics = False, e.scraped
            return eps, len(fresh)
        longest = max((e.scraped.waiting for e in (fresh or eps)), default=0.0) + 1.0
        for e in eps:
            if now - e.last_ok <= stale_after:
                if e.stale:
                    e.stale, e.metrics = False, e.scraped
            elif not e.stale or e.metrics.waiting != longest:
                e.stale, e.metrics = True, stale_view(e.scraped, longest)
        return eps, len(fresh)

    def snapshot(self) -> Snapshot:
        now = self.clock()
        s = self._snap
        if s is None or now - s.at >= self.snapshot_ttl or now < s.at:
            self._snap_ids += 1
            eps, fresh = self.routable()
            s = self._snap = Snapshot(self._snap_ids, now, eps, fresh)
        return s
