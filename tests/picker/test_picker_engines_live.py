"""Engines, unknown pages and availability with real processes: model servers serving the golden
pages (testdata/metrics), the picker scraping them as the pod label `llm-d.ai/engine-type` (or the
endpoint's `engine`) says, and a real Envoy routing through it.

- SGLang, trtllm-serve (its page at /prometheus/metrics, JSON at /metrics), Triton + TensorRT-LLM:
  read as their definitions mean (totals, not sums of breakdowns);
- a page with none of the metrics: "unknown engine" (warning, metric), routed to only as a
  saturated server, never as an idle one; readiness false if it is all there is;
- NaN rejected; a /v1/models that hangs never makes the endpoint stale;
- on-demand LoRA: an adapter the server resolves itself is routed to its base model's servers
  instead of 404; one the picker loads (POST /v1/load_lora_adapter, the project's vLLM simulator)
  is answered 503 `adapter_loading` until the server has it, then served.
"""
from __future__ import annotations

import os
import re
import sys
import time
from collections import Counter
from pathlib import Path

import grpc
import pytest
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bench.pickerbench.procs import REPO, Proc, free_port, start_envoy, start_modelservers, start_picker, wait_until
from infershift.picker.envoy_config import gateway_config
from pickertest import Servers, Stack, complete

PAGES = Path(__file__).parent / "testdata" / "metrics"
MAIN_PY = REPO / ".venv" / "bin" / "python"


def page(name: str) -> str:
    return (PAGES / name).read_text()


SPECS = {
    "sg": {"name": "pod-sg", "models": ["qwen"], "page": page("sglang_dp_attention.prom")},
    "trt": {"name": "pod-trt", "models": ["nemo"], "page": {"/metrics": page("trtllm_serve_metrics.json"),
                                                           "/prometheus/metrics/": page("trtllm_serve.prom")}},
    "tri": {"name": "pod-tri", "models": ["nemo"], "page": page("triton_trtllm.prom")},
    "v": {"name": "pod-v", "models": ["llama"]},  # an idle vLLM
    "unk": {"name": "pod-unk", "models": ["llama"], "page": page("unknown.prom")},  # same model, unreadable page
    "nan": {"name": "pod-nan", "models": ["other"], "page": 'vllm:num_requests_waiting{model_name="other"} NaN\n'},
    "slow": {"name": "pod-slow", "models": ["slowm"]},  # its /v1/models will hang
}
LABELS = {"sg": "sglang", "trt": "trtllm-serve", "tri": "triton-tensorrt-llm"}


@pytest.fixture(scope="module")
def engines(workdir):
    ports = {k: free_port() for k in SPECS}
    servers = Servers(start_modelservers([{"port": ports[k], **v} for k, v in SPECS.items()], workdir), ports)
    cfg_path = os.path.join(workdir, "engines.yaml")
    st = Stack(workdir, servers, cfg_path, grpc_port=free_port(), metrics_port=free_port(), health_port=free_port())
    eps = []
    for k in SPECS:
        e = {"address": servers.addr(k), "name": SPECS[k]["name"]}
        if k in LABELS:
            e["labels"] = {"llm-d.ai/engine-type": LABELS[k]}
        eps.append(e)
    eps[-1]["models"] = ["slowm"]  # known statically: the hanging /v1/models is not needed to route
    st.write_config({"pool": {"name": "engines"}, "endpoints": eps,
                     "models": {"batch": {"criticality": "Sheddable", "targets": [{"model": "llama"}]}},
                     "lora": {"onDemand": [{"adapter": "llama-sql", "base": "llama"}]},
                     "metrics": {"pollInterval": "20ms", "staleAfter": "400ms", "modelsInterval": "300ms"}})
    servers.admin("slow", models_delay=30.0)
    st.picker = start_picker(cfg_path, workdir, grpc_port=st.grpc_port, health_port=st.health_port,
                             metrics_port=st.metrics_port)
    try:
        st.port = st.envoy(generate_request_id=False)
        wait_until(lambda: st.metric("infershift_picker_endpoint_queue_depth", endpoint=servers.addr("tri")) == 5,
                   20, "engine pages scraped")
        time.sleep(0.7)  # /v1/models of the others polled
        yield st, servers
    finally:
        for e in st.envoys:
            e.stop()
        st.picker.stop()
        servers.proc.stop()


def test_each_engine_read_as_its_definitions_mean(engines):
    st, s = engines
    q = {k: st.metric("infershift_picker_endpoint_queue_depth", endpoint=s.addr(k)) for k in ("sg", "trt", "tri", "v")}
    kv = {k: st.metric("infershift_picker_endpoint_kv_cache_usage", endpoint=s.addr(k)) for k in ("sg", "trt", "tri")}
    assert q == {"sg": 11, "trt": 3, "tri": 5, "v": 0}  # SGLang: DP ranks summed, TP ranks and priorities once
    assert kv == {"sg": 0.8, "trt": 0.375, "tri": 0.46875}
    assert st.metric("infershift_picker_endpoint_running_requests", endpoint=s.addr("sg")) == 32
    for k in ("sg", "trt", "tri", "v"):
        assert st.metric("infershift_picker_endpoint_unknown_engine", endpoint=s.addr(k)) == 0


def test_unknown_page_is_an_unknown_engine_never_idle(engines):
    st, s = engines
    addr = s.addr("unk")
    assert st.metric("infershift_picker_endpoint_unknown_engine", endpoint=addr) == 1
    assert st.metric("infershift_picker_endpoint_scrape_failures_total", endpoint=addr, reason="unknown_engine") > 0
    assert "unknown engine" in st.picker.output() and addr in st.picker.output()
    # the idle vLLM and the unreadable one serve the same model: the unreadable one is not taken for idle
    ports = Counter(int(complete(st.port, "llama", f"u{i}").headers["x-served-port"]) for i in range(12))
    assert ports == {s.ports["v"]: 12}, ports
    assert st.metric("inference_pool_ready_pods") == 5  # unknown and NaN are not ready


def test_nan_is_rejected(engines):
    st, s = engines
    assert st.metric("infershift_picker_endpoint_scrape_failures_total", endpoint=s.addr("nan"), reason="bad_value") > 0
    assert st.metric("infershift_picker_endpoint_queue_depth", endpoint=s.addr("nan")) == 0  # never set from NaN
    # still routable, as a saturated server: its model is served
    assert complete(st.port, "other").status == 200


def test_a_hanging_v1_models_never_makes_the_endpoint_stale(engines):
    st, s = engines
    addr = s.addr("slow")
    t0 = st.metric("infershift_picker_endpoint_last_scrape_timestamp_seconds", endpoint=addr)
    time.sleep(0.5)  # > staleAfter, and /v1/models has not answered for far longer
    assert st.metric("infershift_picker_endpoint_last_scrape_timestamp_seconds", endpoint=addr) > t0
    assert st.metric("infershift_picker_endpoint_scrape_failures_total", endpoint=addr) == 0
    r = complete(st.port, "slowm")
    assert r.status == 200 and int(r.headers["x-served-port"]) == s.ports["slow"]


def test_on_demand_adapter_the_server_resolves_goes_to_its_base_models_servers(engines):
    st, s = engines
    r = complete(st.port, "llama-sql")  # in no /v1/models listing: without lora.onDemand this is a 404
    assert r.status == 200, r.body
    assert int(r.headers["x-served-port"]) == s.ports["v"]  # a llama server (the fresh one)
    assert complete(st.port, "nosuch-adapter").status == 404


def _status(health_port: int) -> int:
    with grpc.insecure_channel(f"127.0.0.1:{health_port}") as ch:
        return health_pb2_grpc.HealthStub(ch).Check(
            health_pb2.HealthCheckRequest(service="readiness"), timeout=2).status


def test_readiness_false_when_the_only_endpoint_is_an_unknown_engine(engines, workdir):
    _, s = engines
    path = os.path.join(workdir, "unknown-only.yaml")
    with open(path, "w") as f:
        yaml.safe_dump({"pool": {"name": "u"}, "endpoints": [{"address": s.addr("unk")}],
                        "metrics": {"pollInterval": "20ms", "staleAfter": "400ms"}}, f)
    hp = free_port()
    p = Proc([sys.executable, "-m", "infershift.picker", "--config", path, "--grpc-port", str(free_port()),
              "--health-port", str(hp), "--metrics-port", str(free_port())],
             os.path.join(workdir, "picker-unknown-only.log"), env=dict(os.environ, PYTHONPATH=str(REPO)))
    try:
        wait_until(lambda: "picker ready" in p.output(), 30, "picker started", p)
        time.sleep(0.5)
        assert _status(hp) == health_pb2.HealthCheckResponse.NOT_SERVING
        assert "unknown engine" in p.output()
    finally:
        p.stop()


def test_on_demand_adapter_the_picker_loads_with_the_simulator(workdir):
    if not MAIN_PY.exists():
        pytest.skip("the main virtualenv (.venv, for the vLLM simulator) is not available")
    sim = Proc([str(MAIN_PY), "-m", "infershift.sim", "--profile", "h100-8b", "--model", "llama",
                "--served-model-name", "llama", "--enable-lora", "--max-loras", "2", "--port", "0", "--servers", "2",
                "--time-scale", "20", "--seed", "1"], os.path.join(workdir, "sim-lora.log"))
    procs = [sim]
    try:
        wait_until(lambda: sim.output().count("listening on") >= 2, 60, "sim servers", sim)
        addrs = re.findall(r"listening on http://(127\.0\.0\.1:\d+)", sim.output())
        path = os.path.join(workdir, "lora-picker.yaml")
        with open(path, "w") as f:
            yaml.safe_dump({"pool": {"name": "lora"}, "endpoints": [{"address": a} for a in addrs],
                            "lora": {"onDemand": [{"adapter": "tweet", "base": "llama", "path": "/adapters/tweet"}]},
                            "metrics": {"pollInterval": "50ms", "modelsInterval": "500ms"}}, f)
        gp, hp, mp = free_port(), free_port(), free_port()
        procs.append(start_picker(path, workdir, grpc_port=gp, health_port=hp, metrics_port=mp))
        lp, ap = free_port(), free_port()
        procs.append(start_envoy(gateway_config(listen_port=lp, admin_port=ap, picker_port=gp, pool=addrs),
                                 workdir, ap))
        time.sleep(0.8)
        first = complete(lp, "tweet", "hi", max_tokens=2)
        assert first.status == 503 and first.json()["error"]["code"] == "adapter_loading", first.body
        wait_until(lambda: complete(lp, "tweet", "hi", max_tokens=2).status == 200, 10, "the adapter loaded")
        served = {complete(lp, "tweet", f"t{i}", max_tokens=2).headers.get("x-inference-pod") for i in range(6)}
        assert len(served) == 1  # loaded once, on one server: later requests go there
        assert "LoRA adapter loaded" in procs[1].output()
    finally:
        for p in reversed(procs):
            p.stop()
