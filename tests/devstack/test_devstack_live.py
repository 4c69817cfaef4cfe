"""Live changes: edits of the stack file reach Envoy and the pickers while traffic flows.

Apply times are printed (run with -s to see them), not asserted: timing belongs to
benchmarks, and CI boxes are busy."""
from __future__ import annotations

import time

import httpx

from devstack_helpers import within

from infershift.spec.config_path import set_many_in_file
from infershift.devstack.traffic import Load, burst, chat_body, served_count, settled_count

ROUTE = "routes.inference-route.backends"


def edit(stack, values: dict, *, expect_ok: bool = True, timeout: float = 30.0):
    """Edit the stack file as `pulumi config set --path` would; wait for the watcher."""
    seen = len(stack.applied)
    started = time.monotonic()
    set_many_in_file(stack.stack_file, values)
    while len(stack.applied) == seen:
        assert time.monotonic() - started < timeout, "the watcher did not pick up the edit"
        time.sleep(0.02)
    result = stack.applied[-1]
    print(f"edit {values}: {'applied' if result.ok else 'refused'} after {time.monotonic() - started:.2f}s "
          f"({result.message})")
    assert result.ok == expect_ok, result.message
    return result


def pool_of(stack):
    svc_pool = {svc: pools[0] for svc, pools in stack.service_pools().items()}
    return {pod: svc_pool[svc] for pod, svc in stack.pod_service().items()}


def test_canary_shift_under_constant_load_has_no_failures(local_stack):
    url = local_stack.url("llm-gw") + "/v1/chat/completions"
    with Load(url, chat_body("mymodel"), concurrency=4) as load:
        time.sleep(0.5)
        for weight in (0, 10, 50, 100, 0):
            edit(local_stack, {f"{ROUTE}.mymodel-pool-v1": 100 - weight, f"{ROUTE}.mymodel-pool-v2": weight})
            n = 40 if weight in (0, 100) else 200
            tally = burst(url, chat_body("mymodel"), n)
            assert tally.failed == 0, tally.errors
            ok, why = within(tally.by(pool_of(local_stack))["mymodel-pool-v2"], n, weight / 100)
            assert ok, f"weight {weight}: {why}"
            if weight in (0, 100):  # exact: nothing may leak to a zero-weight pool
                assert tally.by(pool_of(local_stack))["mymodel-pool-v2"] == n * weight // 100
    assert load.tally.total > 0
    assert load.tally.failed == 0, load.tally.errors
    print(f"constant load: {load.tally.total} requests, {load.tally.failed} failed")


def test_lora_weight_change_reaches_the_picker(local_stack):
    url = local_stack.url("llm-gw") + "/v1/chat/completions"
    targets = "pools.mymodel-pool-v1.models.travelhelper.targets"
    pinned = {"x-canary": "false"}  # weights 90/10 send most to v1; pool v1's picker is edited
    edit(local_stack, {f"{ROUTE}.mymodel-pool-v1": 100, f"{ROUTE}.mymodel-pool-v2": 0,
                       f"{targets}.travel-helper-v1": 0, f"{targets}.travel-helper-v2": 100})
    started = time.monotonic()
    while True:
        tally = burst(url, chat_body("travelhelper"), 10, headers=pinned)
        assert tally.failed == 0, tally.errors
        if tally.targets == {"travel-helper-v2": 10}:
            break
        assert time.monotonic() - started < 30, f"picker still routes {dict(tally.targets)}"
        time.sleep(0.1)
    print(f"picker applied the LoRA weights {time.monotonic() - started:.2f}s after the file was applied")
    tally = burst(url, chat_body("travelhelper"), 60)
    assert tally.targets == {"travel-helper-v2": 60}
    edit(local_stack, {f"{targets}.travel-helper-v1": 90, f"{targets}.travel-helper-v2": 10,
                       f"{ROUTE}.mymodel-pool-v1": 90, f"{ROUTE}.mymodel-pool-v2": 10})


def test_pinned_header_changes_live(local_stack):
    url = local_stack.url("llm-gw") + "/v1/chat/completions"
    edit(local_stack, {"routes.inference-route.pins[0].value": "yes"})
    tally = burst(url, chat_body("mymodel"), 30, headers={"x-canary": "yes"})
    assert tally.by(pool_of(local_stack)) == {"mymodel-pool-v2": 30}
    old = burst(url, chat_body("mymodel"), 60, headers={"x-canary": "true"})
    assert old.by(pool_of(local_stack))["mymodel-pool-v1"] > 30  # the old pin no longer applies
    edit(local_stack, {"routes.inference-route.pins[0].value": "true"})


def test_mirror_percent_changes_live(local_stack):
    candidate = [e.address for e in local_stack.endpoints["llama2-candidate"]]
    edit(local_stack, {"mirrors.llama2-mirror.percent": 50})
    before = sum(served_count(a) for a in candidate)
    n = 200
    tally = burst(local_stack.url("lora-gw") + "/v1/chat/completions", chat_body("lora-request"), n)
    assert tally.failed == 0, tally.errors
    ok, why = within(settled_count(candidate, before + n) - before, n, 0.5)
    assert ok, why
    edit(local_stack, {"mirrors.llama2-mirror.percent": 100})


def test_invalid_edit_is_reported_and_the_running_config_stays(local_stack):
    result = edit(local_stack, {f"{ROUTE}.mymodel-pool-v2": -5}, expect_ok=False)
    assert "routes.inference-route.backends" in result.message
    tally = burst(local_stack.url("llm-gw") + "/v1/chat/completions", chat_body("mymodel"), 20)
    assert tally.failed == 0, tally.errors
    result = edit(local_stack, {f"{ROUTE}.mymodel-pool-v2": 10, "services.qwen.replicas": 3}, expect_ok=False)
    assert "restart" in result.message
    edit(local_stack, {f"{ROUTE}.mymodel-pool-v2": 10, "services.qwen.replicas": 2})


def test_request_timeout_changes_live_and_times_out_in_openai_shape(local_stack):
    url = local_stack.url("llm-gw") + "/v1/chat/completions"
    edit(local_stack, {"gateway.requestTimeout": "1ms"})
    r = httpx.post(url, json=chat_body("mymodel", max_tokens=200), timeout=60)
    assert r.status_code == 504, r.text
    error = r.json()["error"]
    assert set(error) >= {"message", "type", "param", "code"} and "timeout" in error["message"]
    edit(local_stack, {"gateway.requestTimeout": "5m"})
    assert httpx.post(url, json=chat_body("mymodel"), timeout=60).status_code == 200
