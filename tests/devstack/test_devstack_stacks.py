"""Every committed stack starts locally (simulators standing in for its GPUs) and
serves one request per route through the real Envoy; ack-mirror's shadow is counted."""
from __future__ import annotations

import httpx
import pytest
from devstack_helpers import FAST, copy_stack

import spec
from devstack.stack import Options, run
from devstack.traffic import served_count


@pytest.mark.parametrize("name", spec.stack_names())
def test_stack_starts_and_serves_one_request_per_route(name, tmp_path):
    with run(copy_stack(name, tmp_path), Options(**FAST, watch=False)) as stack:
        requests = stack.sample_requests()
        assert len(requests) == len(stack.spec.routes) + len(stack.spec.mirrors) > 0
        for req in requests:
            r = httpx.post(req["url"], json=req["body"], headers=req["headers"], timeout=60)
            assert r.status_code == 200, f"{name} route {req['route']}: {r.status_code} {r.text}"
            assert r.headers.get("x-inference-pod"), r.headers


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
        deadline_reads = 50
        while sum(served_count(a) for a in shadow) - before < n and deadline_reads:
            deadline_reads -= 1  # shadows may finish just after the primary answers
            httpx.get(f"http://{shadow[0]}/health", timeout=5)
        assert sum(served_count(a) for a in shadow) - before == n
        # A host the route does not name gets the gateway's OpenAI-style 404.
        r = httpx.post(req["url"], json=req["body"], timeout=30)
        assert r.status_code == 404 and r.json()["error"]["code"] == "route_not_found"
