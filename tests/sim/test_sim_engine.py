"""The engine's time, memory and scheduling model, driven with explicit times."""
import math

import pytest

from infershift.sim.engine import Engine, QueueFull, Request, TooLarge
from infershift.sim.metrics import Stats
from infershift.sim.profiles import get_profile
from infershift.sim.tokens import block_hashes

P = get_profile("h100-8b")


def req(prompt="", tokens=None, target=10, lora=None, rid="r"):
    text = prompt or "a" * (4 * (tokens or 256))
    return Request(rid=rid, prompt_tokens=len(text) // 4, target=target,
                   block_hashes=block_hashes(text, 16, lora), lora=lora)


def run_until_idle(e, limit=100000):
    for _ in range(limit):
        t = e.next_event_time()
        if t is None:
            return
        e.advance(t)
    raise AssertionError("engine did not go idle")


def until(e, cond, limit=100000):
    for _ in range(limit):
        if cond():
            return
        e.advance(e.next_event_time())
    raise AssertionError("condition never held")


def test_batch1_ttft_and_decode_follow_the_profile():
    e = Engine(P)
    r = req(target=10)
    e.submit(r, 5.0)
    run_until_idle(e)
    assert r.first_token_at - 5.0 == pytest.approx(P.ttft(256))
    assert r.finished_at - r.first_token_at == pytest.approx(9 * P.itl(1))
    assert r.finish_reason == "length" and r.generated == 10


def test_decode_step_grows_with_batch_size():
    e = Engine(P)
    a, b = req(target=50, rid="a", prompt="x" * 1024), req(target=50, rid="b", prompt="y" * 1024)
    e.submit(a, 0.0)
    e.submit(b, 0.0)
    until(e, lambda: a.first_token_at is not None)
    n0, _ = e.progress(a, a.first_token_at)
    n1, _ = e.progress(a, a.first_token_at + 10 * P.itl(2) + 1e-6)
    assert n1 - n0 == 10
    assert P.itl(2) > P.itl(1)
    n2, _ = e.progress(a, a.first_token_at + 10 * P.itl(1) + 1e-6)
    assert n2 - n0 < 10   # at batch 2 ten batch-1 steps' time is not enough


def test_arrival_waits_for_the_step_boundary_and_prefill_shares_the_step():
    e = Engine(P)
    a = req(target=100, rid="a", prompt="p" * 1024)
    e.submit(a, 0.0)
    until(e, lambda: a.first_token_at is not None)
    t_arr = a.first_token_at + 0.3 * P.itl(1)
    b = req(target=5, rid="b", prompt="q" * 1024)
    e.submit(b, t_arr)
    run_until_idle(e)
    # b becomes schedulable after the fixed overhead, then waits for the next step boundary
    ready = t_arr + P.prefill_overhead
    boundary = a.first_token_at + math.ceil((ready - a.first_token_at) / P.itl(1)) * P.itl(1)
    mixed_step = P.step_base + 2 * P.step_per_seq + 256 * P.prefill_per_token
    assert b.first_token_at == pytest.approx(boundary + mixed_step)
    assert b.first_token_at - b.arrival > P.ttft(256)   # the queue wait is part of TTFT


def test_prefix_cache_hit_cuts_prefill_in_proportion_and_counts():
    e = Engine(P)
    text = "s" * 4096   # 1024 tokens
    r1 = req(prompt=text, target=2, rid="1")
    e.submit(r1, 0.0)
    run_until_idle(e)
    assert e.kv.hits == 0 and e.kv.queries == 1024
    r2 = req(prompt=text, target=2, rid="2")
    e.submit(r2, 10.0)
    run_until_idle(e)
    assert r2.cached_tokens == 1008   # all full blocks but the one holding the last token
    assert e.kv.hits == 1008 and e.kv.queries == 2048
    saved = (r1.first_token_at - 0.0) - (r2.first_token_at - 10.0)
    assert saved == pytest.approx(1008 * P.prefill_per_token)


def test_prefix_blocks_are_evicted_lru_when_memory_runs_out():
    e = Engine(P, num_gpu_blocks=100)
    a, b = "a" * (4 * 16 * 40), "b" * (4 * 16 * 40)   # 40 blocks each
    e.submit(req(prompt=a, target=1, rid="a"), 0.0)
    run_until_idle(e)
    e.submit(req(prompt=b, target=1, rid="b"), 1.0)
    run_until_idle(e)
    assert e.kv.match(block_hashes(a, 16), 100) == 40
    # c needs 41 blocks: 20 free + the oldest cached ones (a's tail first).
    e.submit(req(prompt="c" * (4 * 16 * 40), target=1, rid="c"), 2.0)
    run_until_idle(e)
    assert e.kv.match(block_hashes(b, 16), 100) == 40
    assert e.kv.match(block_hashes(a, 16), 100) < 40


def test_more_requests_than_max_num_seqs_wait():
    e = Engine(P, max_num_seqs=2)
    rs = [req(target=20, rid=str(i), prompt=f"{i}" * 400) for i in range(5)]
    for r in rs:
        e.submit(r, 0.0)
    e.advance(P.prefill_overhead + 1e-3)
    assert len(e.running) == 2 and len(e.waiting) == 3
    run_until_idle(e)
    assert all(r.state == "finished" for r in rs)
    assert rs[4].first_token_at > rs[1].finished_at - 1e-9


def test_requests_wait_when_the_kv_cache_is_full():
    e = Engine(P, num_gpu_blocks=40)
    rs = [req(tokens=256, target=20, rid=str(i), prompt=chr(97 + i) * 1024) for i in range(3)]
    for r in rs:
        e.submit(r, 0.0)
    e.advance(P.prefill_overhead + 1e-3)
    # each needs 17 blocks: two fit in 40, the third waits
    assert len(e.running) == 2 and len(e.waiting) == 1
    run_until_idle(e)
    assert all(r.state == "finished" for r in rs)


def test_growing_sequences_preempt_the_newest_and_recompute():
    stats = Stats()
    e = Engine(P, num_gpu_blocks=20, stats=stats)
    a = req(prompt="a" * (4 * 16 * 8), target=120, rid="a")   # 8 blocks of prompt, grows to 16
    b = req(prompt="b" * (4 * 16 * 8), target=120, rid="b")
    e.submit(a, 0.0)
    e.submit(b, 0.0)
    run_until_idle(e)
    assert stats.preemptions >= 1 and b.preemptions >= 1
    assert a.state == b.state == "finished" and b.generated == 120
    assert e.kv.num_free() == 20


def test_inactive_adapter_waits_for_a_slot():
    e = Engine(P, max_loras=1)
    a = req(target=50, lora="A", rid="a", prompt="a" * 400)
    b = req(target=5, lora="B", rid="b", prompt="b" * 400)
    c = req(target=5, rid="c", prompt="c" * 400)
    e.submit(a, 0.0)
    e.submit(b, 0.01)
    e.submit(c, 0.01)
    e.advance(0.2)
    assert e.lora_info() == (["A"], ["B"])
    assert c.state == "running"          # base-model requests are not held up
    run_until_idle(e)
    assert b.first_token_at > a.finished_at - 1e-9
    # loading B cost time inside its prefill step
    assert b.first_token_at - a.finished_at >= P.lora_load_seconds


def test_adapter_in_running_set_after_it_is_admitted():
    e = Engine(P, max_loras=1)
    a = req(target=5, lora="A", rid="a", prompt="a" * 400)
    b = req(target=50, lora="B", rid="b", prompt="b" * 400)
    e.submit(a, 0.0)
    e.submit(b, 0.0)
    until(e, lambda: a.state == "running")
    assert e.lora_info() == (["A"], ["B"])
    until(e, lambda: a.state == "finished")
    assert e.lora_info() == (["B"], []) and b.state == "running"


def test_prediction_matches_what_happens():
    e = Engine(P, max_num_seqs=3)
    for i in range(6):
        e.submit(req(target=30 + 7 * i, rid=str(i), prompt=str(i) * (300 + 50 * i)), 0.001 * i)
    now = 0.37
    probe = req(target=10, rid="p", prompt="z" * 2000)
    predicted, pos = e.predict(probe, now)
    assert pos == len(e.waiting)
    e.submit(probe, now)
    run_until_idle(e)
    assert probe.first_token_at - now == pytest.approx(predicted)


def test_prediction_sees_the_prefix_cache_and_leaves_the_engine_alone():
    e = Engine(P)
    text = "k" * 4000
    e.submit(req(prompt=text, target=3, rid="w"), 0.0)
    run_until_idle(e)
    hits, free = e.kv.hits, e.kv.num_free()
    warm, _ = e.predict(req(prompt=text, target=3), 1.0)
    cold, _ = e.predict(req(prompt="m" * 4000, target=3), 1.0)
    assert cold - warm == pytest.approx(992 * P.prefill_per_token)
    assert e.kv.hits == hits and e.kv.num_free() == free and not e.waiting


def test_abort_frees_memory_and_queue_bound_and_size_checks():
    e = Engine(P, max_waiting=1, max_num_seqs=1, num_gpu_blocks=100)
    a = req(target=100, rid="a", prompt="a" * 400)
    e.submit(a, 0.0)
    e.advance(0.0)
    b = req(target=10, rid="b", prompt="b" * 400)
    e.submit(b, 0.001)
    with pytest.raises(QueueFull):
        e.submit(req(target=10, rid="c"), 0.002)
    e.abort(a, 0.05)
    assert a.state == "aborted" and not any(r is a for r in e.running)
    run_until_idle(e)
    assert b.state == "finished" and e.kv.num_free() == 100
    with pytest.raises(TooLarge):
        e.submit(req(tokens=2000, target=10), 1.0)


def test_progress_reports_tokens_at_the_modelled_pace():
    e = Engine(P)
    r = req(target=40)
    e.submit(r, 0.0)
    until(e, lambda: r.first_token_at is not None)
    t0 = r.first_token_at
    n, nxt = e.progress(r, t0)
    assert n == 1 and nxt == pytest.approx(t0 + P.itl(1))
    n, _ = e.progress(r, t0 + 5.5 * P.itl(1))
    assert n == 6


def test_time_scale_and_tensor_parallel_scale_the_profile():
    fast = P.scaled(time_scale=10)
    assert fast.itl(1) == pytest.approx(P.itl(1) / 10)
    assert fast.ttft(256) == pytest.approx(P.ttft(256) / 10)
    tp = P.scaled(tensor_parallel=4)
    assert tp.itl(1) == pytest.approx(P.itl(1) / 4 ** 0.75) and tp.num_gpu_blocks > 4 * P.num_gpu_blocks
    # a profile quoted at TP 4 is unchanged at TP 4, and cramped at TP 1
    big = get_profile("a10-32b")
    assert big.scaled().num_gpu_blocks == big.num_gpu_blocks and big.scaled().itl(1) == big.itl(1)
    assert big.scaled(tensor_parallel=1).num_gpu_blocks < big.num_gpu_blocks / 10
    assert P.scaled(gpu_memory_utilization=0.5).num_gpu_blocks < P.num_gpu_blocks
    assert math.isclose(P.ttft(256), 0.100, rel_tol=0.02) and math.isclose(P.itl(1), 0.012, rel_tol=0.02)


@pytest.mark.parametrize("seed, kw", [
    (1, {}),
    (2, {"max_num_seqs": 4}),
    (3, {"num_gpu_blocks": 400}),              # memory pressure: waits and preemptions
    (4, {"max_loras": 1}),
    (5, {"max_loras": 2, "max_num_seqs": 8, "num_gpu_blocks": 600}),
    (6, {"num_gpu_blocks": 150}),              # growth overflows: recompute preemptions
])
def test_predictions_are_exact_on_random_workloads(seed, kw):
    import random
    rng = random.Random(seed)
    shared = ["S" * rng.randint(100, 2000) for _ in range(3)]
    work = []
    t = 0.0
    for i in range(40):
        t += rng.expovariate(20)
        text = rng.choice(shared) + str(i) * rng.randint(1, 300)
        lora = rng.choice([None, "A", "B", "C"]) if "max_loras" in kw else None
        work.append((t, text, rng.randint(5, 200), lora))
    for probe_at in (0.3, 0.9, 1.7):
        e = Engine(P, **kw)
        pending = list(work)
        while pending and pending[0][0] <= probe_at:
            at, text, target, lora = pending.pop(0)
            e.submit(req(prompt=text, target=target, lora=lora, rid=str(at)), at)
        probe_text = rng.choice(shared) + "probe"
        probe = req(prompt=probe_text, target=5, lora="A" if "max_loras" in kw else None)
        predicted, _ = e.predict(probe, probe_at)
        e.submit(probe, probe_at)
        until(e, lambda: probe.first_token_at is not None)
        assert probe.first_token_at - probe_at == pytest.approx(predicted, abs=1e-9), (seed, probe_at)


def check_kv_invariants(e):
    kv = e.kv
    holders = {}
    for r in e.running:
        for h in r.kv_hashes:
            holders[h] = holders.get(h, 0) + 1
    assert {h: n for h, n in kv.refs.items() if n} == holders
    assert set(kv.evictable) == {h for h, n in kv.refs.items() if n == 0}
    own = sum(r.kv_own for r in e.running)
    assert kv.free_plain + len(kv.evictable) + len(holders) + own == kv.num_blocks
    for r in e.running:   # every running sequence holds blocks for all its tokens
        assert (len(r.kv_hashes) + r.kv_own) * kv.block_size >= r.prompt_tokens + r.generated
    assert not any(r.kv_hashes or r.kv_own for r in e.waiting)


@pytest.mark.parametrize("seed", range(4))
def test_block_accounting_stays_consistent_under_random_load(seed):
    import random
    rng = random.Random(seed)
    e = Engine(P, num_gpu_blocks=rng.choice([120, 300, 2000]), max_num_seqs=rng.choice([4, 16, 256]),
               max_loras=2)
    shared = ["T" * rng.randint(50, 1500) for _ in range(4)]
    reqs, t = [], 0.0
    for i in range(80):
        t += rng.expovariate(30)
        e.advance(t)
        check_kv_invariants(e)
        r = req(prompt=rng.choice(shared) + str(i) * rng.randint(1, 200), target=rng.randint(1, 150),
                rid=str(i), lora=rng.choice([None, None, "A", "B", "C"]))
        e.submit(r, t)
        reqs.append(r)
        if rng.random() < 0.05:
            e.abort(rng.choice(reqs), t)
    while e.next_event_time() is not None:
        e.advance(e.next_event_time())
        check_kv_invariants(e)
    assert all(r.state in ("finished", "aborted") for r in reqs)
    assert all(r.generated == r.target for r in reqs if r.state == "finished")
    assert e.kv.num_free() == e.kv.num_blocks
