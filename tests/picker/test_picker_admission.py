"""Admission by criticality on endpoint state parsed from vLLM-format /metrics text (no I/O)."""
from __future__ import annotations

import random

import pytest

from infershift.picker.config import parse_config, parse_scheduling
from infershift.picker.endpoints import Endpoint
from infershift.picker.errors import ConfigError, Shed
from infershift.picker.metrics_parse import parse_metrics
from infershift.picker.scheduling import SchedRequest, build_scheduler


def vllm_metrics(waiting: int, running: int, kv: float) -> str:
    """The series a vLLM server exposes that admission reads (one model_name, like a real scrape)."""
    lab = 'engine="0",model_name="llama"'
    return "\n".join([
        "# HELP vllm:num_requests_waiting Number of requests waiting to be processed.",
        "# TYPE vllm:num_requests_waiting gauge",
        f"vllm:num_requests_waiting{{{lab}}} {float(waiting)}",
        "# TYPE vllm:num_requests_running gauge",
        f"vllm:num_requests_running{{{lab}}} {float(running)}",
        "# TYPE vllm:kv_cache_usage_perc gauge",
        f"vllm:kv_cache_usage_perc{{{lab}}} {kv}",
        "",
    ])


def ep(i: int, waiting: int, running: int = 8, kv: float = 0.3) -> Endpoint:
    e = Endpoint(f"10.0.0.{i}:8000", f"e{i}", frozenset({"llama"}))
    e.base_models = frozenset({"llama"})
    e.metrics = parse_metrics(vllm_metrics(waiting, running, kv))
    return e


def sched(admission: dict | None = None, seed: int = 1):
    if admission is None:
        # the default profile, flow control off: what admission does when requests are not queued
        spec = parse_config({"endpoints": [], "flowControl": False}).scheduling
    else:
        spec = parse_config({"endpoints": [], "scheduling": {
            "plugins": [{"type": "model-filter"}, {"type": "saturation-filter"},
                        {"type": "admission-filter", "parameters": admission},
                        {"type": "queue-scorer"}, {"type": "max-score-picker"}],
            "schedulingProfiles": [{"name": "default", "plugins": [
                {"pluginRef": "model-filter"}, {"pluginRef": "saturation-filter"}, {"pluginRef": "admission-filter"},
                {"pluginRef": "queue-scorer", "weight": 1}, {"pluginRef": "max-score-picker"}]}]}}).scheduling
    return build_scheduler(spec, random.Random(seed))


def picks(s, eps, sheddable: bool, n: int = 30) -> set[str]:
    return {s.schedule(SchedRequest("llama", f"p{i}", sheddable=sheddable), eps)[0].address for i in range(n)}


def test_default_profile_has_admission():
    assert [f.name for f in sched().filters] == ["model-filter", "saturation-filter", "admission-filter"]


def test_sheddable_admitted_while_some_endpoint_has_an_empty_queue():
    eps = [ep(1, waiting=3), ep(2, waiting=0, running=6), ep(3, waiting=2)]
    s = sched()
    assert picks(s, eps, sheddable=True) == {"10.0.0.2:8000"}
    assert s.filters[-1].filter(SchedRequest("llama", sheddable=True), eps) == [eps[1]]
    # Critical/Standard keep every candidate (no endpoint is saturated): the scorers decide
    assert s.filters[-1].filter(SchedRequest("llama"), eps) == eps
    assert picks(s, eps, sheddable=False) == {"10.0.0.2:8000"}  # here the queue scorer's choice


def test_busy_but_not_saturated_pool_sheds_sheddable_routes_critical_to_short_queues():
    # every batch full and a queue everywhere, yet no endpoint is past the saturation filter's 5
    eps = [ep(1, waiting=1), ep(2, waiting=4), ep(3, waiting=2), ep(4, waiting=5)]
    s = sched()
    with pytest.raises(Shed) as e:
        s.schedule(SchedRequest("llama", "x", sheddable=True), eps)
    assert e.value.status == 429 and e.value.code == "pool_saturated"
    assert "sheddable" in e.value.message
    # critical (and standard) traffic keeps every candidate: none is past the critical thresholds (5, 0.8)
    assert s.filters[-1].filter(SchedRequest("llama"), eps) == eps
    assert s.schedule(SchedRequest("llama", "x"), eps)[0].address == "10.0.0.1:8000"  # shortest queue wins
    # a lower critical threshold narrows them to the endpoints within criticalQueueSlack (1) of the shortest
    assert sched({"criticalQueueDepthThreshold": 0}).filters[-1].filter(SchedRequest("llama"), eps) == [eps[0], eps[2]]


def test_standard_and_critical_keep_prefix_affinity_behind_a_short_queue():
    # The regression of issue 13: narrowing every request to empty queues broke prefix affinity.
    s = sched()  # default profile: the prefix scorer (weight 3) outweighs the queue scorer (2)
    prompt = "You are a travel assistant. " * 20
    first = [ep(1, waiting=1), ep(2, waiting=0), ep(3, waiting=2)]
    assert s.schedule(SchedRequest("llama", prompt + "q0"), first)[0].address == "10.0.0.2:8000"
    # 10.0.0.2 now holds the prefix and has the longest queue, but within the saturation level (5)
    later = [ep(1, waiting=1), ep(2, waiting=4), ep(3, waiting=2), ep(4, waiting=0)]
    for i in range(1, 10):
        assert s.schedule(SchedRequest("llama", prompt + f"q{i}"), later)[0].address == "10.0.0.2:8000"
    # the same as without the admission filter
    no_admission = build_scheduler(parse_config({"endpoints": [], "scheduling": {
        "plugins": [p for p in _default_plugins() if p["type"] != "admission-filter"],
        "schedulingProfiles": [{"name": "default", "plugins": [
            e for e in _default_profile()["plugins"] if e["pluginRef"] != "admission-filter"]}]}}).scheduling,
        random.Random(1))
    assert no_admission.schedule(SchedRequest("llama", prompt + "q0"), first)[0].address == "10.0.0.2:8000"
    assert no_admission.schedule(SchedRequest("llama", prompt + "q1"), later)[0].address == "10.0.0.2:8000"
    # a sheddable request with the same prefix goes to the only empty queue instead
    assert s.schedule(SchedRequest("llama", prompt + "s", sheddable=True), later)[0].address == "10.0.0.4:8000"


def test_at_saturation_critical_leaves_a_cached_prefix_behind_a_long_queue():
    s = sched()
    prompt = "You are a travel assistant. " * 20
    assert s.schedule(SchedRequest("llama", prompt), [ep(1, waiting=1), ep(2, waiting=0)])[0].address == "10.0.0.2:8000"
    # every endpoint past 5 waiting: the saturation filter keeps them all, admission the shortest queues
    saturated = [ep(1, waiting=7), ep(2, waiting=12), ep(3, waiting=8)]
    assert s.filters[-1].filter(SchedRequest("llama"), saturated) == [saturated[0], saturated[2]]
    assert {s.schedule(SchedRequest("llama", prompt + f"{i}"), saturated)[0].address for i in range(10)} == {
        "10.0.0.1:8000"}
    with pytest.raises(Shed):
        s.schedule(SchedRequest("llama", prompt, sheddable=True), saturated)
    # KV past the critical threshold counts as saturated too
    full_kv = [ep(1, waiting=1, kv=0.85), ep(2, waiting=3, kv=0.9)]
    assert s.filters[-1].filter(SchedRequest("llama"), full_kv) == [full_kv[0]]
    assert sched({"criticalKvCacheThreshold": 0.95}).filters[-1].filter(SchedRequest("llama"), full_kv) == full_kv


def test_shared_snapshot_work_is_kept_apart_for_sheddable_and_other_requests():
    # The scheduler shares filter results per snapshot; sheddable and critical requests must not
    # get each other's candidates, whichever comes first in the snapshot.
    eps = [ep(1, waiting=2), ep(2, waiting=0, running=6), ep(3, waiting=1)]
    prompt = "You are a travel assistant. " * 20
    for order in ((False, True), (True, False)):
        s = sched()
        s.schedule(SchedRequest("llama", prompt), [ep(1, waiting=0), ep(2, waiting=1), ep(3, waiting=1)])
        # the sheddable request's prompt is unrelated, so its pick teaches the prefix index nothing
        got = {sh: s.schedule(SchedRequest("llama", ("batch job " * 30) if sh else prompt + "x", sheddable=sh), eps,
                              cache_key=(7, None))[0].address for sh in order}
        assert got == {True: "10.0.0.2:8000", False: "10.0.0.1:8000"}, order  # empty queue vs cached prefix
    busy = [ep(1, waiting=2), ep(2, waiting=1)]
    s = sched()
    assert s.schedule(SchedRequest("llama", "c"), busy, cache_key=(8, None))  # critical first: routed
    with pytest.raises(Shed):  # then sheddable in the same snapshot: still shed
        s.schedule(SchedRequest("llama", "s", sheddable=True), busy, cache_key=(8, None))
    assert s.schedule(SchedRequest("llama", "c2"), busy, cache_key=(8, None))  # and critical still routed


def _default_plugins():
    from infershift.picker.config import DEFAULT_SCHEDULING
    return DEFAULT_SCHEDULING["plugins"]


def _default_profile():
    from infershift.picker.config import DEFAULT_SCHEDULING
    return DEFAULT_SCHEDULING["schedulingProfiles"][0]


def test_kv_headroom_counts_too():
    eps = [ep(1, waiting=0, kv=0.75), ep(2, waiting=0, kv=0.72)]  # empty queues, KV past 0.7
    s = sched()
    with pytest.raises(Shed):
        s.schedule(SchedRequest("llama", "x", sheddable=True), eps)
    assert sched({"kvCacheThreshold": 0.8}).schedule(SchedRequest("llama", "x", sheddable=True), eps)


def test_fully_saturated_pool_still_routes_critical_to_the_shortest_queues():
    # all past the saturation filter (waiting > 5): it keeps them all; admission narrows to the short ones
    eps = [ep(1, waiting=30), ep(2, waiting=9), ep(3, waiting=10), ep(4, waiting=12)]
    s = sched({"criticalQueueSlack": 1})
    with pytest.raises(Shed):
        s.schedule(SchedRequest("llama", "x", sheddable=True), eps)
    got = set()
    for i in range(40):
        got |= {s.schedule(SchedRequest("llama", f"q{i}"), eps)[0].address}
    assert got == {"10.0.0.2:8000"}  # the queue scorer then prefers 9 over 10
    assert sched({"criticalQueueSlack": 0}).filters[-1].filter(SchedRequest("llama"), eps) == [eps[1]]
    assert len(sched({"criticalQueueSlack": 100}).filters[-1].filter(SchedRequest("llama"), eps)) == 4


def test_threshold_is_configurable():
    eps = [ep(1, waiting=2), ep(2, waiting=3)]
    with pytest.raises(Shed):
        sched({"queueDepthThreshold": 1, "learnBatchLimit": False}).schedule(
            SchedRequest("llama", "x", sheddable=True), eps)
    assert sched({"queueDepthThreshold": 2, "learnBatchLimit": False}).schedule(
        SchedRequest("llama", "x", sheddable=True), eps)[0].address == "10.0.0.1:8000"


def test_shed_decision_follows_each_new_snapshot():
    s = sched()
    busy = [ep(1, waiting=2), ep(2, waiting=1)]
    with pytest.raises(Shed):
        s.schedule(SchedRequest("llama", "x", sheddable=True), busy, cache_key=(1, None))
    freed = [ep(1, waiting=2), ep(2, waiting=0, running=7)]  # a batch slot and the queue free
    assert s.schedule(SchedRequest("llama", "x", sheddable=True), freed, cache_key=(2, None))


def test_full_batch_with_empty_queue_is_no_headroom_once_the_limit_is_learned():
    s = sched({"learnBatchLimit": True})
    full = [ep(1, waiting=0, running=8), ep(2, waiting=0, running=8)]
    # batch limit unknown yet: an empty queue is headroom
    assert s.schedule(SchedRequest("llama", "x", sheddable=True), full, cache_key=(1, None))
    # a scrape shows 10.0.0.1 queueing with 8 running: 8 is its batch limit
    s.schedule(SchedRequest("llama", "x"), [ep(1, waiting=2, running=8), ep(2, waiting=0, running=5)],
               cache_key=(2, None))
    assert s.filters[-1].batch_limit == {"10.0.0.1:8000": 8}
    with pytest.raises(Shed):  # 10.0.0.1 full, 10.0.0.2 has room but a queue
        s.schedule(SchedRequest("llama", "x", sheddable=True),
                   [ep(1, waiting=0, running=8), ep(2, waiting=1, running=8)], cache_key=(3, None))
    assert s.filters[-1].batch_limit == {"10.0.0.1:8000": 8, "10.0.0.2:8000": 8}
    # one free slot: sheddable admitted, and sheddable requests go to that slot (not to the full batch)
    for i in range(20):
        freed = [ep(1, waiting=0, running=7), ep(2, waiting=0, running=8)]  # a fresh scrape each time
        assert s.schedule(SchedRequest("llama", f"f{i}", sheddable=True), freed)[0].address == "10.0.0.1:8000"
        assert s.filters[-1].filter(SchedRequest("llama"), freed) == freed  # critical: every candidate
    # the free slot is handed out once per scrape: the next request finds no room until a new scrape
    s2 = sched({"learnBatchLimit": True})
    s2.schedule(SchedRequest("llama", "x"), [ep(1, waiting=1, running=8), ep(2, waiting=1, running=8)])
    one_slot = [ep(1, waiting=0, running=7), ep(2, waiting=0, running=8)]
    assert s2.schedule(SchedRequest("llama", "x", sheddable=True), one_slot, cache_key=(1, None))
    with pytest.raises(Shed):
        s2.schedule(SchedRequest("llama", "y", sheddable=True), one_slot, cache_key=(2, None))
    rescraped = [ep(1, waiting=0, running=7), ep(2, waiting=0, running=8)]  # new metrics objects
    assert s2.schedule(SchedRequest("llama", "z", sheddable=True), rescraped, cache_key=(3, None))
    # a transient queue at a lower batch size does not lower the learned limit
    s.schedule(SchedRequest("llama", "x"), [ep(1, waiting=1, running=3), ep(2, waiting=0, running=8)],
               cache_key=(4, None))
    assert s.filters[-1].batch_limit["10.0.0.1:8000"] == 8
    assert not sched({"learnBatchLimit": False}).filters[-1].batch_limit


@pytest.mark.parametrize("params,field", [({"queueDepthThreshold": -1}, "queueDepthThreshold"),
                                          ({"kvCacheThreshold": "high"}, "kvCacheThreshold"),
                                          ({"criticalQueueSlack": True}, "criticalQueueSlack"),
                                          ({"criticalQueueDepthThreshold": -2}, "criticalQueueDepthThreshold"),
                                          ({"criticalKvCacheThreshold": "0.8"}, "criticalKvCacheThreshold"),
                                          ({"learnBatchLimit": "yes"}, "learnBatchLimit")])
def test_bad_parameters_name_the_field(params, field):
    with pytest.raises(ConfigError) as e:
        sched(params)
    assert f"scheduling plugin admission-filter.parameters.{field}" in str(e.value)


def test_unknown_parameter_is_named():
    with pytest.raises(ConfigError) as e:
        sched({"queueDepthTreshold": 2})
    assert "admission-filter.parameters: unknown queueDepthTreshold" in str(e.value)
