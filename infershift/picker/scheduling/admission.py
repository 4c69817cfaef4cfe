"""Admission by criticality: shed sheddable traffic early so critical traffic keeps its latency.

The saturation filter sheds only once every endpoint is past its thresholds; by then the sheddable
requests already admitted sit ahead of critical ones in each server's first-come-first-served
queue. This filter sheds sheddable requests as soon as no endpoint has headroom left (by default: an
empty queue) and sends the sheddable requests it admits to the endpoints that have it. Critical and
Standard requests keep every candidate, so prefix-cache and LoRA affinity still decide where they
go (narrowing them to empty queues, as this filter once did, broke prefix affinity: issue 13); only
when no endpoint is within the critical thresholds (by default the saturation filter's: 5 waiting,
KV 0.8) are they sent to the endpoints with the shortest queues.
"""
from __future__ import annotations

from ..endpoints import Endpoint
from ..errors import ConfigError
from .plugins import Filter, SchedRequest, param

SHED_REASON = "the pool's queues are full; sheddable request dropped, retry later"
PARAMETERS = ("queueDepthThreshold", "kvCacheThreshold", "criticalQueueDepthThreshold", "criticalKvCacheThreshold",
              "criticalQueueSlack", "learnBatchLimit")


class AdmissionFilter(Filter):
    """Sheddable requests are admitted only while some endpoint has headroom: `waiting <=
    queueDepthThreshold`, `kv <= kvCacheThreshold` and, once its batch limit is known, a free batch
    slot; they go to the endpoints with headroom. Critical and Standard requests keep every
    candidate while some endpoint has `waiting <= criticalQueueDepthThreshold` and `kv <=
    criticalKvCacheThreshold`; with none, they go to endpoints whose waiting queue is within
    `criticalQueueSlack` of the shortest."""

    type_name = "admission-filter"

    def __init__(self, name: str, parameters: dict):
        super().__init__(name, parameters)
        where = f"scheduling plugin {name}"
        unknown = sorted(set(parameters) - set(PARAMETERS))
        if unknown:  # a misspelt threshold would otherwise silently keep its default
            raise ConfigError(f"{where}.parameters: unknown {', '.join(unknown)} (known: {', '.join(PARAMETERS)})")
        self.queue = param(parameters, "queueDepthThreshold", 0, (int, float), where)
        self.kv = param(parameters, "kvCacheThreshold", 0.7, (int, float), where)
        self.critical_queue = param(parameters, "criticalQueueDepthThreshold", 5, (int, float), where)
        self.critical_kv = param(parameters, "criticalKvCacheThreshold", 0.8, (int, float), where)
        self.slack = param(parameters, "criticalQueueSlack", 1, (int, float), where)
        learn = parameters.get("learnBatchLimit", False)
        if not isinstance(learn, bool):
            raise ConfigError(f"{where}.parameters.learnBatchLimit: expected true or false, got {learn!r}")
        self.learn = learn
        # address -> the most requests seen running while requests waited on it. A server queues only when
        # its batch (max-num-seqs) or KV cache is full, so that is its batch limit: an endpoint with
        # an empty queue but a full batch has no room either (metrics do not expose max-num-seqs).
        self.batch_limit: dict[str, float] = {}
        # address -> (the metrics object, requests sent to it since that scrape): free slots seen in
        # one scrape are not handed out again and again until the next scrape shows them taken.
        self.sent: dict[str, tuple[object, int]] = {}

    def has_headroom(self, e: Endpoint) -> bool:
        m = e.metrics
        if m.waiting > self.queue or m.kv_usage > self.kv:
            return False
        limit = self.batch_limit.get(e.address)
        if limit is None:
            return True
        seen, since = self.sent.get(e.address, (None, 0))
        return m.running + (since if seen is m else 0) < limit

    def on_picked(self, req: SchedRequest, chosen: Endpoint) -> None:
        if self.learn:
            m = chosen.metrics
            seen, since = self.sent.get(chosen.address, (None, 0))
            self.sent[chosen.address] = (m, since + 1 if seen is m else 1)

    def filter(self, req: SchedRequest, eps: list[Endpoint]) -> list[Endpoint]:
        # The result depends only on the snapshot and on whether the request is sheddable, so the
        # scheduler shares it per (snapshot, target, sheddable); it raises the 429 from shed_reason.
        if self.learn:
            limits = self.batch_limit
            for e in eps:
                m = e.metrics
                if m.waiting > 0 and m.running > limits.get(e.address, 0):
                    limits[e.address] = m.running
        if req.sheddable:
            room = [e for e in eps if self.has_headroom(e)]
            if room:
                return room
            req.scratch.setdefault("shed_reason", SHED_REASON)
            return eps  # shed by the scheduler
        q, kv = self.critical_queue, self.critical_kv
        if any(e.metrics.waiting <= q and e.metrics.kv_usage <= kv for e in eps):
            return eps  # the scorers decide: prefix and LoRA affinity are kept
        shortest = min(e.metrics.waiting for e in eps)
        return [e for e in eps if e.metrics.waiting <= shortest + self.slack]
