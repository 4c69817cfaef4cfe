"""Model-server metrics per engine, on golden pages built from the servers' own metric definitions
(testdata/metrics/, sources in testdata/README.md): vLLM V1 and V0, SGLang (priority breakdowns,
all-schedulers ranks, DP attention), trtllm-serve, Triton's TensorRT-LLM backend (current and older);
pages without the metrics are an unknown engine, never idle; NaN is rejected."""
from __future__ import annotations

import random
import re
from pathlib import Path

import pytest

from infershift.picker.config import parse_config
from infershift.picker.metrics_parse import (ENGINES, BadValue, ServerMetrics, UnknownEngine, metrics_path,
                                             parse_metrics)
from infershift.picker.pool import Pool

PAGES = Path(__file__).parent / "testdata" / "metrics"


def page(name: str) -> str:
    return (PAGES / name).read_text()


def load(m: ServerMetrics) -> tuple:
    return m.engine, m.waiting, m.running, round(m.kv_usage, 6), m.block_size, m.num_gpu_blocks


@pytest.mark.parametrize("name, engine, expected", [
    # V1 with two data-parallel engines: queues summed, the fuller KV cache; the latest LoRA series
    ("vllm_v1.prom", "vllm", ("vllm", 8.0, 8.0, 0.61, 16, 27000)),
    # V0: only the older gpu_cache_usage_perc; swapped requests are not waiting
    ("vllm_v0.prom", "vllm", ("vllm", 4.0, 12.0, 0.87, 16, 7224)),
    ("sglang.prom", "sglang", ("sglang", 4.0, 9.0, 0.25, 1, 164000)),
    # --enable-priority-scheduling: totals under priority="", breakdowns not added on top
    ("sglang_priority.prom", "sglang", ("sglang", 7.0, 10.0, 0.5, 0, 0)),
    # --enable-metrics-for-all-schedulers, TP 4: four ranks report one scheduler's queue, counted once
    ("sglang_all_schedulers.prom", "sglang", ("sglang", 6.0, 32.0, 0.73, 0, 0)),
    # DP attention 2 x 2, all schedulers, priorities: per-DP queues summed, ranks once, breakdowns dropped
    ("sglang_dp_attention.prom", "sglang", ("sglang", 11.0, 32.0, 0.8, 0, 0)),
    ("trtllm_serve.prom", "trtllm-serve", ("trtllm-serve", 3.0, 14.0, 0.375, 32, 8192)),
    ("triton_trtllm.prom", "triton-tensorrt-llm", ("triton-tensorrt-llm", 5.0, 11.0, 0.46875, 64, 6240)),
    # older backend without "waiting" and "fraction": active - scheduled, used / max
    ("triton_trtllm_old.prom", "triton-tensorrt-llm", ("triton-tensorrt-llm", 5.0, 11.0, 0.46875, 64, 6240)),
])
def test_golden_pages(name, engine, expected):
    assert load(parse_metrics(page(name), engine)) == expected  # the engine named (pod label / config)
    assert load(parse_metrics(page(name))) == expected  # and recognised (auto)


def test_vllm_lora_and_cache_info():
    m = parse_metrics(page("vllm_v1.prom"), "vllm")
    assert m.running_loras == {"sql-lora", "travel"} and m.waiting_loras == frozenset() and m.max_lora == 4


@pytest.mark.parametrize("name", ["unknown.prom", "trtllm_serve_metrics.json"])
def test_pages_without_the_metrics_are_an_unknown_engine(name):
    for engine in (None, *ENGINES):
        with pytest.raises(UnknownEngine):
            parse_metrics(page(name), engine)


def test_trtllm_serve_json_page_says_where_the_prometheus_page_is():
    with pytest.raises(UnknownEngine, match="/prometheus/metrics"):
        parse_metrics(page("trtllm_serve_metrics.json"))
    assert metrics_path("trtllm-serve") == "/prometheus/metrics/"
    assert {metrics_path(e) for e in ("vllm", "sglang", "triton-tensorrt-llm", None)} == {"/metrics"}


def test_a_labelled_engine_serving_another_engines_page_is_unknown_and_says_what_it_looks_like():
    with pytest.raises(UnknownEngine, match="looks like vllm") as e:
        parse_metrics(page("vllm_v1.prom"), "sglang")
    assert (e.value.engine, e.value.guess) == ("sglang", "vllm")


@pytest.mark.parametrize("value", ["NaN", "+Inf", "-Inf"])
def test_nan_or_infinite_in_a_metric_the_picker_reads_is_rejected(value):
    text = re.sub(r"^(sglang:token_usage\{.*\}) 0\.25$", rf"\1 {value}", page("sglang.prom"), flags=re.M)
    assert value in text
    with pytest.raises(BadValue, match="sglang:token_usage"):
        parse_metrics(text, "sglang")
    with pytest.raises(BadValue):
        parse_metrics(f'vllm:num_requests_waiting{{model_name="m"}} {value}\n')


def test_nan_in_a_metric_the_picker_does_not_read_is_fine():
    assert "NaN" in page("sglang.prom")  # sglang:fwd_occupancy defaults to NaN
    assert parse_metrics(page("sglang.prom")).waiting == 4.0


def test_breakdowns_are_not_added_to_totals_whatever_the_label():
    text = ('vllm:num_requests_waiting{model_name="m"} 5\n'
            'vllm:num_requests_waiting{model_name="m",priority="1"} 3\n'
            'vllm:num_requests_waiting{model_name="m",priority="2"} 2\n')
    assert parse_metrics(text).waiting == 5.0
    two_models = 'vllm:num_requests_waiting{model_name="a"} 2\nvllm:num_requests_waiting{model_name="b"} 3\n'
    assert parse_metrics(two_models).waiting == 5.0  # two totals, summed


def test_engine_from_pod_label_or_endpoint_config():
    cfg = parse_config({"endpoints": [
        {"address": "10.0.0.1:8000", "labels": {"llm-d.ai/engine-type": "sglang"}},
        {"address": "10.0.0.2:8000", "labels": {"inference.networking.k8s.io/engine-type": "trtllm-serve"}},
        {"address": "10.0.0.3:8000", "engine": "triton-tensorrt-llm", "labels": {"llm-d.ai/engine-type": "vllm"}},
        {"address": "10.0.0.4:8000"}]})
    pool = Pool(cfg, clock=lambda: 0.0, rng=random.Random(1))
    got = {a.split(":")[0][-1]: e.engine for a, e in pool.endpoints.items()}
    assert got == {"1": "sglang", "2": "trtllm-serve", "3": "triton-tensorrt-llm", "4": None}  # 4: the pool's
    assert cfg.scheduling.data_layer.default_engine == "auto"  # unlabelled: the page is recognised


def test_unknown_engine_in_config_is_an_error():
    from infershift.picker.errors import ConfigError

    with pytest.raises(ConfigError, match=r"endpoints\[0\]\.engine"):
        parse_config({"endpoints": [{"address": "10.0.0.1:8000", "engine": "tgi"}]})
