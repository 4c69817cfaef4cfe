"""Every committed stack starts locally (simulators standing in for its GPUs) and
serves one request per route through the real Envoy; ack-mirror's shadow is counted."""
from __future__ import annotations

import httpx
import pytest
from devstack_helpers import FAST, REPO, copy_stack

from infershift import spec
from infershift.devstack.stack import Options, run
from infershift.devstack.traffic import served_count, settled_count
from tests.devstack.outside_sim import outside_simulator


@pytest.mark.parametrize("name", spec.stack_names())
def test_stack_starts_and_serves_one_request_per_route(name, tmp_path):
    with run(copy_stack(name, tmp_path), Options(**FAST, watch=False)) as stack:
        requests = stack.sample_requests()
        assert {r["route"] for r in requests} == set(stack.spec.routes) | set(stack.spec.mirrors)
        # every client-facing model name a route's pools route gets its curl
        routed = {m for route in stack.spec.routes.values() for p in route.backends for m in stack.spec.pools[p].models}
        routed |= {m for mirror in stack.spec.mirrors.values() for m in stack.spec.pools[mirror.backend].models}
        assert routed <= {r["body"]["model"] for r in requests}
        for req in requests:
            if set(req["routePools"]) <= set(req["pools"]):
                r = httpx.post(req["url"], json=req["body"], headers=req["headers"], timeout=60)
                assert r.status_code == 200, f"{name} route {req['route']}: {r.status_code} {r.text}"
                assert r.headers.get("x-inference-pod"), r.headers
                continue
            # A model only some of the route's pools route (ack-canary's travelhelper LoRA canary
            # lives in pool v1 only): the weights' share for the others gets model_not_found, as
            # on a cluster; the rest is served by a pool that routes it.
            pods = {e.name for p in req["pools"] for g in stack.gw.pool(p).servers for e in stack.endpoints[g]}
            served = 0
            for _ in range(40):
                r = httpx.post(req["url"], json=req["body"], headers=req["headers"], timeout=60)
                if r.status_code == 404:
                    assert r.json()["error"]["code"] == "model_not_found", r.text
                    continue
                assert r.status_code == 200, f"{name} route {req['route']}: {r.status_code} {r.text}"
                assert r.headers.get("x-inference-pod") in pods, r.headers
                served += 1
            assert served > 0, f"{name} route {req['route']}: no request for {req['body']['model']} was served"


def test_mirror_to_a_service_counts_on_the_shadow_and_the_client_sees_the_primary(tmp_path):
    with run(copy_stack("ack-mirror", tmp_path), Options(**FAST, watch=False)) as stack:
        shadow = [e.address for e in stack.endpoints["vllm-llama2-7b-pool-1"]]
        primary_pods = {e.name for e in stack.endpoints["vllm-llama2-7b-pool"]}
        before = sum(served_count(a) for a in shadow)
        req = stack.sample_requests()[0]
        assert req["headers"] == {"host": "example.com"}
        n = 20
        with httpx.Client(timeout=60) as client:
            for _ in range(n):
                r = client.post(req["url"], json=req["body"], headers=req["headers"])
                assert r.status_code == 200, r.text
                assert r.headers["x-inference-pod"] in primary_pods
        assert settled_count(shadow, before + n) - before == n
        # A host the route does not name gets the gateway's OpenAI-style 404.
        r = httpx.post(req["url"], json=req["body"], timeout=30)
        assert r.status_code == 404 and r.json()["error"]["code"] == "route_not_found"


def test_service_endpoints_use_running_servers_instead_of_simulators(tmp_path):
    """`endpoints:` points a service at servers already running (a local vLLM, say);
    here a simulator started outside devstack stands in for one."""
    with outside_simulator("--model", "/models/external", "--served-model-name", "ext", "--pod-name", "outside",
                           "--time-scale", "50", cwd=str(REPO)) as port:
        stack_file = tmp_path / "Pulumi.external.yaml"
        stack_file.write_text(f"""
config:
  infershift:platform: {{kind: kubeconfig}}
  infershift:images: {{registry: localhost:5001/infershift}}
  infershift:services:
    ext:
      model: /models/external
      servedModelName: ext
      replicas: 1
      endpoints: ["http://localhost:{port}"]
  infershift:pools:
    ext-pool: {{selector: {{app: ext}}, failureMode: FailClose}}
  infershift:gateway:
    listeners: [{{name: http, port: 8080}}]
  infershift:routes:
    r: {{backends: {{ext-pool: 1}}}}
""")
        with run(stack_file, Options(**FAST, watch=False)) as stack:
            assert "ext" not in stack.sim_ports  # no simulator was started for it
            r = httpx.post(stack.url() + "/v1/chat/completions", timeout=60, json={
                "model": "ext", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4})
            assert r.status_code == 200, r.text
            assert r.headers["x-inference-pod"] == "outside-0"


def test_body_limits_answer_in_openai_shape(tmp_path):
    from infershift.spec.config_path import set_many_in_file

    stack_file = copy_stack("ack-canary", tmp_path)
    set_many_in_file(stack_file, {
        "gateway.bufferLimit": "256Ki",
        "pools.mymodel-pool-v1.picker.maxBodySize": "64Ki",
        "routes.inference-route.backends.mymodel-pool-v2": 0,
    })
    with run(stack_file, Options(**FAST, watch=False)) as stack:
        url = stack.url() + "/v1/chat/completions"
        def ask(size: int) -> httpx.Response:
            return httpx.post(url, timeout=60, json={
                "model": "mymodel", "max_tokens": 2, "messages": [{"role": "user", "content": "x" * size}]})
        assert ask(10 * 1024).status_code == 200
        over_picker = ask(100 * 1024)  # over the picker's maxBodySize: the picker says so
        assert over_picker.status_code == 413, over_picker.text
        assert set(over_picker.json()["error"]) >= {"message", "type", "param", "code"}
        over_gateway = ask(400 * 1024)  # over the gateway's bufferLimit: Envoy says so
        assert over_gateway.status_code == 413, over_gateway.text
        assert over_gateway.json()["error"]["code"] == "request_too_large"
