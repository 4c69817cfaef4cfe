"""The pool's endpoints and what the picker last learned about each one."""
from __future__ import annotations

from dataclasses import dataclass, field

from .metrics_parse import ServerMetrics


@dataclass(eq=False)
class Endpoint:
    address: str  # "ip:port", what Envoy dials
    name: str
    static_models: frozenset | None = None  # from config; None: learn from /v1/models
    served_models: frozenset | None = None  # from GET /v1/models
    base_models: frozenset = frozenset()  # /v1/models entries without a parent (not adapters)
    # What the scheduler reads: the last scrape while it is fresh, a saturated view once it is stale
    # (Pool.snapshot swaps it). `scraped` is always the last good scrape itself.
    metrics: ServerMetrics = field(default_factory=ServerMetrics)
    scraped: ServerMetrics = field(default_factory=ServerMetrics)
    last_ok: float = -1e18  # clock time of the last successful /metrics scrape
    scrape_errors: int = 0
    engine: str | None = None  # from the pod label llm-d.ai/engine-type or the endpoint's config; None: pool's
    labels: dict = field(default_factory=dict)  # the pod's labels (Kubernetes) or the endpoint's `labels:`
    stale: bool = False  # no good scrape within staleAfter: routable, but as a saturated server
    unknown_engine: str | None = None  # why the last page was not understood (None: it was)
    # Adapters the pool's servers load on demand (lora.onDemand): adapter -> lora.Rule. Set by the pool.
    on_demand: dict = field(default_factory=dict)

    def fresh(self, now: float, stale_after: float) -> bool:
        return now - self.last_ok <= stale_after

    def models(self) -> frozenset | None:
        """Names this endpoint answers to (base models and registered adapters); None if unknown."""
        known = self.static_models if self.static_models is not None else self.served_models
        if known is None:
            return None
        m = self.metrics
        return known | m.running_loras | m.waiting_loras

    def can_serve(self, model: str) -> bool:
        known = self.static_models if self.static_models is not None else self.served_models
        if known is None or model in known:
            return True
        m = self.metrics  # adapters the server reports loaded or queued count too
        if model in m.running_loras or model in m.waiting_loras:
            return True
        rule = self.on_demand.get(model)
        if rule is None:
            return False
        if self.served_models and model in self.served_models:  # loaded on demand (static models kept)
            return True
        if rule.base not in known:
            return False
        # the server resolves it itself; or the picker loads it: only here if it is nowhere yet, or here
        return rule.path is None or not rule.where or self.address in rule.where
