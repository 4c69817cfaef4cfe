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
    metrics: ServerMetrics = field(default_factory=ServerMetrics)
    last_ok: float = -1e18  # clock time of the last successful /metrics scrape
    scrape_errors: int = 0

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
        return model in m.running_loras or model in m.waiting_loras
