"""Model routing: weighted split, sticky session keys, rewrite header, objectives, 404."""
from __future__ import annotations

import math
import random
from collections import Counter

import pytest

from infershift.picker.config import ModelRoute, Target
from infershift.picker.endpoints import Endpoint
from infershift.picker.errors import ModelNotFound
from infershift.picker.routing import choose_target, resolve, session_point

ROUTES = {"travel": ModelRoute("travel", (Target("t-v1", 90), Target("t-v2", 10)), criticality="Critical"),
          "batch": ModelRoute("batch", (Target("llama", 1),), criticality="Sheddable"),
          "prio": ModelRoute("prio", (Target("llama", 1),), priority=-1)}
EPS = [Endpoint("1.1.1.1:1", "a", frozenset({"llama", "t-v1", "t-v2"}))]


def r(model, headers=None, rng=None, session="x-session-id"):
    return resolve(model, headers or {}, ROUTES, {"cheap": -5, "vip": 10}, session, EPS, rng or random.Random(3))


def test_weighted_split_distribution():
    rng = random.Random(11)
    n = 4000
    c = Counter(r("travel", rng=rng).target_model for _ in range(n))
    assert abs(c["t-v1"] / n - 0.9) <= 4.5 * math.sqrt(0.09 / n)


def test_session_key_is_sticky_and_spreads():
    got = {}
    for i in range(400):
        t = {r("travel", {"x-session-id": f"u{i}"}, rng=random.Random(i)).target_model for _ in range(3)}
        assert len(t) == 1
        got[i] = t.pop()
    share = sum(v == "t-v2" for v in got.values()) / 400
    assert 0.04 < share < 0.18


def test_canary_keeps_its_sessions_as_it_grows():
    keys = [f"user-{i}" for i in range(500)]
    steps = [(90, 10), (50, 50), (0, 100)]
    on_v2 = []
    for w1, w2 in steps:
        targets = (Target("v1", w1), Target("v2", w2))
        on_v2.append({k for k in keys if choose_target(targets, session_point("m\x00" + k)) == "v2"})
    assert on_v2[0] <= on_v2[1] <= on_v2[2] and len(on_v2[2]) == 500


def test_rewrite_header_passthrough_and_404():
    assert r("travel", {"x-gateway-model-name-rewrite": "t-v2"}).target_model == "t-v2"
    routed = r("llama")
    assert (routed.client_model, routed.target_model, routed.sheddable) == ("llama", "llama", False)
    with pytest.raises(ModelNotFound) as e:
        r("gpt-5")
    assert e.value.status == 404 and e.value.param == "model" and e.value.code == "model_not_found"


def test_criticality_priority_and_objective_header():
    assert r("batch").sheddable and not r("travel").sheddable and r("prio").sheddable
    assert r("llama", {"x-gateway-inference-objective": "cheap"}).sheddable
    assert not r("batch", {"x-gateway-inference-objective": "vip"}).sheddable


def test_zero_weight_targets_never_chosen():
    targets = (Target("a", 0), Target("b", 3))
    assert {choose_target(targets, x / 100) for x in range(100)} == {"b"}


UPSTREAM_EPS = [Endpoint("1.1.1.1:1", "a", frozenset({"llama", "t-v2", "t-v3"}))]


@pytest.mark.parametrize("headers, target, sheddable, fairness", [
    ({"x-llm-d-model-name-rewrite": "t-v2"}, "t-v2", False, "default-flow"),
    ({"x-gateway-model-name-rewrite": "t-v3"}, "t-v3", False, "default-flow"),
    ({"x-llm-d-model-name-rewrite": "t-v2", "x-gateway-model-name-rewrite": "t-v3"}, "t-v2", False, "default-flow"),
    ({"x-llm-d-inference-objective": "cheap"}, "llama", True, "default-flow"),
    ({"x-gateway-inference-objective": "cheap"}, "llama", True, "default-flow"),
    ({"x-llm-d-inference-objective": "vip", "x-gateway-inference-objective": "cheap"}, "llama", False, "default-flow"),
    ({"x-llm-d-inference-fairness-id": "tenant-a"}, "llama", False, "tenant-a"),
    ({"x-gateway-inference-fairness-id": "tenant-b"}, "llama", False, "tenant-b"),
    ({"x-llm-d-inference-fairness-id": "", "x-gateway-inference-fairness-id": "tenant-b"}, "llama", False, "tenant-b"),
])
def test_llm_d_headers_with_x_gateway_aliases(headers, target, sheddable, fairness):
    r = resolve("llama", headers, {}, {"cheap": -1, "vip": 5}, None, UPSTREAM_EPS, random.Random(1))
    assert (r.target_model, r.sheddable, r.fairness_id) == (target, sheddable, fairness)
