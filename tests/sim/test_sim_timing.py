"""Measured pace through HTTP, at real speed (time scale 1)."""
import asyncio
import statistics

import pytest

from sim_helpers import scrape, stream_times, value
from infershift.sim.profiles import get_profile

pytestmark = pytest.mark.asyncio


@pytest.mark.parametrize("profile", ["h100-8b", "a10-7b"])
async def test_batch1_ttft_and_itl_within_15_percent_of_profile(start_server, profile):
    srv, base, sess = await start_server(profile=profile)
    p = get_profile(profile)
    ttfts, itls = [], []
    for i in range(5):
        prompt = f"{i}" + "w" * (4 * 256 - 1)        # 256 tokens, no shared prefix
        ttft, times, _ = await stream_times(sess, base + "/v1/completions",
                                            {"model": "base", "prompt": prompt, "max_tokens": 30,
                                             "ignore_eos": True})
        assert len(times) == 30
        ttfts.append(ttft)
        itls.append((times[-1] - times[0]) / (len(times) - 1))
    assert statistics.median(ttfts) == pytest.approx(p.ttft(256), rel=0.15)
    assert statistics.median(itls) == pytest.approx(p.itl(1), rel=0.15)


async def test_streaming_pace_slows_with_batch_and_metrics_histograms_fill(start_server):
    srv, base, sess = await start_server(profile="h100-8b")
    p = get_profile("h100-8b")
    body = {"model": "base", "max_tokens": 40, "ignore_eos": True}
    res = await asyncio.gather(*[stream_times(sess, base + "/v1/completions", dict(body, prompt=f"{i}" * 400))
                                 for i in range(8)])
    itls = [(t[-1] - t[5]) / (len(t) - 6) for _, t, _ in res]
    # eight sequences decode together: each step is the batch-8 step, not batch 1
    assert statistics.median(itls) == pytest.approx(p.itl(8), rel=0.15)
    m = await scrape(sess, base)
    assert value(m, "vllm:time_to_first_token_seconds_count", model_name="base") == 8
    assert value(m, "vllm:inter_token_latency_seconds_count", model_name="base") == 8 * 39
    assert value(m, "vllm:generation_tokens_total", model_name="base") == 8 * 40
    assert value(m, "vllm:request_success_total", model_name="base", finished_reason="length") == 8


async def test_repeated_prefix_lowers_ttft_and_raises_hit_counters(start_server):
    srv, base, sess = await start_server(profile="h100-8b", time_scale=2)
    system = "You are a helpful travel assistant. " * 110   # ~1000 tokens shared prefix
    url = base + "/v1/chat/completions"

    def body(q):
        return {"model": "base", "max_tokens": 3, "ignore_eos": True,
                "messages": [{"role": "system", "content": system}, {"role": "user", "content": q}]}

    cold, _, _ = await stream_times(sess, url, body("Where should I go in May?"))
    m1 = await scrape(sess, base)
    warm, _, _ = await stream_times(sess, url, body("And in June?"))
    m2 = await scrape(sess, base)
    assert warm < cold * 0.6
    hits1 = value(m1, "vllm:prefix_cache_hits_total", model_name="base")
    hits2 = value(m2, "vllm:prefix_cache_hits_total", model_name="base")
    q1 = value(m1, "vllm:prefix_cache_queries_total", model_name="base")
    q2 = value(m2, "vllm:prefix_cache_queries_total", model_name="base")
    assert hits1 == 0 and hits2 >= 960 and q2 > q1


async def test_coalesced_streams_write_less_often_but_keep_ttft_and_content(start_server):
    _, base, sess = await start_server(profile="h100-8b", name="plain")
    _, base_c, _ = await start_server(profile="h100-8b", name="coalesced", stream_coalesce=0.05)
    p = get_profile("h100-8b")
    body = {"model": "base", "prompt": "c" * 1024, "max_tokens": 40, "ignore_eos": True}
    for b in (base, base_c):   # warm both servers and connections up
        await stream_times(sess, b + "/v1/completions", dict(body, max_tokens=2, prompt="warm"))
    ttft, times, chunks = await stream_times(sess, base + "/v1/completions", body)
    ttft_c, times_c, chunks_c = await stream_times(sess, base_c + "/v1/completions", dict(body, prompt="d" * 1024))
    assert len(times) == 40 and len(times_c) == 40
    # same pace overall and the same first token time, in far fewer network writes
    assert ttft_c == pytest.approx(p.ttft(256), rel=0.15)
    assert times_c[-1] - ttft_c == pytest.approx(39 * p.itl(1), rel=0.15)
    gaps = sorted({round(t, 3) for t in times_c})
    assert len(gaps) < 20
    assert chunks_c[-1]["choices"][0]["finish_reason"] == "length"
