"""Load scorers: queue depth, KV-cache utilisation, LoRA affinity. Each returns [0, 1] per endpoint."""
from __future__ import annotations

from ..endpoints import Endpoint
from .plugins import SchedRequest, Scorer, param


class QueueScorer(Scorer):
    """Fewer waiting requests scores higher (min-max normalised across the candidates)."""

    type_name = "queue-scorer"
    parameter_names = ()

    def score(self, req: SchedRequest, eps: list[Endpoint]) -> list[float]:
        qs = [e.metrics.waiting for e in eps]
        lo, hi = min(qs), max(qs)
        if hi == lo:
            return [1.0] * len(qs)
        span = hi - lo
        return [(hi - q) / span for q in qs]


class KVCacheScorer(Scorer):
    """1 - KV-cache usage. Upstream's name; infershift's former `kv-cache-scorer` is an alias."""

    type_name = "kv-cache-utilization-scorer"
    parameter_names = ()

    def score(self, req: SchedRequest, eps: list[Endpoint]) -> list[float]:
        return [1.0 - e.metrics.kv_usage for e in eps]


class LoraAffinityScorer(Scorer):
    """Adapter already active > can be loaded into a free slot > only waiting; base models are neutral."""

    type_name = "lora-affinity-scorer"
    parameter_names = ('activeScore', 'loadableScore', 'waitingScore')

    def __init__(self, name: str, parameters: dict):
        super().__init__(name, parameters)
        where = f"scheduling plugin {name}"
        self.active = param(parameters, "activeScore", 1.0, (int, float), where)
        self.loadable = param(parameters, "loadableScore", 0.8, (int, float), where)
        self.waiting = param(parameters, "waitingScore", 0.5, (int, float), where)

    def score(self, req: SchedRequest, eps: list[Endpoint]) -> list[float]:
        t = req.target_model
        out = []
        for e in eps:
            m = e.metrics
            if t in m.running_loras:
                out.append(self.active)
            elif t in m.waiting_loras:
                out.append(self.waiting)
            elif m.max_lora <= 0 or t in e.base_models:
                out.append(self.active)  # base model or no LoRA support: nothing to load
            elif len(m.running_loras) < m.max_lora:
                out.append(self.loadable)
            else:
                out.append(0.0)
        return out


class LoadAwareScorer(Scorer):
    """llm-d's load-aware-scorer: an empty queue scores 0.5, a queue of `threshold` (default 128)
    or more scores 0, linearly in between."""

    type_name = "load-aware-scorer"
    parameter_names = ("threshold",)

    def __init__(self, name: str, parameters: dict):
        super().__init__(name, parameters)
        threshold = param(parameters, "threshold", 128, int, f"scheduling plugin {name}")
        self.threshold = float(threshold if threshold > 0 else 128)  # upstream: <= 0 means the default

    def score(self, req: SchedRequest, eps: list[Endpoint]) -> list[float]:
        t = self.threshold
        return [0.5 if e.metrics.waiting <= 0 else 0.5 * (1.0 - min(e.metrics.waiting, t) / t) for e in eps]
