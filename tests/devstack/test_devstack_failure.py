"""A pool's failure mode when its picker dies: FailOpen routes on without it, FailClose
answers an OpenAI-style error. Its own stack: the pickers are killed here."""
from __future__ import annotations

import httpx

from infershift.devstack.traffic import burst, chat_body


def test_fail_open_pool_serves_without_its_picker(local_stack):
    assert local_stack.spec.pools["mymodel-pool-v1"].failure_mode == "FailOpen"
    local_stack.kill_picker("mymodel-pool-v1")
    tally = burst(local_stack.url("llm-gw") + "/v1/chat/completions", chat_body("mymodel"), 60)
    assert tally.failed == 0, tally.errors
    # Pool v1's share still arrives, over its own endpoints, without the picker's header.
    v1 = {e.name for e in local_stack.endpoints["qwen"]}
    assert sum(n for pod, n in tally.pods.items() if pod in v1) > 30
    r = httpx.post(local_stack.url("llm-gw") + "/v1/chat/completions", json=chat_body("mymodel"),
                   headers={"x-canary": "false"}, timeout=30)
    assert r.status_code == 200


def test_fail_close_pool_answers_an_error_without_its_picker(local_stack):
    assert local_stack.spec.pools["llama2-pool"].failure_mode == "FailClose"
    url = local_stack.url("lora-gw") + "/v1/chat/completions"
    assert httpx.post(url, json=chat_body("lora-request"), timeout=30).status_code == 200
    local_stack.kill_picker("llama2-pool")
    r = httpx.post(url, json=chat_body("lora-request"), timeout=30)
    print(r.status_code, r.headers, r.text)
    assert r.status_code == 503
    error = r.json()["error"]
    assert set(error) >= {"message", "type", "param", "code"}
    assert "llama2-pool" in error["message"]
