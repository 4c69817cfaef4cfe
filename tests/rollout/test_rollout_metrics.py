"""Windows from the pickers' /metrics and from a real Prometheus scraping them, on the local
stack: the same requests give the same windows."""
from __future__ import annotations

import time

import pytest

from infershift.devstack import prometheus
from infershift.devstack.traffic import burst, chat_body
from infershift.rollout.metrics import MetricsPages, Prometheus, Side, window

POOLS = ("pool-v1", "pool-v2")


def _pages(stack) -> MetricsPages:
    return MetricsPages({p: [f"http://127.0.0.1:{stack.pools[p].metrics_port}/metrics"] for p in POOLS})


def _traffic(stack) -> None:
    url = stack.url() + "/v1/chat/completions"
    assert burst(url, chat_body("mymodel", max_tokens=8), 30, concurrency=4).ok == 30
    assert burst(url, chat_body("mymodel", max_tokens=8), 20, headers={"x-canary": "true"}, concurrency=4).ok == 20
    assert burst(url, chat_body("helper", max_tokens=8), 10, concurrency=4).ok == 10


def _settled(source, pools=POOLS, timeout=20.0):
    """A snapshot once the pickers' counters stop moving (responses are counted as they finish)."""
    last = None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        snap = source.snapshot(pools)
        state = {p: sorted(s[1].items()) for p, s in snap.items()}
        if state == last:
            return snap
        last = state
        time.sleep(1.5)
    return snap


def test_metrics_pages_window(rollout_stack):
    pages = _pages(rollout_stack)
    before = _settled(pages)
    _traffic(rollout_stack)
    after = _settled(pages)
    stable = window(before["pool-v1"], after["pool-v1"], Side("pool-v1"))
    canary = window(before["pool-v2"], after["pool-v2"], Side("pool-v2"))
    helper = window(before["pool-v1"], after["pool-v1"], Side("pool-v1", "helper-v1"))
    assert (stable.responses, canary.responses, helper.responses) == (40, 20, 10)
    assert (stable.errors, canary.errors, stable.shed) == (0, 0, 0)
    for w, n in ((stable, 40), (canary, 20), (helper, 10)):
        assert w.e2e.count == n and w.ttft.count == n and w.itl.count == n
        assert w.output_tokens == 8 * n and w.latency_seconds > 0
        assert 0 < w.ttft.quantile(0.9) <= w.e2e.quantile(0.9) + 1e-9


def test_prometheus_window_matches_the_pages(rollout_stack):
    if prometheus.binary() is None:
        pytest.skip("no prometheus binary on this machine (apt-get install prometheus; CI installs it)")
    url = prometheus.start(rollout_stack)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and set(prometheus.targets_up(url).get(f"{p}-epp") for p in POOLS) != {"up"}:
        time.sleep(0.5)
    assert {prometheus.targets_up(url)[f"{p}-epp"] for p in POOLS} == {"up"}
    prom, pages = Prometheus(url), _pages(rollout_stack)

    deadline = time.monotonic() + 30
    while True:
        page_before = _settled(pages)
        prom_before = prom.snapshot(POOLS)
        if sum(v for (n, _), v in prom_before["pool-v1"][1].items() if n.endswith("responses_total")) == \
                sum(v for (n, _), v in page_before["pool-v1"][1].items() if n.endswith("responses_total")):
            break
        assert time.monotonic() < deadline, "Prometheus never caught up with the pickers' pages"
        time.sleep(1.0)
    _traffic(rollout_stack)
    page_after = _settled(pages)
    deadline = time.monotonic() + 30
    while True:
        prom_after = prom.snapshot(POOLS)
        done = all(window(prom_before[p], prom_after[p], Side(p)).responses ==
                   window(page_before[p], page_after[p], Side(p)).responses for p in POOLS)
        if done:
            break
        assert time.monotonic() < deadline, "Prometheus never caught up with the pickers' pages"
        time.sleep(1.0)
    for side in (Side("pool-v1"), Side("pool-v2"), Side("pool-v1", "helper-v1")):
        a = window(page_before[side.pool], page_after[side.pool], side)
        b = window(prom_before[side.pool], prom_after[side.pool], side)
        assert (b.responses, b.errors, b.shed, b.output_tokens) == (a.responses, a.errors, a.shed, a.output_tokens)
        assert b.latency_seconds == pytest.approx(a.latency_seconds)
        for h in ("ttft", "itl", "e2e"):
            assert getattr(b, h).counts == getattr(a, h).counts and getattr(b, h).bounds == getattr(a, h).bounds
    assert window(prom_before["pool-v2"], prom_after["pool-v2"], Side("pool-v2")).responses == 20
    # the queries the report shows run on this Prometheus and agree on the request count
    q = prom.queries(Side("pool-v2"))
    assert all("$window" in x for x in q)
    got = prom.query(f'sum({"infershift_picker_target_responses_total"}{{job="pool-v2-epp"}})')
    assert float(got[0]["value"][1]) >= 20
