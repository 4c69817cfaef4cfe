"""vLLM's Prometheus metrics, rendered by hand: a scrape every few tens of
milliseconds from every picker has to stay cheap, and histograms take weighted
observations so a run of equal decode steps costs one call."""
from __future__ import annotations

import time
from bisect import bisect_left

# Bucket bounds as vLLM declares them.
TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0,
                2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0)
ITL_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0,
               2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0)
E2E_BUCKETS = (0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0,
               50.0, 60.0, 120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0)


class Histogram:
    def __init__(self, bounds: tuple[float, ...]):
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float, count: int = 1) -> None:
        self.counts[bisect_left(self.bounds, value)] += count
        self.sum += value * count

    def lines(self, name: str, labels: str) -> list[str]:
        out = []
        acc = 0
        for b, c in zip(self.bounds, self.counts):
            acc += c
            out.append(f'{name}_bucket{{{labels},le="{b}"}} {acc}')
        acc += self.counts[-1]
        out.append(f'{name}_bucket{{{labels},le="+Inf"}} {acc}')
        out.append(f"{name}_count{{{labels}}} {acc}")
        out.append(f"{name}_sum{{{labels}}} {self.sum}")
        return out


class Stats:
    """The engine's metric hooks (see engine.NullStats) plus the counters."""

    def __init__(self):
        self.ttft = Histogram(TTFT_BUCKETS)
        self.itl_h = Histogram(ITL_BUCKETS)
        self.e2e = Histogram(E2E_BUCKETS)
        self.queue = Histogram(E2E_BUCKETS)
        self.prompt_tokens = 0
        self.generation_tokens = 0
        self.success: dict[str, int] = {}
        self.preemptions = 0

    def admitted(self, r, now: float) -> None:
        if r.preemptions == 0:
            self.queue.observe(now - r.ready_at)

    def first_token(self, r, now: float) -> None:
        self.ttft.observe(now - r.arrival)

    def tokens(self, prompt: int, generated: int) -> None:
        self.prompt_tokens += prompt
        self.generation_tokens += generated

    def itl(self, step: float, count: int) -> None:
        self.itl_h.observe(step, count)

    def finished(self, r, now: float) -> None:
        self.e2e.observe(now - r.arrival)
        self.success[r.finish_reason] = self.success.get(r.finish_reason, 0) + 1

    def preempted(self, r) -> None:
        self.preemptions += 1


def _esc(v: str) -> str:
    return v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def render(engine, stats: Stats, model_name: str, max_loras: int, now: float | None = None) -> str:
    """Prometheus text exposition of the engine's state and history."""
    m = f'model_name="{_esc(model_name)}"'
    kv = engine.kv
    usage = kv.usage()
    run_l, wait_l = engine.lora_info()
    ts = time.time() if now is None else now
    out = [
        "# HELP vllm:num_requests_running Number of requests in model execution batches.",
        "# TYPE vllm:num_requests_running gauge",
        f"vllm:num_requests_running{{{m}}} {len(engine.running)}",
        "# HELP vllm:num_requests_waiting Number of requests waiting to be processed.",
        "# TYPE vllm:num_requests_waiting gauge",
        f"vllm:num_requests_waiting{{{m}}} {len(engine.waiting)}",
        "# HELP vllm:kv_cache_usage_perc KV-cache usage. 1 means 100 percent usage.",
        "# TYPE vllm:kv_cache_usage_perc gauge",
        f"vllm:kv_cache_usage_perc{{{m}}} {usage}",
        "# HELP vllm:gpu_cache_usage_perc GPU KV-cache usage. 1 means 100 percent usage.",
        "# TYPE vllm:gpu_cache_usage_perc gauge",
        f"vllm:gpu_cache_usage_perc{{{m}}} {usage}",
        "# HELP vllm:lora_requests_info Running stats on lora requests.",
        "# TYPE vllm:lora_requests_info gauge",
        f'vllm:lora_requests_info{{max_lora="{max_loras}",{m},running_lora_adapters="{_esc(",".join(run_l))}",'
        f'waiting_lora_adapters="{_esc(",".join(wait_l))}"}} {ts}',
        "# HELP vllm:cache_config_info Information of the LLMEngine CacheConfig",
        "# TYPE vllm:cache_config_info gauge",
        f'vllm:cache_config_info{{block_size="{kv.block_size}",enable_prefix_caching="True",{m},'
        f'num_gpu_blocks="{kv.num_blocks}"}} 1.0',
        "# HELP vllm:prefix_cache_queries Prefix cache queries, in terms of number of queried tokens.",
        "# TYPE vllm:prefix_cache_queries counter",
        f"vllm:prefix_cache_queries_total{{{m}}} {kv.queries}",
        "# HELP vllm:prefix_cache_hits Prefix cache hits, in terms of number of cached tokens.",
        "# TYPE vllm:prefix_cache_hits counter",
        f"vllm:prefix_cache_hits_total{{{m}}} {kv.hits}",
        "# HELP vllm:num_preemptions Cumulative number of preemptions from the engine.",
        "# TYPE vllm:num_preemptions counter",
        f"vllm:num_preemptions_total{{{m}}} {stats.preemptions}",
        "# HELP vllm:prompt_tokens Number of prefill tokens processed.",
        "# TYPE vllm:prompt_tokens counter",
        f"vllm:prompt_tokens_total{{{m}}} {stats.prompt_tokens}",
        "# HELP vllm:generation_tokens Number of generation tokens processed.",
        "# TYPE vllm:generation_tokens counter",
        f"vllm:generation_tokens_total{{{m}}} {stats.generation_tokens}",
        "# HELP vllm:request_success Count of successfully processed requests.",
        "# TYPE vllm:request_success counter",
    ]
    for reason in ("stop", "length", "abort"):
        out.append(f'vllm:request_success_total{{finished_reason="{reason}",{m}}} '
                   f"{stats.success.get(reason, 0)}")
    for name, help_, h in (
        ("vllm:time_to_first_token_seconds", "Histogram of time to first token in seconds.", stats.ttft),
        ("vllm:inter_token_latency_seconds", "Histogram of inter-token latency in seconds.", stats.itl_h),
        ("vllm:e2e_request_latency_seconds", "Histogram of e2e request latency in seconds.", stats.e2e),
        ("vllm:request_queue_time_seconds", "Histogram of time spent in WAITING phase for request.",
         stats.queue),
    ):
        out.append(f"# HELP {name} {help_}")
        out.append(f"# TYPE {name} histogram")
        out.extend(h.lines(name, m))
    out.append("")
    return "\n".join(out)
