"""Parse only the model-server metrics the scheduler needs out of Prometheus text (vLLM and SGLang)."""
from __future__ import annotations

from dataclasses import dataclass

# Prefixes of the series we read; str.startswith with a tuple runs in C, so skipping the
# (many) histogram lines of a vLLM /metrics page stays cheap.
_WANTED = ("vllm:num_requests_", "vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc",
           "vllm:lora_requests_info", "vllm:cache_config_info", "sglang:num_queue_reqs",
           "sglang:num_running_reqs", "sglang:token_usage")


@dataclass(frozen=True)
class ServerMetrics:
    waiting: float = 0.0
    running: float = 0.0
    kv_usage: float = 0.0  # 0..1
    running_loras: frozenset = frozenset()
    waiting_loras: frozenset = frozenset()
    max_lora: int = 0
    block_size: int = 0
    num_gpu_blocks: int = 0


def _labels(s: str) -> dict[str, str]:
    """Parse `a="x",b="y"` (the inside of {...}), honouring escaped quotes."""
    out: dict[str, str] = {}
    i, n = 0, len(s)
    while i < n:
        eq = s.find("=", i)
        if eq < 0:
            break
        key = s[i:eq].strip().lstrip(",").strip()
        j = eq + 2  # skip ="
        buf = []
        while j < n and s[j] != '"':
            if s[j] == "\\" and j + 1 < n:
                j += 1
                buf.append({"n": "\n"}.get(s[j], s[j]))
            else:
                buf.append(s[j])
            j += 1
        out[key] = "".join(buf)
        i = j + 1
    return out


def _split(line: str) -> tuple[str, str, float]:
    brace = line.find("{")
    if brace >= 0:
        close = line.rfind("}")
        name, labels, rest = line[:brace], line[brace + 1:close], line[close + 1:]
    else:
        name, _, rest = line.partition(" ")
        labels = ""
    value = rest.split()[0]
    return name, labels, float(value)


def _adapters(v: str) -> frozenset:
    return frozenset(a for a in (x.strip() for x in v.split(",")) if a)


def parse_metrics(text: str) -> ServerMetrics:
    waiting = running = kv = 0.0
    kv_seen = False
    lora_ts = -1.0
    running_l: frozenset = frozenset()
    waiting_l: frozenset = frozenset()
    max_lora = block_size = num_blocks = 0
    for line in text.splitlines():
        if not line.startswith(_WANTED):
            continue
        try:
            name, labels, value = _split(line)
        except (ValueError, IndexError):
            continue
        if name == "vllm:num_requests_waiting" or name == "sglang:num_queue_reqs":
            waiting += value  # summed: one series per model_name / engine
        elif name == "vllm:num_requests_running" or name == "sglang:num_running_reqs":
            running += value
        elif name == "vllm:kv_cache_usage_perc" or name == "sglang:token_usage":
            kv = max(kv, value) if kv_seen else value
            kv_seen = True
        elif name == "vllm:gpu_cache_usage_perc":
            if not kv_seen:  # the older name; the newer one wins when both exist
                kv = value
        elif name == "vllm:lora_requests_info":
            if value >= lora_ts:  # value is a timestamp: keep the latest series
                lora_ts = value
                lab = _labels(labels)
                running_l = _adapters(lab.get("running_lora_adapters", ""))
                waiting_l = _adapters(lab.get("waiting_lora_adapters", ""))
                try:
                    max_lora = int(float(lab.get("max_lora", "0") or 0))
                except ValueError:
                    max_lora = 0
        elif name == "vllm:cache_config_info":
            lab = _labels(labels)
            try:
                block_size = int(float(lab.get("block_size", "0") or 0))
                num_blocks = int(float(lab.get("num_gpu_blocks", "0") or 0))
            except ValueError:
                pass
    return ServerMetrics(waiting, running, min(max(kv, 0.0), 1.0), running_l, waiting_l,
                         max_lora, block_size, num_blocks)
