"""Scheduler plugins on plain endpoint snapshots (no I/O): filters, scorers, prefix index, pickers."""
from __future__ import annotations

import random

import pytest

from infershift.picker.config import parse_config, parse_scheduling
from infershift.picker.endpoints import Endpoint
from infershift.picker.errors import NoCapacity, Shed
from infershift.picker.metrics_parse import ServerMetrics
from infershift.picker.scheduling import SchedRequest, build_scheduler
from infershift.picker.scheduling.prefix import PrefixIndex, block_hashes


def ep(i: int, models=("llama",), bases=("llama",), **m) -> Endpoint:
    e = Endpoint(f"10.0.0.{i}:8000", f"e{i}", frozenset(models))
    e.base_models = frozenset(bases)
    e.metrics = ServerMetrics(**m)
    return e


def sched(profile=None, seed=1, fallbacks=0):
    # flow control off: these are the scheduler's own decisions (flowcontrol.py queues before them)
    spec = parse_config({"endpoints": [], "scheduling": profile, "flowControl": False}).scheduling if profile else \
        parse_config({"endpoints": [], "flowControl": False}).scheduling
    return build_scheduler(spec, random.Random(seed), fallbacks=fallbacks)


def test_model_filter_mixed_base_models():
    eps = [ep(1), ep(2, models=("qwq-32b",), bases=("qwq-32b",))]
    s = sched()
    assert {s.schedule(SchedRequest("qwq-32b", f"p{i}"), eps)[0].address for i in range(20)} == {"10.0.0.2:8000"}
    with pytest.raises(NoCapacity) as e:
        s.schedule(SchedRequest("mistral", "x"), eps)
    assert e.value.status == 503


def test_queue_and_kv_scoring():
    eps = [ep(1, waiting=4), ep(2, waiting=0, kv_usage=0.7), ep(3, waiting=0, kv_usage=0.1)]
    s = sched()
    assert {s.schedule(SchedRequest("llama", f"{i}"), eps)[0].address for i in range(20)} == {"10.0.0.3:8000"}


def test_saturation_sheds_only_sheddable():
    eps = [ep(1, waiting=9), ep(2, kv_usage=0.95)]
    s = sched()
    with pytest.raises(Shed) as e:
        s.schedule(SchedRequest("llama", "x", sheddable=True), eps)
    assert e.value.status == 429
    assert s.schedule(SchedRequest("llama", "x", sheddable=False), eps)  # critical still routed
    eps.append(ep(3, waiting=0))  # one endpoint with an empty queue: sheddable is admitted, to it
    assert s.schedule(SchedRequest("llama", "x", sheddable=True), eps)[0].address == "10.0.0.3:8000"


def test_lora_affinity_order():
    full = ep(1, models=("llama", "sql"), running_loras=frozenset({"a", "b"}), max_lora=2)
    waiting = ep(2, models=("llama", "sql"), waiting_loras=frozenset({"sql"}), max_lora=2)
    loadable = ep(3, models=("llama", "sql"), max_lora=2)
    active = ep(4, models=("llama", "sql"), running_loras=frozenset({"sql"}), max_lora=2)
    from infershift.picker.scheduling.scorers import LoraAffinityScorer
    sc = LoraAffinityScorer("l", {}).score(SchedRequest("sql"), [full, waiting, loadable, active])
    assert sc[3] > sc[2] > sc[1] > sc[0]
    # base-model requests are neutral
    assert len(set(LoraAffinityScorer("l", {}).score(SchedRequest("llama"), [full, waiting, loadable, active]))) == 1


def test_prefix_index_learns_from_decisions_and_evicts():
    s = sched()
    eps = [ep(i) for i in range(1, 9)]
    shared = "system prompt " * 100
    first = s.schedule(SchedRequest("llama", shared + "a"), eps)[0]
    for i in range(10):
        assert s.schedule(SchedRequest("llama", shared + f"q{i}"), eps)[0] is first
    # same prompt, other model: no affinity (different cache)
    others = {s.schedule(SchedRequest("mistral-free", shared), [ep(i, models=("mistral-free",)) for i in range(1, 9)])[0].address
              for _ in range(1)}
    assert others
    idx = PrefixIndex(capacity_per_server=3)
    hs = block_hashes("m", "x" * 64 * 5, 64, 100)
    idx.add("a", hs)
    assert idx.matched(hs) == {"a": 3}  # over capacity: the trailing blocks go first, the prefix stays
    idx.add("b", hs[:2])
    assert idx.matched(hs) == {"a": 3, "b": 2}
    for i in range(3):  # other traffic pushes a's old prefix out of its LRU
        idx.add("a", block_hashes("m", f"other {i}" * 64, 64, 1))
    assert idx.matched(hs) == {"b": 2}


def test_block_hashes_chain_and_cap():
    a = block_hashes("m", "x" * 200, 64, 10)
    b = block_hashes("m", "x" * 128 + "y" * 72, 64, 10)
    assert len(a) == 3 and a[:2] == b[:2] and a[2] != b[2]
    assert len(block_hashes("m", "x" * 6400, 64, 10)) == 10
    assert block_hashes("m", "x" * 64, 64, 10) != block_hashes("n", "x" * 64, 64, 10)


def test_ties_are_broken_at_random_and_fallbacks_follow_score():
    eps = [ep(i) for i in range(1, 5)]
    s = sched()
    picks = {s.schedule(SchedRequest("llama", None), eps)[0].address for _ in range(60)}
    assert len(picks) == 4
    eps[2].metrics = ServerMetrics(waiting=3)
    s2 = sched(fallbacks=2)
    chosen = s2.schedule(SchedRequest("llama", None), eps)
    assert len(chosen) == 3 and eps[2] not in chosen


def test_round_robin_and_random_baselines():
    rr = {"plugins": [{"type": "model-filter"}, {"type": "round-robin-picker", "name": "rr"}],
          "schedulingProfiles": [{"name": "default", "plugins": [{"pluginRef": "model-filter"}, {"pluginRef": "rr"}]}]}
    eps = [ep(i, waiting=i) for i in range(1, 5)]
    s = sched(rr)
    assert [s.schedule(SchedRequest("llama"), eps)[0].address for _ in range(8)] == \
        [e.address for e in eps] * 2  # ignores load
    rnd = {"plugins": [{"type": "random-picker"}]}  # no profile: upstream's default one, of every plugin
    s = sched(rnd)
    assert len({s.schedule(SchedRequest("llama"), eps)[0].address for _ in range(80)}) == 4


def test_reload_keeps_prefix_index():
    s1 = sched()
    eps = [ep(i) for i in range(1, 9)]
    p = "shared " * 300
    first = s1.schedule(SchedRequest("llama", p), eps)[0]
    s2 = build_scheduler(parse_scheduling(None), random.Random(5), previous=s1)
    assert all(s2.schedule(SchedRequest("llama", p + str(i)), eps)[0] is first for i in range(5))


def test_empty_pool_is_503():
    with pytest.raises(NoCapacity):
        sched().schedule(SchedRequest("llama"), [])
