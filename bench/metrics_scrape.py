"""Read the few Prometheus counters the bench needs from a vLLM-style /metrics page."""
from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families


def prefix_counters(text: str) -> tuple[float, float]:
    """(prefix-cache queries, hits) in tokens, summed over label sets."""
    q = h = 0.0
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name == "vllm:prefix_cache_queries_total":
                q += s.value
            elif s.name == "vllm:prefix_cache_hits_total":
                h += s.value
    return q, h
