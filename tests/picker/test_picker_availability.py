"""Availability, in process: stale endpoints stay routable as saturated servers (upstream's EPP
scores endpoints with stale metrics as saturated and, when every candidate is, routes anyway); the
prefix index forgets endpoints that leave or whose address another server takes."""
from __future__ import annotations

import json
import random

import pytest

from infershift.picker.config import StaticEndpoint, parse_config
from infershift.picker.decide import decide
from infershift.picker.errors import Shed
from infershift.picker.metrics_parse import ServerMetrics
from infershift.picker.pool import Pool
from infershift.picker.scheduling.prefix import PrefixCacheScorer, PrefixIndex


class Clock:
    def __init__(self, t=100.0):
        self.t = t

    def __call__(self):
        return self.t


def make(n=3, **over):
    cfg = parse_config({"endpoints": [{"address": f"10.0.0.{i}:8000", "models": ["llama"]} for i in range(1, n + 1)],
                        "models": {"batch": {"criticality": "Sheddable", "targets": [{"model": "llama"}]}},
                        "metrics": {"staleAfter": "1s"}, **over})
    clock = Clock()
    pool = Pool(cfg, clock=clock, rng=random.Random(5), snapshot_ttl=0.0)
    for e in pool.endpoints.values():
        e.scraped = e.metrics = ServerMetrics(waiting=1.0, running=2.0, kv_usage=0.2, engine="vllm")
        e.last_ok = clock.t
    return pool, clock


def body(model: str, prompt: str = "hello") -> bytes:
    return json.dumps({"model": model, "prompt": prompt}).encode()


def route(pool, model="llama", prompt="hello"):
    return decide(pool, pool.gen, {":path": "/v1/completions", "content-type": "application/json"},
                  body(model, prompt), None)


def test_stale_endpoint_reads_saturated_and_gets_nothing_while_fresh_ones_have_room():
    pool, clock = make()
    a1 = pool.endpoints["10.0.0.1:8000"]
    a1.last_ok = clock.t - 5  # its scrapes fail from here on
    snap = pool.snapshot()
    assert len(snap.ready) == 3 and snap.fresh == 2  # still a candidate
    assert a1.stale and a1.metrics.kv_usage == 1.0 and a1.metrics.waiting == 2.0  # the longest queue + 1
    assert a1.scraped.kv_usage == 0.2  # what it last said is kept
    chosen = {route(pool, prompt=f"p{i}").endpoints[0].address for i in range(30)}
    assert "10.0.0.1:8000" not in chosen
    assert [e.address for e in pool.ready()] == ["10.0.0.2:8000", "10.0.0.3:8000"]  # readiness counts fresh ones


def test_metrics_outage_sheds_sheddable_and_routes_the_rest():
    pool, clock = make(flowControl=False)  # flow control would queue the sheddable one instead
    clock.t += 10  # every scrape fails: no endpoint fresh
    assert pool.snapshot().fresh == 0 and not pool.ready()
    with pytest.raises(Shed):
        route(pool, "batch")
    d = route(pool, "llama")  # not a 503: routed to one of them, as to a saturated server
    assert d.endpoints[0].address in pool.endpoints


def test_a_stale_endpoint_back_reads_as_scraped():
    pool, clock = make()
    a1 = pool.endpoints["10.0.0.1:8000"]
    a1.last_ok = clock.t - 5
    pool.snapshot()
    assert a1.stale
    a1.last_ok = clock.t  # a good scrape again (the scraper also resets metrics and stale)
    pool.snapshot()
    assert not a1.stale and a1.metrics is a1.scraped


def test_prefix_index_forgets():
    idx = PrefixIndex(100)
    idx.add("a", [1, 2, 3])
    idx.add("b", [1, 2])
    idx.forget("a")
    assert idx.matched([1, 2, 3]) == {"b": 2} and "a" not in idx.lru and 3 not in idx.by_hash
    idx.forget("nobody")


def _prefix_scorer(pool) -> PrefixCacheScorer:
    return next(s for s, _ in pool.gen.scheduler.scorers if isinstance(s, PrefixCacheScorer))


def test_endpoint_that_leaves_is_forgotten_and_a_new_server_on_its_address_starts_cold():
    pool, _ = make()
    prompt = "x" * 640
    first = route(pool, prompt=prompt).endpoints[0].address
    idx = _prefix_scorer(pool).index
    assert first in idx.lru
    # the endpoint leaves: its prefixes go
    pool.set_endpoints([StaticEndpoint(a, a, ("llama",)) for a in pool.endpoints if a != first])
    assert first not in idx.lru
    # another pod takes an address: same address, a new name -> cold, and the index forgets the old one
    again = route(pool, prompt=prompt).endpoints[0].address
    assert again in idx.lru
    old = pool.endpoints[again]
    pool.set_endpoints([StaticEndpoint(a, "new-pod" if a == again else e.name, ("llama",))
                        for a, e in pool.endpoints.items()])
    assert again not in idx.lru and pool.endpoints[again] is not old
    assert pool.endpoints[again].last_ok < -1e17  # nothing learned about the new server yet


def test_prefix_index_survives_a_reload_and_still_forgets():
    pool, _ = make()
    addr = route(pool, prompt="y" * 640).endpoints[0].address
    pool.apply_config(pool.gen.config)
    idx = _prefix_scorer(pool).index
    assert addr in idx.lru
    pool.set_endpoints([StaticEndpoint(a, a, ("llama",)) for a in pool.endpoints if a != addr])
    assert addr not in idx.lru
