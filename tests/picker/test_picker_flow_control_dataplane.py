"""Flow control through real Envoy: a request that finds the pool full waits in the picker past
Envoy's message timeout (the picker extends it), higher priority goes first when a slot frees,
a full band and an expired wait are answered 429 in the API's error shape, and a client that gives
up while waiting leaves no slot taken. One model server with one slot (concurrency-detector,
maxConcurrency 1) and a fixed answer delay make the order observable."""
from __future__ import annotations

import os
import threading
import time

import pytest

from bench.pickerbench.procs import free_port, start_picker, wait_until
from pickertest import Stack, base_config, complete, request

MESSAGE_TIMEOUT = "0.3s"  # every wait below is longer than this


def flow_config(servers, ttl: str = "3s") -> dict:
    return base_config(
        servers, endpoints=[{"address": servers.addr("b"), "name": "pod-b-b"}],
        scheduling={
            "featureGates": ["flowControl"],
            "plugins": [{"type": "concurrency-detector", "parameters": {"maxConcurrency": 1}},
                        {"type": "queue-scorer"}, {"type": "max-score-picker"}],
            "flowControl": {"defaultRequestTTL": ttl, "saturationDetector": {"pluginRef": "concurrency-detector"},
                            "defaultNegativePriorityBand": {"maxRequests": 1}}})


@pytest.fixture(scope="module")
def fstack(workdir, servers):
    cfg_path = os.path.join(workdir, "picker-flow.yaml")
    st = Stack(workdir, servers, cfg_path, grpc_port=free_port(), metrics_port=free_port(), health_port=free_port())
    st.write_config(flow_config(servers))
    st.picker = start_picker(cfg_path, workdir, grpc_port=st.grpc_port, health_port=st.health_port,
                             metrics_port=st.metrics_port)
    try:
        st.port = st.envoy(pool_keys=["b"], message_timeout=MESSAGE_TIMEOUT, fail_open=False)
        wait_until(lambda: st.metric("infershift_picker_endpoint_queue_depth", endpoint=servers.addr("b")) == 0,
                   20, "endpoint scraped")
        time.sleep(0.6)  # /v1/models learned
        yield st
    finally:
        for e in st.envoys:
            e.stop()
        st.picker.stop()


@pytest.fixture
def slow_b(servers, fstack):
    # the server's metrics count what it is answering, as a real server's do
    servers.admin("b", delay=0.0, live_running=True)

    def set_delay(d: float):
        servers.admin("b", delay=d)

    yield set_delay
    servers.admin("b", delay=0.0, live_running=False)
    wait_until(lambda: fstack.metric("llm_d_epp_flow_control_queue_size") == 0, 20, "queues empty")


def in_thread(results: dict, key: str, port: int, model: str, prompt: str, headers=None,
              timeout: float = 30) -> threading.Thread:
    def go():
        try:
            results[key] = request(port, "POST", "/v1/completions", {"model": model, "prompt": prompt}, headers,
                                   timeout=timeout)
        except Exception as e:  # noqa: BLE001 (a client that gave up)
            results[key] = e
    t = threading.Thread(target=go)
    t.start()
    return t


def seen_ids(servers) -> list[str]:
    return [s["headers"].get("x-request-id") for s in servers.seen("b") if s["path"] == "/v1/completions"]


def outcome(st: Stack, name: str) -> float:
    return st.metric("llm_d_epp_flow_control_requests_total", outcome=name)


def test_critical_waits_past_the_message_timeout_and_goes_before_sheddable(fstack, servers, slow_b):
    slow_b(1.0)
    before = len(seen_ids(servers))
    dispatched = outcome(fstack, "Dispatched")
    res: dict = {}
    threads = [in_thread(res, "first", fstack.port, "llama", "first", {"x-request-id": "first"})]
    time.sleep(0.3)
    threads.append(in_thread(res, "batch", fstack.port, "batch", "batch", {"x-request-id": "batch"}))
    time.sleep(0.2)
    threads.append(in_thread(res, "sql", fstack.port, "sql", "sql", {"x-request-id": "sql"}))
    for t in threads:
        t.join(20)
    assert {k: r.status for k, r in res.items()} == {"first": 200, "batch": 200, "sql": 200}, res
    # arrival at the server: the Critical one (sent last) before the Sheddable one
    assert seen_ids(servers)[before:] == ["first", "sql", "batch"]
    assert outcome(fstack, "Dispatched") == dispatched + 2


def test_a_full_band_is_429_at_once_and_an_expired_wait_429_after_the_ttl(fstack, servers, slow_b):
    slow_b(4.0)
    res: dict = {}
    busy = in_thread(res, "busy", fstack.port, "llama", "busy")
    time.sleep(0.3)
    waiting = in_thread(res, "waiting", fstack.port, "batch", "waits")
    time.sleep(0.3)
    t0 = time.monotonic()
    full = complete(fstack.port, "batch", "no room")  # the Sheddable band holds 1
    assert time.monotonic() - t0 < 1.0
    assert full.status == 429 and full.headers["retry-after"] == "1"
    err = full.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["code"] == "queue_full"
    waiting.join(20)
    r = res["waiting"]
    assert r.status == 429 and r.json()["error"]["code"] == "queue_timeout", r.body  # the 3 s TTL, not Envoy's 0.3 s
    busy.join(20)
    assert res["busy"].status == 200
    assert outcome(fstack, "EvictedTTL") >= 1


def test_a_client_that_gives_up_while_waiting_frees_its_place(fstack, servers, slow_b):
    slow_b(1.5)
    cancelled = outcome(fstack, "EvictedContextCancelled")
    res: dict = {}
    busy = in_thread(res, "busy", fstack.port, "llama", "busy")
    time.sleep(0.3)
    gone = in_thread(res, "gone", fstack.port, "sql", "gives up", timeout=0.4)
    gone.join(5)
    assert isinstance(res["gone"], Exception)  # the client timed out while its request waited
    wait_until(lambda: outcome(fstack, "EvictedContextCancelled") == cancelled + 1, 10, "cancelled wait counted")
    after = in_thread(res, "after", fstack.port, "sql", "after")
    busy.join(20)
    after.join(20)
    assert res["busy"].status == 200 and res["after"].status == 200
    assert fstack.metric("llm_d_epp_flow_control_queue_size") == 0
