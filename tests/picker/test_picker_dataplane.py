"""Through a real Envoy: the GIE endpoint-picker behaviours and the picker's own routing policies."""
from __future__ import annotations

import json
import math
import threading
import time
from collections import Counter

import pytest

from bench.pickerbench.procs import free_port, wait_until
from pickertest import base_config, complete, request


def served_port(r) -> int:
    return int(r.headers["x-served-port"])


def test_routing_follows_the_picker_subset_hint(stack, reset_servers):
    s = reset_servers
    for key in ("a1", "a2", "b"):
        for _ in range(5):
            r = complete(stack.port, "llama", headers={"x-test-subset": s.addr(key)})
            assert r.status == 200, r.body
            assert served_port(r) == s.ports[key]
    # a subset hint naming no pool endpoint: nothing to route to
    r = complete(stack.port, "llama", headers={"x-test-subset": "10.9.9.9:1"})
    assert r.status == 503 and r.json()["error"]["code"] == "no_ready_endpoint"


def test_load_aware_and_several_target_ports_per_pod(stack, reset_servers):
    s = reset_servers
    subset = {"x-test-subset": f"{s.addr('a1')},{s.addr('a2')}"}
    ports = Counter(served_port(complete(stack.port, "llama", f"p{i}", subset)) for i in range(30))
    assert set(ports) == {s.ports["a1"], s.ports["a2"]}, ports  # both ports of pod-a are endpoints
    s.admin("a1", waiting=3, kv=0.5)  # busier, not saturated
    stack.wait_scraped(s, a1=(3, 0.5, 0))
    ports = Counter(served_port(complete(stack.port, "llama", f"q{i}", subset)) for i in range(20))
    assert ports == {s.ports["a2"]: 20}, ports


def test_served_endpoint_is_reported(stack, reset_servers):
    s = reset_servers
    before = stack.metric("infershift_picker_served_total", endpoint=s.addr("b"), picked="true")
    for _ in range(4):
        assert complete(stack.port, "llama", headers={"x-test-subset": s.addr("b")}).status == 200
    wait_until(lambda: stack.metric("infershift_picker_served_total", endpoint=s.addr("b"), picked="true")
               - before >= 4, 20, "served reports")
    time.sleep(0.2)
    assert stack.metric("infershift_picker_served_total", endpoint=s.addr("b"), picked="true") - before == 4
    assert stack.metric("infershift_picker_served_total", picked="false") == 0


def test_weighted_split_within_pool(stack, reset_servers):
    n = 240
    targets = Counter()
    for i in range(n):
        r = complete(stack.port, "sql", f"split {i}")
        assert r.status == 200, r.body
        assert r.json()["model"] == "sql"  # the client gets back the name it asked for
        targets[r.headers["x-infershift-target-model"]] += 1
    p = 0.7
    tol = max(0.10, 4.5 * math.sqrt(p * (1 - p) / n))
    assert abs(targets["sql-v1"] / n - p) <= tol, targets
    assert targets["sql-v1"] + targets["sql-v2"] == n
    # servers received the rewritten model name
    seen = [x["model"] for k in ("a1", "a2", "b") for x in reset_servers.seen(k)]
    assert "sql" not in seen and {"sql-v1", "sql-v2"} <= set(seen)


def test_sticky_sessions(stack, reset_servers):
    by_session = {}
    for sid in range(24):
        got = {complete(stack.port, "sql", f"turn {t}", {"x-session-id": f"user-{sid}"})
               .headers["x-infershift-target-model"] for t in range(4)}
        assert len(got) == 1, (sid, got)
        by_session[sid] = got.pop()
    assert set(by_session.values()) == {"sql-v1", "sql-v2"}


def test_model_name_rewrite_header_and_sse_restore(stack, reset_servers):
    r = complete(stack.port, "llama", headers={"x-gateway-model-name-rewrite": "sql-v2"})
    assert r.status == 200 and r.headers["x-infershift-target-model"] == "sql-v2"
    assert r.json()["model"] == "llama"
    r = complete(stack.port, "sql", stream=True)
    assert r.status == 200 and r.headers["content-type"].startswith("text/event-stream")
    events = [json.loads(line[6:]) for line in r.body.decode().splitlines()
              if line.startswith("data: {")]
    assert len(events) == 3 and all(e["model"] == "sql" for e in events)


def test_lora_affinity(stack, reset_servers):
    s = reset_servers
    s.admin("a1", running_loras=["x1", "x2"], max_lora=2)  # slots full: would have to evict
    s.admin("a2", waiting_loras=["sql-v1"])                 # adapter only waiting
    s.admin("b", running_loras=["sql-v1"])                  # adapter active
    stack.wait_scraped(s, a1=(0, 0.0, 2), a2=(0, 0.0, 0), b=(0, 0.0, 1))
    ports = Counter(served_port(complete(stack.port, "sql-v1", f"lora {i}")) for i in range(12))
    assert ports == {s.ports["b"]: 12}, ports
    s.admin("b", running_loras=["y1", "y2"])  # b full now: a2 (adapter waiting there) beats evicting
    stack.wait_scraped(s, b=(0, 0.0, 2))
    ports = Counter(served_port(complete(stack.port, "sql-v1", f"lora2 {i}")) for i in range(8))
    assert ports == {s.ports["a2"]: 8}, ports


def test_prefix_affinity(stack, reset_servers):
    s = reset_servers
    shared = "You are a travel agent. " * 200  # ~4.8 KB shared system prompt
    first = served_port(complete(stack.port, "llama", shared + "question 0"))
    ports = Counter(served_port(complete(stack.port, "llama", shared + f"question {i}")) for i in range(1, 15))
    assert ports == {first: 14}, ports
    # unrelated prompts still spread across the pool
    spread = Counter(served_port(complete(stack.port, "llama", f"{i} unrelated " * 50)) for i in range(30))
    assert len(spread) >= 2, spread


def test_pool_mixing_base_models(stack, reset_servers):
    s = reset_servers
    assert {served_port(complete(stack.port, "qwq-32b", f"{i}")) for i in range(10)} == {s.ports["q"]}
    assert s.ports["q"] not in {served_port(complete(stack.port, "llama", f"{i}")) for i in range(20)}


def test_sglang_metrics_drive_routing(stack, reset_servers):
    s = reset_servers
    s.admin("s1", waiting=4, kv=0.6)
    stack.wait_scraped(s, s1=(4, 0.6, 0))
    assert {served_port(complete(stack.port, "mistral", f"{i}")) for i in range(12)} == {s.ports["s2"]}


@pytest.fixture
def flow_off(stack, reset_servers):
    """The picker reloaded with flow control off for one test, and restored after it."""
    def reload(cfg):
        reloads = stack.picker.output().count("config reloaded")
        stack.write_config(cfg)
        wait_until(lambda: stack.picker.output().count("config reloaded") > reloads, 20, "config reload")

    reload(base_config(reset_servers, flowControl=False))
    yield
    reload(base_config(reset_servers))


def test_shedding_under_saturation(stack, reset_servers, flow_off):
    # sheds on arrival: without flow control (with it, requests wait: test_picker_flow_control.py)
    s = reset_servers
    for k in ("a1", "a2", "b"):
        s.admin(k, waiting=12, kv=0.95)
    stack.wait_scraped(s, a1=(12, 0.95, 0), a2=(12, 0.95, 0), b=(12, 0.95, 0))
    shed_before = stack.metric("infershift_picker_shed_total")
    r = complete(stack.port, "batch")
    assert r.status == 429
    err = r.json()["error"]
    assert err["type"] == "rate_limit_exceeded" and set(err) == {"message", "type", "param", "code"}
    assert complete(stack.port, "sql").status == 200  # Critical is still routed
    assert complete(stack.port, "llama").status == 200  # Standard too
    assert stack.metric("infershift_picker_shed_total") == shed_before + 1


def test_busy_pool_sheds_sheddable_early_and_routes_critical_to_short_queues(stack, reset_servers, flow_off):
    # queues everywhere, none past the saturation filter's 5: admission sheds sheddable traffic already
    s = reset_servers
    s.admin("a1", waiting=2, running=8, kv=0.4)
    s.admin("a2", waiting=4, running=8, kv=0.4)
    s.admin("b", waiting=1, running=8, kv=0.4)
    stack.wait_scraped(s, a1=(2, 0.4, 0), a2=(4, 0.4, 0), b=(1, 0.4, 0))
    shed_before = stack.metric("infershift_picker_shed_total")
    r = complete(stack.port, "batch")
    assert r.status == 429, r.body
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert (err["type"], err["code"]) == ("rate_limit_exceeded", "pool_saturated") and "sheddable" in err["message"]
    assert "x-served-port" not in r.headers  # answered by the gateway, never reached a server
    assert stack.metric("infershift_picker_shed_total") == shed_before + 1
    # Critical and Standard are routed; admission leaves their candidates alone below saturation and
    # the scorers keep them off the longest queue (a2: queue score 0, at most 1 from LoRA, vs b's 2)
    ports = Counter(served_port(complete(stack.port, m, f"c{i}")) for i in range(8) for m in ("sql", "llama"))
    assert set(ports) <= {s.ports["b"], s.ports["a1"]} and sum(ports.values()) == 16, ports
    # a queue drains: sheddable traffic is admitted again, to that endpoint
    s.admin("a2", waiting=0, running=7, kv=0.4)
    stack.wait_scraped(s, a2=(0, 0.4, 0))
    r = complete(stack.port, "batch")
    assert r.status == 200, r.body
    assert served_port(r) == s.ports["a2"]


def test_stale_endpoint_stays_routable_as_saturated(stack, reset_servers):
    """Failed scrapes do not remove an endpoint (upstream's EPP scores endpoints with stale metrics as
    saturated and routes to them when nothing better is left): a metrics outage is no 503."""
    s = reset_servers
    s.admin("q", metrics_status=500)
    errors = stack.metric("infershift_picker_endpoint_scrape_errors_total", endpoint=s.addr("q"))
    wait_until(lambda: stack.metric("infershift_picker_endpoint_scrape_errors_total", endpoint=s.addr("q"))
               > errors + 25, 20, "q's scrapes to fail past staleAfter")  # 25 x 20 ms > 400 ms
    r = complete(stack.port, "qwq-32b")
    assert r.status == 200 and served_port(r) == s.ports["q"]  # its model is still served, by it
    assert stack.metric("infershift_picker_endpoint_scrape_failures_total", endpoint=s.addr("q"),
                        reason="unreachable") > 0
    # a stale endpoint reads as saturated: while fresh ones have room it gets nothing
    s.admin("b", metrics_status=500)
    errors = stack.metric("infershift_picker_endpoint_scrape_errors_total", endpoint=s.addr("b"))
    wait_until(lambda: stack.metric("infershift_picker_endpoint_scrape_errors_total", endpoint=s.addr("b"))
               > errors + 25, 20, "b to go stale")
    ports = Counter(served_port(complete(stack.port, "llama", f"st{i}")) for i in range(12))
    assert s.ports["b"] not in ports and sum(ports.values()) == 12, ports


def test_bad_input(stack, reset_servers):
    p = stack.port
    cases = [
        (request(p, "POST", "/v1/completions", b"{not json", {"content-type": "application/json"}), 400, "invalid_json"),
        (request(p, "POST", "/v1/completions", {"prompt": "x"}), 400, "missing_model"),
        (request(p, "POST", "/v1/chat/completions", {"model": "", "messages": []}), 400, "invalid_model"),
        (request(p, "POST", "/v1/completions", {"model": "gpt-9", "prompt": "x"}), 404, "model_not_found"),
        (request(p, "POST", "/v1/completions", {"model": "llama", "prompt": "x" * 300_000}), 413, "request_too_large"),
        (request(p, "POST", "/v1/completions", b"model=llama", {"content-type": "text/plain"}), 400,
         "unsupported_content_type"),
        (request(p, "POST", "/v1/completions", b"[1, 2]", {"content-type": "application/json"}), 400, "invalid_json"),
    ]
    for r, status, code in cases:
        assert r.status == status, (status, r.body)
        err = r.json()["error"]
        assert err["code"] == code and err["message"] and r.headers["content-type"] == "application/json"
    assert cases[1][0].json()["error"]["param"] == "model"
    assert complete(p, "llama").status == 200  # and the picker keeps serving


def test_requests_without_body_and_request_id(stack, reset_servers):
    r = request(stack.port, "GET", "/hello")
    assert r.status == 200 and r.headers["x-inference-pod"].startswith("pod-")
    complete(stack.port, "llama", headers={"x-test-subset": reset_servers.addr("a1")})
    complete(stack.port, "llama", headers={"x-test-subset": reset_servers.addr("a1"), "x-request-id": "given-1"})
    seen = reset_servers.seen("a1")
    assert seen[-1]["headers"]["x-request-id"] == "given-1"
    generated = seen[-2]["headers"]["x-request-id"]
    assert len(generated) == 36 and generated != "given-1"  # Envoy here does not generate one; the picker did
    # the rewritten body arrives whole; in the one-round-trip (STREAMED) mode Envoy forwards it chunked,
    # in the classic (BUFFERED) mode with a content-length that must match the rewritten body
    for port, chunked, n in ((stack.port, True, 517), (stack.envoy(classic=True, generate_request_id=False), False, 523)):
        prompt = "length-marker " * n  # a body length no other test sends
        want = len(json.dumps({"model": "sql-v1", "prompt": prompt}))
        complete(port, "sql", prompt, {"x-session-id": "u1", "x-gateway-model-name-rewrite": "sql-v1"})
        got = [x for k in ("a1", "a2", "b") for x in reset_servers.seen(k) if x["model"] == "sql-v1" and x["len"] == want]
        assert len(got) == 1
        got = got[0]
        if chunked:
            assert got["headers"].get("content-length", str(want)) == str(want)
        else:
            assert int(got["headers"]["content-length"]) == want


def test_response_metrics_per_target(stack, reset_servers):
    before = stack.metric("infershift_picker_target_ttfb_seconds_count", target_model="sql-v2")
    for i in range(30):
        complete(stack.port, "sql", f"m{i}", {"x-gateway-model-name-rewrite": "sql-v2"})
    wait_until(lambda: stack.metric("infershift_picker_target_latency_seconds_count", target_model="sql-v2")
               >= 30, 20, "response metrics")
    assert stack.metric("infershift_picker_target_ttfb_seconds_count", target_model="sql-v2") - before == 30
    assert stack.metric("infershift_picker_target_responses_total", target_model="sql-v2", status="200") >= 30
    assert stack.metric("infershift_picker_target_latency_seconds_count", target_model="sql-v2") >= 30
    assert stack.metric("infershift_picker_decision_seconds_count") > 0
    assert stack.metric("infershift_picker_requests_total", model="sql", target_model="sql-v2", outcome="routed") >= 30


def test_live_config_reload_without_dropping_requests(stack, reset_servers):
    statuses, stop = [], threading.Event()

    def load():
        while not stop.is_set():
            statuses.append(complete(stack.port, "sql", "bg").status)

    threads = [threading.Thread(target=load) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        cfg = base_config(reset_servers)
        cfg["models"]["sql"]["targets"] = [{"model": "sql-v1", "weight": 0}, {"model": "sql-v2", "weight": 1}]
        stack.write_config(cfg)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if all(complete(stack.port, "sql").headers["x-infershift-target-model"] == "sql-v2" for _ in range(10)):
                break
            time.sleep(0.2)
        got = Counter(complete(stack.port, "sql").headers["x-infershift-target-model"] for _ in range(20))
        assert got == {"sql-v2": 20}
        # a broken config is rejected and the running one stays
        with open(stack.config_path, "w") as f:
            f.write("pool: {name: x}\nendpoints: 12\n")
        wait_until(lambda: "config reload rejected" in stack.picker.output(), 20, "reload rejected")
        assert "endpoints: expected a list" in stack.picker.output()
        assert complete(stack.port, "sql").headers["x-infershift-target-model"] == "sql-v2"
    finally:
        stop.set()
        for t in threads:
            t.join()
        reloads = stack.picker.output().count("config reloaded")
        stack.write_config(base_config(reset_servers))
        wait_until(lambda: stack.picker.output().count("config reloaded") > reloads, 20, "config restored")
    assert len(statuses) > 10 and set(statuses) == {200}, Counter(statuses)


def test_full_duplex_streamed_mode(stack, reset_servers):
    port = stack.envoy(full_duplex=True)
    r = complete(port, "sql", "duplex " * 2000, {"x-gateway-model-name-rewrite": "sql-v1"})
    assert r.status == 200, r.body
    assert r.headers["x-infershift-target-model"] == "sql-v1" and r.json()["model"] == "sql"
    want = len(json.dumps({"model": "sql-v1", "prompt": "duplex " * 2000}))
    got = [x for k in ("a1", "a2", "b") for x in reset_servers.seen(k) if x["model"] == "sql-v1" and x["len"] == want]
    assert len(got) == 1  # the server got the whole rewritten body
    # Envoy streams the rewritten body chunked in this mode; if it keeps a length it must be right
    assert got[0]["headers"].get("content-length", str(want)) == str(want)
    assert complete(port, "nope").status == 404


def test_fail_open_and_fail_close(stack, reset_servers):
    dead = free_port()  # nothing listens: the picker is "down"
    open_port = stack.envoy(picker_port=dead, fail_open=True, message_timeout="1s")
    close_port = stack.envoy(picker_port=dead, fail_open=False, message_timeout="1s")
    r = complete(open_port, "llama")
    assert r.status == 200 and "x-infershift-target-model" not in r.headers  # served without the picker
    r = complete(close_port, "llama")
    assert r.status >= 500


def test_health_services(stack):
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(f"127.0.0.1:{stack.health_port}") as ch:
        stub = health_pb2_grpc.HealthStub(ch)
        for svc in ("liveness", "readiness", "envoy.service.ext_proc.v3.ExternalProcessor"):
            assert stub.Check(health_pb2.HealthCheckRequest(service=svc), timeout=5).status == \
                health_pb2.HealthCheckResponse.SERVING


def test_full_duplex_streaming_response(stack, reset_servers):
    port = stack.envoy(full_duplex=True)
    r = complete(port, "sql", "x", {"x-gateway-model-name-rewrite": "sql-v2"}, stream=True)
    events = [json.loads(line[6:]) for line in r.body.decode().splitlines() if line.startswith("data: {")]
    assert r.status == 200 and len(events) == 3 and all(e["model"] == "sql" for e in events)
    r = request(port, "GET", "/hello")  # no rewrite: chunks pass through unchanged
    assert r.status == 200 and r.body.decode().startswith("pod-")


def test_fallback_list_with_override_host_policy(stack, reset_servers, workdir):
    """--fallbacks N sends `primary,fallback,...` in header and metadata; with Envoy's override_host
    policy the request lands on the primary (what an ORIGINAL_DST cluster could not parse)."""
    import yaml

    from bench.pickerbench.procs import http_get, start_picker

    s = reset_servers
    path = f"{workdir}/fallbacks.yaml"
    with open(path, "w") as f:
        yaml.safe_dump(base_config(s), f)
    gp, hp, mp = free_port(), free_port(), free_port()
    picker = start_picker(path, workdir, grpc_port=gp, health_port=hp, metrics_port=mp,
                          extra=["--fallbacks", "2", "--log-level", "debug"])
    try:
        port = stack.envoy(picker_port=gp, override_host=True, pool_keys=["a1", "a2", "b"])
        for i in range(10):
            r = complete(port, "llama", f"fb{i}", {"x-test-subset": f"{s.addr('a2')},{s.addr('b')}"})
            assert r.status == 200 and served_port(r) in (s.ports["a2"], s.ports["b"])
        assert complete(port, "sql").json()["model"] == "sql"
        wait_until(lambda: http_get(f"http://127.0.0.1:{mp}/metrics")[1].count('picked="true"') > 0, 20, "served")
        text = http_get(f"http://127.0.0.1:{mp}/metrics")[1]
        assert 'picked="true"' in text and 'picked="false"' not in text  # always the primary
        routed = [json.loads(line) for line in picker.output().splitlines() if '"msg": "routed"' in line]
        assert routed and all(len(x["endpoint"].split(",")) == 2 for x in routed[:10])  # primary + 1 of subset
    finally:
        picker.stop()


def test_unknown_model_names_do_not_become_metric_labels(stack, reset_servers):
    for i in range(3):
        assert complete(stack.port, f"made-up-{i}").status == 404
    text = stack.metrics()
    assert "made-up-" not in text and 'model="other"' in text
