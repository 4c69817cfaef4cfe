"""Filters: drop endpoints that cannot (or should not) serve the request."""
from __future__ import annotations

from ..endpoints import Endpoint
from ..errors import NoCapacity
from .plugins import Filter, SchedRequest, param


class ModelFilter(Filter):
    """Keep endpoints that serve the target base model or have the adapter registered/loaded."""

    type_name = "model-filter"
    parameter_names = ()

    def filter(self, req: SchedRequest, eps: list[Endpoint]) -> list[Endpoint]:
        target = req.target_model
        out = [e for e in eps if e.can_serve(target)]
        if not out:
            raise NoCapacity(f"no ready endpoint serves model {target!r}", param="model")
        return out


def saturated(e: Endpoint, queue_threshold: float, kv_threshold: float) -> bool:
    m = e.metrics
    return m.waiting > queue_threshold or m.kv_usage > kv_threshold


class SaturationFilter(Filter):
    """Drop saturated endpoints; when all are saturated shed sheddable requests, route the rest anyway."""

    type_name = "saturation-filter"
    parameter_names = ('queueDepthThreshold', 'kvCacheThreshold')

    def __init__(self, name: str, parameters: dict):
        super().__init__(name, parameters)
        where = f"scheduling plugin {name}"
        self.queue = param(parameters, "queueDepthThreshold", 5, (int, float), where)
        self.kv = param(parameters, "kvCacheThreshold", 0.8, (int, float), where)

    def filter(self, req: SchedRequest, eps: list[Endpoint]) -> list[Endpoint]:
        q, kv = self.queue, self.kv
        out = [e for e in eps if not saturated(e, q, kv)]
        if out:
            return out
        # Admission happens in the scheduler: sheddable requests get 429, the rest are still routed.
        req.scratch["shed_reason"] = "the pool is saturated; sheddable request dropped, retry later"
        return eps


ROLE_LABEL = "llm-d.ai/role"
DECODE_ROLES = frozenset({"decode", "prefill-decode", "both", "encode-prefill-decode"})


class DecodeFilter(Filter):
    """llm-d's decode-filter: keep endpoints whose pod has no `llm-d.ai/role` label or a role that
    decodes (decode, prefill-decode, both, encode-prefill-decode). Endpoints carry the labels their
    discovery knows (`labels`, a mapping); without any, every endpoint is kept, as upstream keeps
    unlabelled pods."""

    type_name = "decode-filter"
    parameter_names = ()

    def filter(self, req: SchedRequest, eps: list[Endpoint]) -> list[Endpoint]:
        out = []
        for e in eps:
            labels = getattr(e, "labels", None)
            role = labels.get(ROLE_LABEL) if labels else None
            if role is None or role in DECODE_ROLES:
                out.append(e)
        return out
