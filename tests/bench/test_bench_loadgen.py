"""The load generator against real simulators (directly, and through real Envoy)."""
import random

import pytest

from bench import arrivals, loadgen
from bench import workloads as wl
from bench.routers.envoy_lb import lb_config
from bench.procs import validate_envoy
from bench.stats import summarize

MODEL = "llama-3.1-8b"


def test_classify_sheds_only_gateway_429s():
    assert loadgen.classify(429, from_server=False) == "shed"
    assert loadgen.classify(429, from_server=True) == "error"   # the server's own queue is full
    assert loadgen.classify(503, from_server=False) == "error"


def test_open_loop_measures_ttft_itl_and_tokens(sim_pool):
    reqs = wl.shared_prefix(MODEL, 12, groups=2, system_tokens=512, question_tokens=32, output_tokens=20, seed=1)
    offs = arrivals.poisson_offsets(20.0, 12, random.Random(1))
    loop = loadgen.new_loop()
    try:
        res = loop.run_until_complete(loadgen.run_open(sim_pool.urls(), reqs, offs))
    finally:
        loop.close()
    assert len(res.records) == 12
    for r in res.records:
        assert r["status"] == "ok", r
        assert r["output_tokens"] == 20
        assert len(r["itl"]) == 19                      # one gap per streamed token after the first
        assert 0 < r["ttft"] < r["e2e"]
        assert r["prompt_tokens"] >= 512 + 32
    # The client spread the requests over both servers.
    assert {r["pod"] for r in res.records} == {"sim0-0", "sim0-1"}
    # Repeated system prompts hit the prefix cache after each server's first sight of them.
    assert sum(r["cached_tokens"] for r in res.records) > 0
    assert res.wall >= offs[-1] and res.cpu > 0
    s = summarize(res.records, res.wall)
    assert s["ok"] == 12 and s["output_tokens"] == 240


def test_closed_loop_keeps_concurrency_and_reports_errors(sim_pool):
    reqs = wl.mixed_criticality("critical-chat", "batch-chat", 6, prompt_tokens=64, output_tokens=5, seed=2)
    reqs.append(wl.BenchRequest({"model": "no-such-model", "messages": [{"role": "user", "content": "x"}],
                                 "max_tokens": 2}, {}))
    loop = loadgen.new_loop()
    try:
        res = loop.run_until_complete(loadgen.run_closed(sim_pool.urls()[0], reqs, 3))
    finally:
        loop.close()
    by_status = [r["status"] for r in res.records]
    assert by_status.count("ok") == 6 and by_status[-1] == "error"
    assert res.records[-1]["http_status"] == 404 and "no-such-model" in res.records[-1]["error"]


@pytest.mark.parametrize("policy", ["ROUND_ROBIN", "LEAST_REQUEST"])
def test_envoy_lb_configs_validate(tmp_path, policy):
    p = tmp_path / "e.json"
    import json
    p.write_text(json.dumps(lb_config(listen_port=10000, admin_port=10001, pool=["127.0.0.1:1", "127.0.0.1:2"],
                                      lb_policy=policy)))
    validate_envoy(p)


def test_envoy_lb_rejects_unknown_policy():
    with pytest.raises(ValueError, match="lb_policy"):
        lb_config(listen_port=1, admin_port=2, pool=["127.0.0.1:1"], lb_policy="RANDOMISH")
