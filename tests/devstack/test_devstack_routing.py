"""The local stack through the real Envoy: canary splits, pins, mirrors, errors.

One running `local` stack (a copy of its file) for the whole module."""
from __future__ import annotations

import httpx
from devstack_helpers import within

from infershift.devstack.traffic import burst, chat_body, served_count, settled_count

N = 200


def pools_of(stack) -> dict[str, str]:
    svc_pool = {svc: pools[0] for svc, pools in stack.service_pools().items()}
    return {pod: svc_pool.get(svc, "?") for pod, svc in stack.pod_service().items()}


def test_base_model_canary_splits_by_route_weight(local_stack):
    tally = burst(local_stack.url("llm-gw") + "/v1/chat/completions", chat_body("mymodel"), N)
    assert tally.failed == 0, tally.errors
    by_pool = tally.by(pools_of(local_stack))
    assert set(by_pool) <= {"mymodel-pool-v1", "mymodel-pool-v2"}
    ok, why = within(by_pool["mymodel-pool-v2"], N, 10 / 100)
    assert ok, why
    assert tally.targets == {"mymodel": N}


def test_lora_canary_splits_by_target_weight_and_rewrites_model(local_stack):
    url = local_stack.url("llm-gw") + "/v1/chat/completions"
    tally = burst(url, chat_body("travelhelper"), N)
    assert tally.failed == 0, tally.errors
    assert set(tally.targets) <= {"travel-helper-v1", "travel-helper-v2"}
    ok, why = within(tally.targets["travel-helper-v2"], N, 10 / 100)
    assert ok, why
    # As the guides show: the body names the adapter that served it (responseModel: served, the
    # default), and so does the header.
    r = httpx.post(url, json=chat_body("travelhelper"), timeout=30)
    assert r.json()["model"] in {"travel-helper-v1", "travel-helper-v2"}
    assert r.headers["x-infershift-target-model"] == r.json()["model"]


def picker_decisions(stack, pool: str) -> float:
    """Requests the pool's picker decided (its Prometheus counter)."""
    text = httpx.get(f"http://127.0.0.1:{stack.pools[pool].metrics_port}/metrics", timeout=5).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("infershift_picker_requests_total{"))


def test_in_pool_split_and_mirror_to_a_pool_through_its_own_picker(local_stack):
    candidate = [e.address for e in local_stack.endpoints["llama2-candidate"]]
    before = sum(served_count(a) for a in candidate)
    decided_before = picker_decisions(local_stack, "llama2-candidate-pool")
    tally = burst(local_stack.url("lora-gw") + "/v1/chat/completions", chat_body("lora-request"), N)
    assert tally.failed == 0, tally.errors
    # The client sees only the primary pool's answers ...
    assert set(tally.by(local_stack.pod_service())) == {"llama2"}
    ok, why = within(tally.targets["sql-lora"], N, 50 / 100)
    assert ok, why
    # ... and every request was copied to the candidate pool, whose picker rewrote the
    # model to an adapter the candidate serves (else the shadow would 404 and not count).
    mirrored = settled_count(candidate, before + N) - before
    assert mirrored >= N * 0.95, f"candidate pool served {mirrored} of {N} mirrored requests"
    assert picker_decisions(local_stack, "llama2-candidate-pool") - decided_before >= mirrored


def test_pinned_header_always_reaches_the_canary(local_stack):
    tally = burst(local_stack.url("llm-gw") + "/v1/chat/completions", chat_body("mymodel"), 40,
                  headers={"x-canary": "true"})
    assert tally.failed == 0, tally.errors
    assert tally.by(pools_of(local_stack)) == {"mymodel-pool-v2": 40}
    other = burst(local_stack.url("llm-gw") + "/v1/chat/completions", chat_body("mymodel"), 40,
                  headers={"x-canary": "false"})
    assert other.by(pools_of(local_stack))["mymodel-pool-v1"] > 20


def test_completions_endpoint_as_in_the_seeds(local_stack):
    r = httpx.post(local_stack.url("llm-gw") + "/v1/completions",
                   json={"model": "mymodel", "prompt": "San Francisco is a", "max_tokens": 5}, timeout=30)
    assert r.status_code == 200, r.text
    assert r.json()["object"] == "text_completion"


def test_unknown_model_is_an_openai_404(local_stack):
    r = httpx.post(local_stack.url("llm-gw") + "/v1/chat/completions", json=chat_body("no-such-model"), timeout=30)
    assert r.status_code == 404
    error = r.json()["error"]
    assert set(error) >= {"message", "type", "param", "code"}
    assert "no-such-model" in error["message"]


def test_unmatched_path_is_an_openai_404(local_stack):
    r = httpx.post(local_stack.url("llm-gw") + "/v2/other", json=chat_body("mymodel"), timeout=30)
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "route_not_found"


def test_picker_errors_keep_their_own_answer_in_a_fail_close_pool(local_stack):
    assert local_stack.spec.pools["llama2-pool"].failure_mode == "FailClose"
    r = httpx.post(local_stack.url("lora-gw") + "/v1/chat/completions", json=chat_body("no-such-model"), timeout=30)
    assert r.status_code == 404
    assert "no-such-model" in r.json()["error"]["message"]


# The seeds' requests, bodies and headers as written (000 / 003 / 004); ports 8080 and
# 8081 are the stack's llm-gw and lora-gw listeners, here moved to free ports.
SEED_REQUESTS = [
    ("llm-gw", "/v1/chat/completions", {}, {
        "model": "mymodel", "temperature": 0, "messages": [{"role": "user", "content": "Who are you?"}]}),
    ("llm-gw", "/v1/chat/completions", {}, {
        "model": "travelhelper", "temperature": 0,
        "messages": [{"role": "user", "content": "I just arrived in Beijing, please recommend a tourist attraction"}]}),
    ("lora-gw", "/v1/completions", {"host": "test.com"}, {
        "model": "lora-request", "prompt": "Write as if you were a critic: San Francisco", "max_tokens": 100,
        "temperature": 0}),
]


def test_seed_requests_work_as_written(local_stack):
    for listener, path, headers, body in SEED_REQUESTS:
        r = httpx.post(local_stack.url(listener) + path, json=body, headers=headers, timeout=120)
        assert r.status_code == 200, (body["model"], r.text)
        assert r.json()["choices"], r.text
