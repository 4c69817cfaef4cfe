from collections import Counter

import pytest

from bench import workloads as wl


def _tokens(s: str) -> int:
    return len(s) // wl.CHARS_PER_TOKEN


def test_shared_prefix_groups_share_exact_system_prompts():
    reqs = wl.shared_prefix("m", 200, groups=4, users=3, system_tokens=256, question_tokens=32,
                            output_tokens=16, seed=1)
    assert len(reqs) == 200
    by_group = {}
    for r in reqs:
        sys_msg, q = r.body["messages"]
        assert _tokens(sys_msg["content"]) == 256 and _tokens(q["content"]) == 32
        by_group.setdefault(r.tags["group"], set()).add(sys_msg["content"])
        assert r.body["max_tokens"] == 16 and r.body["ignore_eos"] is True
        assert 0 <= r.tags["user"] < 3
    assert sorted(by_group) == [0, 1, 2, 3]
    assert all(len(v) == 1 for v in by_group.values())          # one prompt per group
    assert len({next(iter(v)) for v in by_group.values()}) == 4  # distinct across groups
    assert len({r.body["messages"][1]["content"] for r in reqs}) == 200  # fresh questions


def test_workloads_are_deterministic_by_seed():
    a = wl.shared_prefix("m", 20, groups=2, system_tokens=64, seed=7)
    b = wl.shared_prefix("m", 20, groups=2, system_tokens=64, seed=7)
    c = wl.shared_prefix("m", 20, groups=2, system_tokens=64, seed=8)
    assert [r.body for r in a] == [r.body for r in b]
    assert [r.body for r in a] != [r.body for r in c]
    assert [r.body for r in wl.lora_mix(["x", "y"], 10, seed=1)] == [r.body for r in wl.lora_mix(["x", "y"], 10, seed=1)]


def test_multi_turn_resends_its_own_history():
    reqs = wl.multi_turn("m", 40, active=4, turns=3, system_tokens=32, question_tokens=8, answer_tokens=8, seed=0)
    convs = {}
    for r in reqs:
        convs.setdefault(r.tags["conversation"], []).append(r)
    for turns in convs.values():
        assert [t.tags["turn"] for t in turns] == list(range(len(turns)))
        assert len(turns) <= 3
        for prev, nxt in zip(turns, turns[1:]):
            p, n = prev.body["messages"], nxt.body["messages"]
            assert n[:len(p)] == p                       # the earlier prompt is a prefix
            assert n[len(p)]["role"] == "assistant"      # then the earlier answer, then a new question
            assert len(n) == len(p) + 2
    # Rounds: every active conversation takes one turn per `active` arrivals...
    for k in range(0, 40, 4):
        assert len({r.tags["conversation"] for r in reqs[k:k + 4]}) == 4
    # ...in a shuffled order, so a conversation does not keep its position (which would pin it
    # to one server under round robin).
    positions = {i % 4 for i, r in enumerate(reqs) if r.tags["conversation"] == 0}
    assert len(positions) > 1 or len([r for r in reqs if r.tags["conversation"] == 0]) == 1


def test_multi_turn_does_not_line_up_with_round_robin():
    reqs = wl.multi_turn("m", 600, active=32, turns=6, system_tokens=8, question_tokens=4, answer_tokens=4, seed=1)
    servers: dict[int, list[int]] = {}
    for i, r in enumerate(reqs):
        servers.setdefault(r.tags["conversation"], []).append(i % 8)
    # Under 8-way round robin, conversations of 3+ turns must nearly all visit more than one server
    # (by chance all on one: (1/8)^2 each).
    long = [v for v in servers.values() if len(v) >= 3]
    spread = sum(1 for v in long if len(set(v)) > 1) / len(long)
    assert len(long) > 50 and spread > 0.9


def test_lora_mix_popularity_is_skewed():
    ads = [f"a{i}" for i in range(10)]
    reqs = wl.lora_mix(ads, 5000, skew=1.0, seed=2)
    c = Counter(r.body["model"] for r in reqs)
    assert set(c) <= set(ads) and len(c) == 10
    assert c["a0"] > c["a1"] > c["a4"] > c["a9"]
    # Zipf(1) over 10: the top adapter gets 1/H(10) ~ 34% of requests.
    assert c["a0"] / 5000 == pytest.approx(1 / sum(1 / k for k in range(1, 11)), abs=0.03)
    assert c["a0"] == pytest.approx(c["a9"] * 10, rel=0.3)


def test_long_context_prompts_are_220_kb():
    reqs = wl.long_context("m", 3, seed=0)
    sizes = [len(r.body["messages"][0]["content"]) for r in reqs]
    assert all(abs(s - 220 * 1024) <= 64 for s in sizes)
    assert len({r.body["messages"][0]["content"] for r in reqs}) == 3


def test_mixed_criticality_share_and_model_names():
    reqs = wl.mixed_criticality("crit", "shed", 2000, critical_share=0.3, seed=1)
    crit = [r for r in reqs if r.tags["criticality"] == "Critical"]
    assert all(r.body["model"] == "crit" for r in crit)
    assert all(r.body["model"] == "shed" for r in reqs if r.tags["criticality"] == "Sheddable")
    assert len(crit) / 2000 == pytest.approx(0.3, abs=0.03)


@pytest.mark.parametrize("call", [
    lambda: wl.shared_prefix("m", 0),
    lambda: wl.multi_turn("m", 5, turns=0),
    lambda: wl.lora_mix([], 5),
    lambda: wl.mixed_criticality("a", "b", 5, critical_share=1.5),
])
def test_bad_parameters_name_the_field(call):
    with pytest.raises(ValueError, match="count|turns|adapters|critical_share"):
        call()


def test_shared_prefix_levels_reuse_groups_and_warmup_covers_each_group():
    a = wl.shared_prefix("m", 50, groups=3, system_tokens=64, seed=0, sample_seed=1)
    b = wl.shared_prefix("m", 50, groups=3, system_tokens=64, seed=0, sample_seed=2)
    systems = lambda reqs: {r.body["messages"][0]["content"] for r in reqs}
    assert systems(a) == systems(b) and len(systems(a)) == 3
    assert [r.body["messages"][1] for r in a] != [r.body["messages"][1] for r in b]
    warm = wl.shared_prefix_warmup("m", groups=3, system_tokens=64, seed=0)
    assert [r.tags["group"] for r in warm] == [0, 1, 2]
    assert systems(warm) == systems(a) and all(r.body["max_tokens"] == 1 for r in warm)
