"""Parsing model-server /metrics: vLLM (new and old names), LoRA info, cache config, SGLang."""
from __future__ import annotations

import pytest

from infershift.picker.metrics_parse import UnknownEngine, parse_metrics
from infershift.picker.scraper import models_from_listing

VLLM = """\
# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="meta-llama/Llama-3.1-8B-Instruct"} 3.0
# HELP vllm:num_requests_waiting Number of requests waiting to be processed.
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="meta-llama/Llama-3.1-8B-Instruct"} 7.0
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{engine="0",model_name="meta-llama/Llama-3.1-8B-Instruct"} 0.42
# TYPE vllm:lora_requests_info gauge
vllm:lora_requests_info{max_lora="4",running_lora_adapters="sql-lora,travel",waiting_lora_adapters=""} 1.7e9
vllm:lora_requests_info{max_lora="4",running_lora_adapters="old",waiting_lora_adapters="x"} 1.6e9
# TYPE vllm:cache_config_info gauge
vllm:cache_config_info{block_size="16",cache_dtype="auto",num_gpu_blocks="27000",prefix_caching_hash_algo="builtin"} 1.0
vllm:e2e_request_latency_seconds_bucket{engine="0",le="0.3",model_name="m"} 5.0
vllm:prompt_tokens_total{engine="0",model_name="m"} 1234.0
"""


def test_vllm():
    m = parse_metrics(VLLM)
    assert (m.waiting, m.running, m.kv_usage) == (7.0, 3.0, 0.42)
    assert m.running_loras == {"sql-lora", "travel"} and m.waiting_loras == frozenset()  # latest series wins
    assert m.max_lora == 4 and (m.block_size, m.num_gpu_blocks) == (16, 27000)


def test_older_gpu_cache_name_and_precedence():
    assert parse_metrics('vllm:gpu_cache_usage_perc{model_name="m"} 0.3\n').kv_usage == 0.3
    both = 'vllm:gpu_cache_usage_perc{model_name="m"} 0.3\nvllm:kv_cache_usage_perc{model_name="m"} 0.6\n'
    assert parse_metrics(both).kv_usage == 0.6
    assert parse_metrics("vllm:num_requests_waiting 2\n").waiting == 2  # no labels


def test_sglang():
    m = parse_metrics('sglang:num_queue_reqs{model_name="x"} 4\nsglang:num_running_reqs{model_name="x"} 9\n'
                      'sglang:token_usage{model_name="x"} 0.25\n')
    assert (m.waiting, m.running, m.kv_usage) == (4, 9, 0.25)


def test_garbage_is_ignored():
    # unparseable lines are skipped; a page with nothing readable left is an unknown engine, never idle
    with pytest.raises(UnknownEngine):
        parse_metrics("vllm:num_requests_waiting{oops\nvllm:num_requests_running{a=\"b\"} NaNx\n\n")
    m = parse_metrics("vllm:num_requests_waiting{oops\nvllm:num_requests_running{a=\"b\"} 2\n\n")
    assert m.waiting == 0 and m.running == 2


def test_models_listing():
    ids, bases = models_from_listing({"data": [{"id": "llama", "parent": None}, {"id": "sql", "parent": "llama"},
                                               {"id": "qwq"}, {"bad": 1}]})
    assert ids == {"llama", "sql", "qwq"} and bases == {"llama", "qwq"}
