"""The endpoint picker's upstream metric names (GIE's `inference_objective_*` / `inference_pool_*` /
`inference_extension_*` and llm-d's `llm_d_epp_*`): exported with upstream's types, HELP, label
names and buckets (testdata/upstream_epp_metrics.json, transcribed from llm-d-router's source,
provenance in testdata/README.md), and filled from every request and response through real Envoy.

When a copy of llm-d-router is at hand (env INFERSHIFT_LLMD_ROUTER_REPO, a git directory, or the
search tool's mirror under /work/.mirror), the fixture is also checked against upstream's own
expected-output files (pkg/epp/metrics/testdata) at the fixture's commit. With a `prometheus`
binary on PATH, a real Prometheus scrapes the picker and the upstream names are queried."""
from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from bench.pickerbench.procs import Proc, free_port, wait_until
from infershift.picker.config import parse_config
from infershift.picker.pool import Pool
from infershift.picker.telemetry import UPSTREAM, RequestLabels, Telemetry
from pickertest import complete, request

FIXTURE = json.loads((Path(__file__).parent / "testdata" / "upstream_epp_metrics.json").read_text())
WANT = FIXTURE["metrics"]
MIRRORS = [os.environ.get("INFERSHIFT_LLMD_ROUTER_REPO", ""), "/work/.mirror/llm-d+llm-d-router/repo"]


def families(text: str) -> dict:
    return {f.name: f for f in text_string_to_metric_families(text)}


def exposed_name(name: str, kind: str) -> str:
    return name[:-6] if kind == "counter" and name.endswith("_total") else name  # the parser's family name


def check_family(fam, name: str, want: dict) -> None:
    assert fam.type == want["type"], name
    assert fam.documentation == want["help"], name
    samples = [s for s in fam.samples if not s.name.endswith(("_created",))]
    assert samples, f"{name}: no sample to check the labels of"
    for s in samples:
        got = [k for k in s.labels if k != "le"]
        assert sorted(got) == sorted(want["labels"]), (name, s)
    if want["type"] == "histogram":
        les = sorted({float(s.labels["le"]) for s in samples if s.name.endswith("_bucket")})
        assert les == [*want["buckets"], float("inf")], name


def filled() -> Telemetry:
    """A Telemetry with one request and one response recorded, and a pool to describe."""
    cfg = parse_config({"pool": {"name": "p1"}, "endpoints": [{"address": "10.0.0.1:8000", "name": "pod-1"}],
                        "models": {"m": {"criticality": "Critical", "targets": [{"model": "t"}]}}})
    pool = Pool(cfg, clock=lambda: 100.0, rng=random.Random(1))
    for e in pool.endpoints.values():
        e.last_ok = 100.0
    tm = Telemetry(build=("abc123", "0.1.0"))
    tm.attach_pool(pool)
    lab = tm.labels_for(cfg, "m", "t", {"x-llm-d-inference-fairness-id": "team-a"})
    assert lab == RequestLabels("m", "t", "1", "team-a")  # Critical: priority 1
    tm.decided("p1", 0.0002)
    tm.request_routed(lab, 300, "r1")
    tm.request_error(cfg, "m", 429, {})
    tm.response_done("p1", lab, 200, 0.01, 0.02, 0.5, 120, (5, 3, 2), True, "r1")
    tm.flow_queued(lab, 1)  # one request that waited in flow control, then was dispatched
    tm.flow_queued(lab, -1)
    tm.flow_outcome(lab, "Dispatched", 0.2)
    return tm


def test_exported_names_types_labels_and_buckets_are_upstreams():
    assert {s.name for s in UPSTREAM} == set(WANT)
    got = families(generate_latest(filled().registry).decode())
    for name, want in WANT.items():
        fam = got.get(exposed_name(name, want["type"]))
        assert fam is not None, f"{name} is not exported"
        check_family(fam, name, want)


def test_values_from_one_request_and_response():
    text = generate_latest(filled().registry).decode()
    got = families(text)

    def value(fam: str, sample: str, **labels) -> float:
        return sum(s.value for s in got[fam].samples if s.name == sample and labels.items() <= s.labels.items())

    assert value("inference_objective_request", "inference_objective_request_total",
                 model_name="m", target_model_name="t", priority="1") == 1
    assert value("llm_d_epp_request", "llm_d_epp_request_total", fairness_id="team-a", priority="1") == 1
    assert value("inference_objective_request_error", "inference_objective_request_error_total",
                 error_code="ResourceExhausted") == 1
    assert value("inference_objective_running_requests", "inference_objective_running_requests", model_name="m") == 0
    assert value("llm_d_epp_request_input_tokens", "llm_d_epp_request_input_tokens_sum") == 5
    assert value("llm_d_epp_request_output_tokens", "llm_d_epp_request_output_tokens_sum") == 3
    assert value("llm_d_epp_request_cached_tokens", "llm_d_epp_request_cached_tokens_sum") == 2
    assert abs(value("llm_d_epp_request_ntpot_seconds", "llm_d_epp_request_ntpot_seconds_sum") - 0.5 / 3) < 1e-9
    assert value("llm_d_epp_request_ttft_seconds", "llm_d_epp_request_ttft_seconds_sum", streaming="true") == 0.02
    assert value("inference_pool_ready_pods", "inference_pool_ready_pods", name="p1") == 1
    assert value("inference_pool_per_pod_queue_size", "inference_pool_per_pod_queue_size",
                 name="p1", model_server_pod="pod-1") == 0
    assert value("inference_extension_info", "inference_extension_info", commit="abc123", build_ref="0.1.0") == 1
    assert "_created" not in text


def _mirror() -> str | None:
    commit = FIXTURE["source"]["commit"]
    for d in MIRRORS:
        if d and os.path.isdir(d) and subprocess.run(["git", "-C", d, "cat-file", "-e", commit],
                                                     capture_output=True).returncode == 0:
            return d
    return None


def test_fixture_matches_upstreams_own_expected_outputs():
    repo = _mirror()
    if repo is None:
        pytest.skip("no copy of llm-d/llm-d-router at the fixture's commit (set INFERSHIFT_LLMD_ROUTER_REPO)")
    commit = FIXTURE["source"]["commit"]
    files = subprocess.run(["git", "-C", repo, "ls-tree", "--name-only", f"{commit}:pkg/epp/metrics/testdata"],
                           capture_output=True, text=True, check=True).stdout.split()
    checked = set()
    for f in files:
        text = subprocess.run(["git", "-C", repo, "show", f"{commit}:pkg/epp/metrics/testdata/{f}"],
                              capture_output=True, text=True, check=True).stdout
        for fam in text_string_to_metric_families(text):
            for name, want in WANT.items():
                if exposed_name(name, want["type"]) == fam.name:
                    check_family(fam, name, want)
                    checked.add(name)
    assert len(checked) >= 15, sorted(checked)  # upstream has expected outputs for most of them


# --- through Envoy: every request and every response ---------------------------------------------

def test_every_response_counts_through_envoy(stack, reset_servers):
    def m(metric, /, **labels):  # (a label may be called "name")
        total = 0.0
        for line in stack.metrics().splitlines():
            if line.startswith(metric + "{"):
                lab, value = line[len(metric) + 1:].rsplit("} ", 1)
                if all(f'{k}="{v}"' in lab for k, v in labels.items()):
                    total += float(value)
        return total

    before = m("inference_objective_request_total", model_name="llama", target_model_name="llama")
    n = 20
    for i in range(n):
        assert complete(stack.port, "llama", f"u{i}", headers={"x-llm-d-inference-fairness-id": "t1"}).status == 200
    r = request(stack.port, "POST", "/v1/completions", {"model": "llama", "prompt": "s", "stream": True,
                                                        "stream_options": {"include_usage": True}})
    assert r.status == 200
    wait_until(lambda: m("llm_d_epp_request_duration_seconds_count", fairness_id="t1") >= n, 10, "responses counted")
    assert m("inference_objective_request_total", model_name="llama", target_model_name="llama") == before + n + 1
    assert m("llm_d_epp_request_total", fairness_id="t1", priority="0") >= n
    assert m("llm_d_epp_request_duration_seconds_count", fairness_id="t1") == n  # every response, not a sample
    assert m("llm_d_epp_request_output_tokens_count", fairness_id="t1") == n  # usage of each JSON body
    wait_until(lambda: m("llm_d_epp_request_ttft_seconds_count", streaming="true") >= 1, 10, "the stream counted")
    assert m("llm_d_epp_request_cached_tokens_sum", fairness_id="default-flow") >= 2  # the SSE usage chunk
    assert m("inference_objective_running_requests", model_name="llama") == 0  # every response came back
    assert m("inference_pool_ready_pods", name="test-pool") == 6
    assert m("inference_pool_per_pod_queue_size", name="test-pool") == 0
    bad = complete(stack.port, "gpt-9")
    assert bad.status == 404
    assert m("inference_objective_request_error_total", error_code="NotFound") >= 1


def test_real_prometheus_scrapes_the_upstream_names(stack, reset_servers, tmp_path):
    prom = shutil.which("prometheus")
    if prom is None:
        pytest.skip("Prometheus is not installed here (Debian's `prometheus` package is absent)")
    port = free_port()
    (tmp_path / "prometheus.yml").write_text(json.dumps({
        "global": {"scrape_interval": "1s"},
        "scrape_configs": [{"job_name": "picker", "static_configs": [{"targets": [f"127.0.0.1:{stack.metrics_port}"]}]}],
    }))
    p = Proc([prom, f"--config.file={tmp_path / 'prometheus.yml'}", f"--storage.tsdb.path={tmp_path / 'data'}",
              f"--web.listen-address=127.0.0.1:{port}"], str(tmp_path / "prometheus.log"))
    try:
        for i in range(5):
            assert complete(stack.port, "llama", f"p{i}").status == 200

        def query(q: str) -> list:
            url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": q})
            with urllib.request.urlopen(url, timeout=5) as r:
                return json.loads(r.read())["data"]["result"]

        wait_until(lambda: query('inference_objective_request_total{model_name="llama"}'), 30, "Prometheus scraped", p)
        for name in ("inference_objective_request_total", "inference_objective_request_duration_seconds_bucket",
                     "inference_pool_average_kv_cache_utilization", "inference_pool_average_queue_size",
                     "inference_pool_ready_pods", "inference_pool_per_pod_queue_size", "llm_d_epp_request_total"):
            assert query(name), name
    finally:
        p.stop()
