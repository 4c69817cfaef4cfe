"""Read the load the scheduler needs out of a model server's Prometheus page, per engine.

Engines (the names upstream's `core-metrics-extractor` uses, chosen by the pod label
`llm-d.ai/engine-type`, the endpoint's `engine:` or `metrics.engine`; `auto` recognises the page):

| engine | waiting | running | KV usage (0..1) | block size / blocks |
|---|---|---|---|---|
| `vllm` (V1; V0) | `vllm:num_requests_waiting` | `vllm:num_requests_running` | `vllm:kv_cache_usage_perc` (V1), else `vllm:gpu_cache_usage_perc` (V0, deprecated in V1) | `vllm:cache_config_info{block_size,num_gpu_blocks}` |
| `sglang` | `sglang:num_queue_reqs` | `sglang:num_running_reqs` | `sglang:token_usage` | `sglang:page_size`, `sglang:num_pages` (or `sglang:cache_config_info{page_size,num_pages}`) |
| `trtllm-serve` | `trtllm_num_requests_waiting` | `trtllm_num_requests_running` | `trtllm_kv_cache_utilization` | `trtllm_kv_cache_tokens_per_block`, `trtllm_kv_cache_max_blocks` |
| `triton-tensorrt-llm` | `nv_trt_llm_request_metrics{request_type="waiting"}` (older backends: active - scheduled) | `{request_type="scheduled"}` | `nv_trt_llm_kv_cache_block_metrics{kv_cache_block_type="fraction"}` (older: used / max) | `{kv_cache_block_type="tokens_per"}`, `{...="max"}` |

Several series of one metric: **totals, not sums of breakdowns.** A series whose labels extend
another series' labels is a breakdown of it and is dropped (SGLang with
`--enable-priority-scheduling` writes the total under `priority=""` and each priority under
`priority="<n>"`; an empty label value is the same as no label). Of the rest, series that differ
only in a rank label (`tp_rank`, `pp_rank`, `moe_ep_rank`: SGLang with
`--enable-metrics-for-all-schedulers` exports one per scheduler, all showing the same queue) are one
scheduler's state and count once (the largest); everything else (vLLM's `engine` of data-parallel
engines, SGLang's `dp_rank`, several models of one Triton) is summed. KV usage is the largest
total: the fullest cache is the one that queues.

A page with none of the engine's queue, running and KV metrics raises `UnknownEngine` (the endpoint
is then "unknown engine", never idle); a NaN or infinite value in one of them raises `BadValue`.
Sources of these definitions: tests/picker/testdata/README.md.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

AUTO = "auto"
ENGINES = ("vllm", "sglang", "trtllm-serve", "triton-tensorrt-llm")
# Pod labels naming the engine: llm-d's, then the GIE label it replaced (both read by upstream's
# core-metrics-extractor, llm-d-router pkg/epp/framework/plugins/datalayer/extractor/metrics).
ENGINE_LABELS = ("llm-d.ai/engine-type", "inference.networking.k8s.io/engine-type")
# Where each engine serves its Prometheus page. trtllm-serve's /metrics is a JSON array of
# iteration stats; the Prometheus text is mounted at /prometheus/metrics (tensorrt_llm/serve/
# openai_server.py), and the trailing slash avoids the mount's redirect.
METRICS_PATH = {"trtllm-serve": "/prometheus/metrics/"}
DEFAULT_PATH = "/metrics"

# Labels that tell replicas of one scheduler's state apart (SGLang), not separate queues.
_RANK_LABELS = frozenset({"tp_rank", "pp_rank", "moe_ep_rank", "attn_tp_rank", "attn_cp_rank"})

_NAMES = {
    "vllm": ("vllm:num_requests_waiting", "vllm:num_requests_running", "vllm:kv_cache_usage_perc",
             "vllm:gpu_cache_usage_perc"),
    "sglang": ("sglang:num_queue_reqs", "sglang:num_running_reqs", "sglang:token_usage"),
    "trtllm-serve": ("trtllm_num_requests_waiting", "trtllm_num_requests_running", "trtllm_kv_cache_utilization"),
    "triton-tensorrt-llm": ("nv_trt_llm_request_metrics", "nv_trt_llm_kv_cache_block_metrics"),
}
# Prefixes of the series read; str.startswith with a tuple runs in C, so skipping the (many)
# histogram lines of a page stays cheap.
_WANTED = ("vllm:num_requests_", "vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc",
           "vllm:lora_requests_info", "vllm:cache_config_info", "sglang:num_queue_reqs",
           "sglang:num_running_reqs", "sglang:token_usage", "sglang:page_size", "sglang:num_pages",
           "sglang:cache_config_info", "trtllm_num_requests_", "trtllm_kv_cache_", "nv_trt_llm_request_metrics",
           "nv_trt_llm_kv_cache_block_metrics")


class UnknownEngine(ValueError):
    """The page has none of the metrics the picker reads for the engine."""

    def __init__(self, engine: str, guess: str | None, hint: str = ""):
        self.engine, self.guess = engine, guess
        what = "any engine the picker knows" if engine == AUTO else f"engine {engine}"
        msg = f"the metrics page has none of the queue, running or KV-cache metrics of {what}"
        if guess and engine != AUTO and guess != engine:
            msg += f"; it looks like {guess} (set the pod label llm-d.ai/engine-type or the endpoint's engine)"
        super().__init__(msg + hint)


class BadValue(ValueError):
    """A metric the picker reads is NaN or infinite."""


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
    engine: str = ""  # which engine's names the values came from ("" before the first good scrape)


def _labels(s: str) -> dict[str, str]:
    """Parse `a="x",b="y"` (the inside of {...}), honouring escaped quotes."""
    out: dict[str, str] = {}
    i, n = 0, len(s)
    while i < n:
        eq = s.find("=", i)
        if eq < 0:
            break
        key = s[i:eq].strip().lstrip(",").strip()
        j = s.find('"', eq) + 1
        if j <= 0:
            break
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


def _scan(text: str) -> dict[str, list[tuple[str, str]]]:
    """name -> [(labels text, value text)] for the series of interest, in page order."""
    found: dict[str, list[tuple[str, str]]] = {}
    for line in text.splitlines():
        if not line.startswith(_WANTED):
            continue
        brace = line.find("{")
        if brace >= 0:
            close = line.rfind("}")
            if close < brace:
                continue
            name, labels, rest = line[:brace], line[brace + 1:close], line[close + 1:]
        else:
            name, _, rest = line.partition(" ")
            labels = ""
        value = rest.split(None, 1)
        if value:
            found.setdefault(name, []).append((labels, value[0]))
    return found


def _number(name: str, text: str) -> float | None:
    try:
        v = float(text)
    except ValueError:
        return None  # not a number: the line is garbage, skip it
    if v != v or v in (float("inf"), float("-inf")):
        raise BadValue(f"{name} is {text}")
    return v


def _series(found: dict, name: str) -> list[tuple[str, float]]:
    out = []
    for labels, text in found.get(name, ()):
        v = _number(name, text)
        if v is not None:
            out.append((labels, v))
    return out


def _combine(series: list[tuple[str, float]], largest: bool = False) -> float | None:
    """One value from a metric's series: breakdowns dropped, rank replicas once, the rest summed
    (or the largest total with `largest`). None if there is no series."""
    if not series:
        return None
    if len(series) == 1:
        return series[0][1]
    parsed = [(frozenset((k, v) for k, v in _labels(lab).items() if v != ""), x) for lab, x in series]
    totals = [(ls, x) for ls, x in parsed if not any(o < ls for o, _ in parsed)]
    if largest:
        return max(x for _, x in totals)
    groups: dict[frozenset, float] = {}
    for ls, x in totals:
        key = frozenset(p for p in ls if p[0] not in _RANK_LABELS)
        groups[key] = max(groups.get(key, x), x)
    return sum(groups.values())


def _by_label(found: dict, name: str, label: str) -> dict[str, list[tuple[str, float]]]:
    """Triton's families: label value -> its series, with that label taken out of the labels."""
    out: dict[str, list[tuple[str, float]]] = {}
    for labels, text in found.get(name, ()):
        v = _number(name, text)
        if v is None:
            continue
        lab = _labels(labels)
        kind = lab.pop(label, "")
        rest = ",".join(f'{k}="{x}"' for k, x in sorted(lab.items()))
        out.setdefault(kind, []).append((rest, v))
    return out


def _int(v: str | float | None) -> int:
    try:
        return int(float(v or 0))
    except (TypeError, ValueError):
        return 0


def _adapters(v: str) -> frozenset:
    return frozenset(a for a in (x.strip() for x in v.split(",")) if a)


def _vllm(found: dict) -> ServerMetrics | None:
    waiting = _combine(_series(found, "vllm:num_requests_waiting"))
    running = _combine(_series(found, "vllm:num_requests_running"))
    kv = _combine(_series(found, "vllm:kv_cache_usage_perc"), largest=True)
    if kv is None:  # V0's name (and V1's deprecated twin): the newer one wins when both exist
        kv = _combine(_series(found, "vllm:gpu_cache_usage_perc"), largest=True)
    if waiting is None and running is None and kv is None:
        return None
    running_l: frozenset = frozenset()
    waiting_l: frozenset = frozenset()
    max_lora = 0
    lora = _series(found, "vllm:lora_requests_info")
    if lora:  # the value is a timestamp: the latest series is the current state
        lab = _labels(max(lora, key=lambda s: s[1])[0])
        running_l = _adapters(lab.get("running_lora_adapters", ""))
        waiting_l = _adapters(lab.get("waiting_lora_adapters", ""))
        max_lora = _int(lab.get("max_lora"))
    block = blocks = 0
    info = found.get("vllm:cache_config_info")
    if info:
        lab = _labels(info[0][0])
        block, blocks = _int(lab.get("block_size")), _int(lab.get("num_gpu_blocks"))
    return ServerMetrics(waiting or 0.0, running or 0.0, kv or 0.0, running_l, waiting_l, max_lora, block, blocks,
                         "vllm")


def _sglang(found: dict) -> ServerMetrics | None:
    waiting = _combine(_series(found, "sglang:num_queue_reqs"))
    running = _combine(_series(found, "sglang:num_running_reqs"))
    kv = _combine(_series(found, "sglang:token_usage"), largest=True)
    if waiting is None and running is None and kv is None:
        return None
    block = _combine(_series(found, "sglang:page_size"), largest=True)
    blocks = _combine(_series(found, "sglang:num_pages"), largest=True)
    info = found.get("sglang:cache_config_info")
    if info and not block:
        lab = _labels(info[0][0])
        block, blocks = _int(lab.get("page_size")), _int(lab.get("num_pages"))
    return ServerMetrics(waiting or 0.0, running or 0.0, kv or 0.0, block_size=_int(block),
                         num_gpu_blocks=_int(blocks), engine="sglang")


def _trtllm(found: dict) -> ServerMetrics | None:
    waiting = _combine(_series(found, "trtllm_num_requests_waiting"))
    running = _combine(_series(found, "trtllm_num_requests_running"))
    kv = _combine(_series(found, "trtllm_kv_cache_utilization"), largest=True)
    if waiting is None and running is None and kv is None:
        return None
    block = _combine(_series(found, "trtllm_kv_cache_tokens_per_block"), largest=True)
    blocks = _combine(_series(found, "trtllm_kv_cache_max_blocks"), largest=True)
    return ServerMetrics(waiting or 0.0, running or 0.0, kv or 0.0, block_size=_int(block),
                         num_gpu_blocks=_int(blocks), engine="trtllm-serve")


def _triton(found: dict) -> ServerMetrics | None:
    req = _by_label(found, "nv_trt_llm_request_metrics", "request_type")
    kvb = _by_label(found, "nv_trt_llm_kv_cache_block_metrics", "kv_cache_block_type")
    running = _combine(req.get("scheduled", []))
    waiting = _combine(req.get("waiting", []))
    if waiting is None and "active" in req:  # backends before "Waiting Requests": the rest of the active ones
        active = _combine(req["active"]) or 0.0
        waiting = max(active - (running or 0.0), 0.0)
    kv = _combine(kvb.get("fraction", []), largest=True)
    if kv is None and kvb.get("max"):  # backends before "Fraction used KV cache blocks"
        used, most = _combine(kvb.get("used", [])), _combine(kvb["max"])
        kv = used / most if used is not None and most else None
    if waiting is None and running is None and kv is None:
        return None
    block = _combine(kvb.get("tokens_per", []), largest=True)
    blocks = _combine(kvb.get("max", []))
    return ServerMetrics(waiting or 0.0, running or 0.0, kv or 0.0, block_size=_int(block),
                         num_gpu_blocks=_int(blocks), engine="triton-tensorrt-llm")


_PARSERS = {"vllm": _vllm, "sglang": _sglang, "trtllm-serve": _trtllm, "triton-tensorrt-llm": _triton}


def detect(found: dict) -> str | None:
    """The engine whose metrics the scanned page carries (the one with most of them), if any."""
    best, hits = None, 0
    for engine, names in _NAMES.items():
        n = sum(1 for name in names if name in found)
        if n > hits:
            best, hits = engine, n
    return best


def metrics_path(engine: str | None) -> str:
    return METRICS_PATH.get(engine or AUTO, DEFAULT_PATH)


def parse_metrics(text: str, engine: str | None = None) -> ServerMetrics:
    """The load on one server from its Prometheus text. `engine` None or "auto": recognise it."""
    found = _scan(text)
    want = engine or AUTO
    use = detect(found) if want == AUTO else want
    parser = _PARSERS.get(use or "")
    m = parser(found) if parser is not None else None
    if m is None:
        hint = ""
        head = text.lstrip()[:1]
        if head in ("[", "{"):
            hint = (" (the page is JSON: trtllm-serve's /metrics are iteration stats, its Prometheus page is "
                    "/prometheus/metrics; label the pod llm-d.ai/engine-type: trtllm-serve)")
        raise UnknownEngine(want, detect(found), hint)
    if m.kv_usage < 0.0 or m.kv_usage > 1.0 or m.waiting < 0 or m.running < 0:
        m = replace(m, kv_usage=min(max(m.kv_usage, 0.0), 1.0), waiting=max(m.waiting, 0.0),
                    running=max(m.running, 0.0))
    return m
