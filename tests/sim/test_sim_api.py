"""The OpenAI/vLLM HTTP surface: shapes, errors, headers, adapters, faults."""
import asyncio
import json

import pytest

from conftest import ADAPTERS, admin
from sim_helpers import scrape, stream_times, value

pytestmark = pytest.mark.asyncio
FAST = 20   # time scale for tests that are not about absolute pace


async def post(sess, url, body=None, raw=None):
    data = raw if raw is not None else json.dumps(body)
    async with sess.post(url, data=data, headers={"content-type": "application/json"}) as r:
        text = await r.text()
        try:
            payload = json.loads(text)
        except ValueError:
            payload = text
        return r.status, payload, r.headers


async def test_completion_shape_usage_and_model_marker(start_server):
    srv, base, sess = await start_server(time_scale=FAST, adapters=ADAPTERS, max_loras=2)
    st, body, h = await post(sess, base + "/v1/completions",
                             {"model": "base", "prompt": "Write as if you were a critic: San Francisco",
                              "max_tokens": 7})
    assert st == 200 and h["x-inference-pod"] == "sim-test-0" and h["x-inference-port"] == str(srv.port)
    assert body["object"] == "text_completion" and body["model"] == "base"
    ch = body["choices"][0]
    assert ch["finish_reason"] == "length" and ch["text"].startswith("[base]")
    assert body["usage"] == {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18,
                             "prompt_tokens_details": {"cached_tokens": 0}}
    # the adapter answers visibly differently, and names itself
    st, body2, _ = await post(sess, base + "/v1/completions",
                              {"model": "travel-helper-v2", "prompt": "Write as if you were a critic: San Francisco",
                               "max_tokens": 7})
    assert body2["model"] == "travel-helper-v2"
    assert body2["choices"][0]["text"].startswith("[travel-helper-v2]")
    assert body2["choices"][0]["text"].split("]", 1)[1] != ch["text"].split("]", 1)[1]


async def test_output_is_deterministic_per_seed_and_stops_naturally(start_server):
    _, base1, sess = await start_server(time_scale=FAST, seed=7, name="a")
    _, base2, _ = await start_server(time_scale=FAST, seed=7, name="b")
    _, base3, _ = await start_server(time_scale=FAST, seed=8, name="c")
    req = {"model": "base", "prompt": "tell me a story", "max_tokens": 2000}
    outs = [(await post(sess, b + "/v1/completions", req))[1] for b in (base1, base2, base3)]
    assert outs[0]["choices"][0]["text"] == outs[1]["choices"][0]["text"]
    assert outs[0]["choices"][0]["text"] != outs[2]["choices"][0]["text"]
    # without ignore_eos the model ends on its own before a large max_tokens
    assert outs[0]["choices"][0]["finish_reason"] == "stop"
    assert outs[0]["usage"]["completion_tokens"] < 2000


async def test_chat_stream_with_usage_and_max_completion_tokens(start_server):
    srv, base, sess = await start_server(time_scale=FAST)
    _, times, chunks = await stream_times(sess, base + "/v1/chat/completions", {
        "model": "base", "messages": [{"role": "user", "content": "hi"}], "max_completion_tokens": 5,
        "stream_options": {"include_usage": True}})
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert all(c["object"] == "chat.completion.chunk" and c["model"] == "base" for c in chunks)
    assert len(times) == 5
    finishes = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]]
    assert finishes[-1] == "length" and not any(finishes[:-1])
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 5
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    st, full, _ = await post(sess, base + "/v1/chat/completions", {
        "model": "base", "messages": [{"role": "user", "content": "hi"}], "max_completion_tokens": 5})
    assert full["choices"][0]["message"]["content"] == text    # same answer streamed or not


async def test_errors_as_vllm_returns_them(start_server):
    srv, base, sess = await start_server(time_scale=FAST, max_model_len=512)
    url = base + "/v1/completions"
    st, body, h = await post(sess, url, {"model": "nope", "prompt": "x"})
    assert st == 404 and body["error"]["type"] == "NotFoundError" and body["error"]["param"] == "model"
    assert "nope" in body["error"]["message"] and body["error"]["code"] == 404
    assert h["x-inference-pod"] == "sim-test-0"
    st, body, _ = await post(sess, url, {"model": "base", "prompt": "x" * 4 * 600, "max_tokens": 10})
    assert st == 400 and "maximum context length is 512" in body["error"]["message"]
    st, body, _ = await post(sess, url, {"model": "base", "prompt": "x" * 4 * 500, "max_tokens": 100})
    assert st == 400 and body["error"]["param"] == "prompt"
    cases = [
        ({"model": "base", "prompt": "x", "max_tokens": "10"}, "max_tokens"),
        ({"model": "base", "prompt": "x", "max_tokens": 0}, "max_tokens"),
        ({"model": "base"}, "prompt"),
        ({"model": "base", "prompt": ["a", "b"]}, "prompt"),
        ({"model": "base", "prompt": "x", "n": 2}, "n"),
        ({"model": "base", "prompt": "x", "stream_options": {"include_usage": True}}, "stream_options"),
        ({"model": 3, "prompt": "x"}, "model"),
    ]
    for req, param in cases:
        st, body, _ = await post(sess, url, req)
        assert st == 400 and body["error"]["param"] == param, (req, body)
        assert set(body["error"]) == {"message", "type", "param", "code"}
    st, body, _ = await post(sess, base + "/v1/chat/completions", {"model": "base", "messages": []})
    assert st == 400 and body["error"]["param"] == "messages"
    st, body, _ = await post(sess, url, raw="{not json")
    assert st == 400 and "JSON" in body["error"]["message"]


MALFORMED = [  # bodies a fuzzer sends: each is the client's mistake, so 400, never 500
    ("deep nesting", "completions", '{"model": "base", "prompt": "x", "extra": ' + "[" * 5000 + "]" * 5000 + "}"),
    ("deep nesting of objects", "chat", '{"model": "base", "messages": [' + '{"a":' * 3000 + "1" + "}" * 3000 + "]}"),
    ("lone surrogate in a prompt", "completions", '{"model": "base", "prompt": "hi \\ud800 there"}'),
    ("lone low surrogate in a message", "chat", '{"model": "base", "messages": [{"role": "user", "content": "\\udc00"}]}'),
    ("non-string text part", "chat", '{"model": "base", "messages": [{"role": "user", "content": [{"type": "text", "text": 5}]}]}'),
    ("text part that is a list", "chat",
     '{"model": "base", "messages": [{"role": "user", "content": [{"type": "text", "text": ["a"]}]}]}'),
    ("part that is not an object", "chat", '{"model": "base", "messages": [{"role": "user", "content": ["hi", 3]}]}'),
    ("not UTF-8", "completions", b'{"model": "base", "prompt": "\xff\xfe"}'),
    ("a JSON string", "completions", '"just a string"'),
    ("null", "chat", "null"),
]


@pytest.mark.parametrize("what,endpoint,raw", MALFORMED, ids=[m[0] for m in MALFORMED])
async def test_malformed_bodies_get_400_in_the_error_shape(start_server, what, endpoint, raw):
    srv, base, sess = await start_server(time_scale=FAST)
    urls = {"completions": base + "/v1/completions", "chat": base + "/v1/chat/completions"}
    for url in (urls[endpoint], admin(srv) + "/admin/predict"):
        st, body, h = await post(sess, url, raw=raw)
        assert st == 400, (what, url, st, body)
        assert set(body["error"]) == {"message", "type", "param", "code"} and body["error"]["type"] == "BadRequestError"
    # a surrogate *pair* is valid text (an emoji), and the server still answers
    st, body, _ = await post(sess, urls["completions"], raw='{"model": "base", "prompt": "\\ud83d\\ude00", "max_tokens": 2}')
    assert st == 200, body


async def test_admin_endpoints_are_only_on_the_admin_port(start_server):
    srv, base, sess = await start_server(time_scale=FAST)
    assert srv.admin_port not in (None, srv.port)
    for path in ("/admin/faults", "/admin/predict"):
        st, body, _ = await post(sess, base + path, {"stall": True})
        assert st in (404, 405) and body["error"]["code"] in (404, 405), (path, st, body)
    async with sess.get(base + "/admin/faults") as r:
        assert r.status == 404 and (await r.json())["error"]["type"] == "NotFoundError"
    st, body, h = await post(sess, admin(srv) + "/admin/faults", {"error_rate": 0})
    assert st == 200 and body["stall"] is False and h["x-inference-pod"] == "sim-test-0"
    async with sess.get(admin(srv) + "/health") as r:
        assert r.status == 200
    # the serving port's own API stays: adapter loading is vLLM's, and the picker uses it
    st, _, _ = await post(sess, base + "/v1/load_lora_adapter", {"lora_name": "x", "lora_path": "/p"})
    assert st == 200


async def test_down_closes_the_serving_port_and_resets_its_connections(start_server):
    """`down`: as a killed pod. Requests in flight are reset, new connections refused; the admin
    port stays; `down: false` listens again on the same port."""
    import aiohttp

    srv, base, sess = await start_server(time_scale=FAST)
    inflight = asyncio.create_task(post(sess, base + "/v1/completions",
                                        {"model": "base", "prompt": "x", "max_tokens": 3000, "ignore_eos": True}))
    await asyncio.sleep(0.1)
    st, body, _ = await post(sess, admin(srv) + "/admin/faults", {"down": True})
    assert st == 200 and body["down"] is True
    with pytest.raises(aiohttp.ClientError):
        await asyncio.wait_for(inflight, 5)
    async with aiohttp.ClientSession() as fresh:
        with pytest.raises(aiohttp.ClientConnectionError):
            await fresh.get(base + "/health")
    st, _, _ = await post(sess, admin(srv) + "/admin/faults", {"down": False})
    async with aiohttp.ClientSession() as fresh:
        async with fresh.get(base + "/health") as r:
            assert r.status == 200
    await asyncio.sleep(0.05)
    assert len(srv.engine.running) == 0  # the reset request's work was aborted


async def test_admin_requests_shows_what_reached_the_server(start_server):
    srv, base, sess = await start_server(time_scale=FAST)
    async with sess.post(base + "/v1/completions?x=1", json={"model": "base", "prompt": "x", "max_tokens": 2},
                         headers={"X-Gateway-Destination-Endpoint": "1.2.3.4:5"}) as r:
        assert r.status == 200
    async with sess.get(base + "/metrics") as r:  # polls are not recorded
        assert r.status == 200
    async with sess.get(admin(srv) + "/admin/requests?clear=1") as r:
        seen = (await r.json())["requests"]
    assert [(x["method"], x["path"]) for x in seen] == [("POST", "/v1/completions?x=1")]
    assert ["x-gateway-destination-endpoint", "1.2.3.4:5"] in seen[0]["headers"]
    async with sess.get(admin(srv) + "/admin/requests") as r:
        assert (await r.json())["requests"] == []


async def test_admin_on_the_serving_port_when_asked(start_server):
    srv, base, sess = await start_server(time_scale=FAST, admin_on_serving_port=True)
    st, body, _ = await post(sess, base + "/admin/faults", {"error_rate": 0})
    assert st == 200 and body["error_rate"] == 0


async def test_large_and_many_headers_are_accepted(start_server):
    """Whatever a gateway lets through (Envoy: 100 headers, its size limit) the server takes, so
    oversized headers are refused by the gateway in the error shape, never here in plain text."""
    srv, base, sess = await start_server(time_scale=FAST)
    headers = {f"x-h{i}": "v" for i in range(150)} | {"x-big": "a" * 40000, "content-type": "application/json"}
    async with sess.post(base + "/v1/completions", data=json.dumps({"model": "base", "prompt": "x", "max_tokens": 2}),
                         headers=headers) as r:
        assert r.status == 200, await r.text()


async def test_full_waiting_queue_gets_429(start_server):
    srv, base, sess = await start_server(time_scale=FAST, max_num_seqs=1, max_waiting=2)
    url = base + "/v1/completions"
    long = {"model": "base", "prompt": "long", "max_tokens": 3000, "ignore_eos": True}
    tasks = [asyncio.create_task(post(sess, url, dict(long, prompt=f"p{i}"))) for i in range(3)]
    await asyncio.sleep(0.2)
    st, body, h = await post(sess, url, long)
    assert st == 429 and body["error"]["code"] == 429 and "waiting queue is full" in body["error"]["message"]
    assert h["Retry-After"] == "1"  # the OpenAI SDK waits that long before it retries
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def test_more_requests_than_max_num_seqs_show_as_waiting(start_server):
    srv, base, sess = await start_server(time_scale=FAST, max_num_seqs=2)
    url = base + "/v1/completions"
    tasks = [asyncio.create_task(post(sess, url, {"model": "base", "prompt": f"q{i}", "max_tokens": 1000,
                                                  "ignore_eos": True})) for i in range(6)]
    await asyncio.sleep(0.15)
    m = await scrape(sess, base)
    assert value(m, "vllm:num_requests_running", model_name="base") == 2
    assert value(m, "vllm:num_requests_waiting", model_name="base") == 4
    res = await asyncio.gather(*tasks)
    assert all(st == 200 for st, _, _ in res)
    m = await scrape(sess, base)
    assert value(m, "vllm:num_requests_waiting", model_name="base") == 0


async def test_more_than_the_kv_cache_holds_waits(start_server):
    # 80 blocks of 16 tokens: each request needs 44 blocks at admission, so one runs at a time
    srv, base, sess = await start_server(time_scale=FAST / 4, num_gpu_blocks=80)
    url = base + "/v1/completions"
    tasks = [asyncio.create_task(post(sess, url, {"model": "base", "prompt": chr(97 + i) * 4 * 700,
                                                  "max_tokens": 500, "ignore_eos": True})) for i in range(3)]
    await asyncio.sleep(0.15)
    m = await scrape(sess, base)
    assert value(m, "vllm:num_requests_running", model_name="base") == 1
    assert value(m, "vllm:num_requests_waiting", model_name="base") == 2
    assert value(m, "vllm:kv_cache_usage_perc", model_name="base") > 0.5
    res = await asyncio.gather(*tasks)
    assert all(st == 200 for st, _, _ in res)


async def test_inactive_adapter_waits_for_a_slot_then_runs(start_server):
    srv, base, sess = await start_server(time_scale=FAST, adapters=ADAPTERS, max_loras=1)
    url = base + "/v1/completions"
    a = asyncio.create_task(post(sess, url, {"model": "travel-helper-v1", "prompt": "a", "max_tokens": 800,
                                             "ignore_eos": True}))
    await asyncio.sleep(0.05)
    b = asyncio.create_task(post(sess, url, {"model": "travel-helper-v2", "prompt": "b", "max_tokens": 200,
                                             "ignore_eos": True}))
    await asyncio.sleep(0.05)
    m = await scrape(sess, base)
    (info,) = m["vllm:lora_requests_info"]
    assert info.labels == {"max_lora": "1", "model_name": "base", "running_lora_adapters": "travel-helper-v1",
                           "waiting_lora_adapters": "travel-helper-v2"}
    await a
    await asyncio.sleep(0.02)
    m = await scrape(sess, base)
    (info,) = m["vllm:lora_requests_info"]
    assert info.labels["running_lora_adapters"] == "travel-helper-v2"
    assert info.labels["waiting_lora_adapters"] == ""
    st, body, _ = await b
    assert st == 200 and body["model"] == "travel-helper-v2"


async def test_metrics_parse_and_carry_vllm_names(start_server):
    srv, base, sess = await start_server(time_scale=FAST, num_gpu_blocks=1234, block_size=32)
    await post(sess, base + "/v1/completions", {"model": "base", "prompt": "x" * 400, "max_tokens": 4})
    async with sess.get(base + "/metrics") as r:
        assert r.headers["x-inference-pod"] == "sim-test-0"
        assert r.headers["content-type"].startswith("text/plain")
    m = await scrape(sess, base)
    for name in ("vllm:num_requests_running", "vllm:num_requests_waiting", "vllm:kv_cache_usage_perc",
                 "vllm:gpu_cache_usage_perc", "vllm:prefix_cache_queries_total", "vllm:prefix_cache_hits_total",
                 "vllm:prompt_tokens_total", "vllm:generation_tokens_total", "vllm:request_success_total",
                 "vllm:time_to_first_token_seconds_bucket", "vllm:inter_token_latency_seconds_bucket",
                 "vllm:e2e_request_latency_seconds_sum"):
        assert all(s.labels["model_name"] == "base" for s in m[name]), name
    (cfg,) = m["vllm:cache_config_info"]
    assert cfg.labels["block_size"] == "32" and cfg.labels["num_gpu_blocks"] == "1234"
    assert cfg.labels["model_name"] == "base"
    assert value(m, "vllm:prompt_tokens_total", model_name="base") == 100
    assert value(m, "vllm:generation_tokens_total", model_name="base") == 4
    assert value(m, "vllm:e2e_request_latency_seconds_count", model_name="base") == 1


async def test_models_and_runtime_adapter_loading(start_server):
    srv, base, sess = await start_server(time_scale=FAST, adapters=ADAPTERS[:1], served=["mymodel"])
    async with sess.get(base + "/v1/models") as r:
        models = await r.json()
    assert models["object"] == "list"
    assert [(m["id"], m["parent"]) for m in models["data"]] == [("mymodel", None),
                                                               ("travel-helper-v1", "mymodel")]
    assert models["data"][0]["root"] == "/models/llama-3.1-8b"
    st, _, _ = await post(sess, base + "/v1/load_lora_adapter", {"lora_name": "new", "lora_path": "/p"})
    assert st == 200
    st, body, _ = await post(sess, base + "/v1/load_lora_adapter", {"lora_name": "new", "lora_path": "/p"})
    assert st == 400 and "already been loaded" in body["error"]["message"]
    st, body, _ = await post(sess, base + "/v1/completions", {"model": "new", "prompt": "x", "max_tokens": 2})
    assert st == 200 and body["model"] == "new"
    st, _, _ = await post(sess, base + "/v1/unload_lora_adapter", {"lora_name": "new"})
    assert st == 200
    st, body, _ = await post(sess, base + "/v1/unload_lora_adapter", {"lora_name": "new"})
    assert st == 404
    st, body, _ = await post(sess, base + "/v1/completions", {"model": "new", "prompt": "x"})
    assert st == 404
    async with sess.get(base + "/health") as r:
        assert r.status == 200 and r.headers["x-inference-pod"] == "sim-test-0"


async def test_injected_faults(start_server):
    srv, base, sess = await start_server(time_scale=FAST)
    url = base + "/v1/completions"
    req = {"model": "base", "prompt": "x", "max_tokens": 2}
    st, body, _ = await post(sess, admin(srv) + "/admin/faults", {"error_rate": 1.0, "error_status": 503})
    assert st == 200 and body["error_rate"] == 1.0
    st, body, h = await post(sess, url, req)
    assert st == 503 and body["error"]["code"] == 503 and h["x-inference-pod"] == "sim-test-0"
    await post(sess, admin(srv) + "/admin/faults", {"error_rate": 0.5, "error_status": 500})
    statuses = [(await post(sess, url, req))[0] for _ in range(40)]
    assert 5 <= statuses.count(500) <= 35 and statuses.count(200) + statuses.count(500) == 40
    st, body, _ = await post(sess, admin(srv) + "/admin/faults", {"error_rate": 2})
    assert st == 400 and body["error"]["param"] == "error_rate"
    st, body, _ = await post(sess, admin(srv) + "/admin/faults", {"bogus": 1})
    assert st == 400 and body["error"]["param"] == "bogus"
    # stall: connections are accepted but nothing answers, until it is lifted
    await post(sess, admin(srv) + "/admin/faults", {"error_rate": 0, "stall": True})
    pending = asyncio.create_task(post(sess, url, req))
    done, _ = await asyncio.wait([pending], timeout=0.5)
    assert not done
    await post(sess, admin(srv) + "/admin/faults", {"stall": False})
    st, _, _ = await asyncio.wait_for(pending, 5)
    assert st == 200
    # slow start: unavailable for a while, then healthy
    await post(sess, admin(srv) + "/admin/faults", {"slow_start_seconds": 0.4})
    async with sess.get(base + "/health") as r:
        assert r.status == 503 and r.headers["Retry-After"] == "1"
    async with sess.get(admin(srv) + "/admin/faults") as r:
        assert (await r.json())["starting"] is True
    await asyncio.sleep(0.5)
    async with sess.get(base + "/health") as r:
        assert r.status == 200
    # delay: every generation request waits that long before it starts; /health does not
    t0 = asyncio.get_running_loop().time()
    assert (await post(sess, url, req))[0] == 200
    quick = asyncio.get_running_loop().time() - t0
    await post(sess, admin(srv) + "/admin/faults", {"delay_seconds": 0.3})
    t0 = asyncio.get_running_loop().time()
    assert (await post(sess, url, req))[0] == 200
    assert asyncio.get_running_loop().time() - t0 >= 0.3 > quick
    async with sess.get(admin(srv) + "/admin/faults") as r:
        assert (await r.json())["delay_seconds"] == 0.3
    st, body, _ = await post(sess, admin(srv) + "/admin/faults", {"delay_seconds": -1})
    assert st == 400 and body["error"]["param"] == "delay_seconds"
    await post(sess, admin(srv) + "/admin/faults", {"delay_seconds": 0})


async def test_predict_matches_prefix_cache_and_queue(start_server):
    srv, base, sess = await start_server(time_scale=FAST, max_num_seqs=1)
    url = base + "/v1/completions"
    prompt = "z" * 4000
    await post(sess, url, {"model": "base", "prompt": prompt, "max_tokens": 2})
    st, warm, _ = await post(sess, admin(srv) + "/admin/predict", {"model": "base", "prompt": prompt, "max_tokens": 2})
    st, cold, _ = await post(sess, admin(srv) + "/admin/predict", {"model": "base", "prompt": "q" * 4000, "max_tokens": 2})
    assert st == 200 and warm["queue_position"] == 0 and warm["ttft_seconds"] < cold["ttft_seconds"]
    busy = [asyncio.create_task(post(sess, url, {"model": "base", "prompt": f"b{i}", "max_tokens": 1500,
                                                 "ignore_eos": True})) for i in range(3)]
    await asyncio.sleep(0.1)
    st, queued, _ = await post(sess, admin(srv) + "/admin/predict", {"model": "base", "prompt": "q" * 4000,
                                                              "max_tokens": 2})
    assert queued["queue_position"] == 2 and queued["ttft_seconds"] > cold["ttft_seconds"] * 3
    st, bad, _ = await post(sess, admin(srv) + "/admin/predict", {"model": "nope", "prompt": "x"})
    assert st == 404
    srv.engine.max_waiting = 2   # two are queued: a third would be refused
    st, full, _ = await post(sess, admin(srv) + "/admin/predict", {"model": "base", "prompt": "q", "max_tokens": 2})
    assert full == {"ttft_seconds": None, "queue_position": 2, "queue_full": True}
    for t in busy:
        t.cancel()
    await asyncio.gather(*busy, return_exceptions=True)


async def test_client_disconnect_aborts_the_request(start_server):
    srv, base, sess = await start_server(time_scale=FAST)
    task = asyncio.create_task(post(sess, base + "/v1/completions",
                                    {"model": "base", "prompt": "x", "max_tokens": 2000, "ignore_eos": True}))
    await asyncio.sleep(0.1)
    assert len(srv.engine.running) == 1
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await asyncio.sleep(0.1)
    assert len(srv.engine.running) == 0 and srv.engine.kv.usage() == 0


async def test_unexpected_errors_still_answer_in_the_error_shape(start_server, monkeypatch):
    srv, base, sess = await start_server(time_scale=FAST)

    def broken(*a, **k):
        raise RuntimeError("boom")

    monkeypatch.setattr(srv.engine, "predict", broken)
    st, body, h = await post(sess, admin(srv) + "/admin/predict", {"model": "base", "prompt": "x"})
    assert st == 500 and body["error"]["type"] == "InternalServerError" and "boom" in body["error"]["message"]
    assert h["x-inference-pod"] == "sim-test-0"
