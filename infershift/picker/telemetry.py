"""Prometheus metrics: decisions, outcomes, scraped endpoint state, and per-target response evidence."""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

_LAT = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
_DECISION = (0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05)


class Telemetry:
    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = r = registry or CollectorRegistry()
        p = "infershift_picker_"
        self.requests = Counter(p + "requests_total", "Requests decided by the picker",
                                ["pool", "model", "target_model", "endpoint", "outcome"], registry=r)
        self.decision = Histogram(p + "decision_seconds", "Time to decide one request (parse, route, schedule)",
                                  ["pool"], buckets=_DECISION, registry=r)
        self.shed = Counter(p + "shed_total", "Requests shed (429) under saturation", ["pool", "model"], registry=r)
        self.errors = Counter(p + "errors_total", "Requests rejected with an error status",
                              ["pool", "status", "code"], registry=r)
        self.served = Counter(p + "served_total", "Responses by the endpoint Envoy reports as having served them",
                              ["pool", "endpoint", "picked"], registry=r)
        self.ep_waiting = Gauge(p + "endpoint_queue_depth", "Scraped waiting requests", ["pool", "endpoint"], registry=r)
        self.ep_running = Gauge(p + "endpoint_running_requests", "Scraped running requests", ["pool", "endpoint"], registry=r)
        self.ep_kv = Gauge(p + "endpoint_kv_cache_usage", "Scraped KV-cache usage (0..1)", ["pool", "endpoint"], registry=r)
        self.ep_loras = Gauge(p + "endpoint_active_loras", "Scraped running LoRA adapters", ["pool", "endpoint"], registry=r)
        self.ep_last_ok = Gauge(p + "endpoint_last_scrape_timestamp_seconds", "Unix time of the last good /metrics scrape",
                                ["pool", "endpoint"], registry=r)
        self.ep_scrape_err = Counter(p + "endpoint_scrape_errors_total", "Failed /metrics scrapes",
                                     ["pool", "endpoint"], registry=r)
        self.ep_scrape_fail = Counter(p + "endpoint_scrape_failures_total",
                                      "Failed /metrics scrapes by reason (unreachable, bad_value: NaN or infinite, "
                                      "unknown_engine: none of the metrics the picker reads)",
                                      ["pool", "endpoint", "reason"], registry=r)
        self.ep_unknown = Gauge(p + "endpoint_unknown_engine",
                                "1 while the endpoint's metrics page has none of the metrics the picker reads "
                                "(the endpoint then counts as saturated, not idle)", ["pool", "endpoint"], registry=r)
        self.resp_status = Counter(p + "target_responses_total", "Responses by target model and HTTP status",
                                   ["pool", "target_model", "status"], registry=r)
        self.ttfb = Histogram(p + "target_ttfb_seconds", "Time from request to response headers, by target model",
                              ["pool", "target_model"], buckets=_LAT, registry=r)
        self.latency = Histogram(p + "target_latency_seconds", "Time from request to end of response, by target model",
                                 ["pool", "target_model"], buckets=_LAT, registry=r)
        self._children: dict = {}

    def child(self, metric, *labels):
        """metric.labels(*labels), memoised: prometheus_client validates labels on every call."""
        key = (id(metric), labels)
        c = self._children.get(key)
        if c is None:
            c = self._children[key] = metric.labels(*labels)
        return c

    def serve(self, host: str, port: int):
        return start_http_server(port, addr=host, registry=self.registry)

    def decided(self, pool: str, seconds: float) -> None:
        self.child(self.decision, pool).observe(seconds)

    def observe_endpoint(self, pool: str, ep) -> None:
        m, a = ep.metrics, ep.address
        self.child(self.ep_waiting, pool, a).set(m.waiting)
        self.child(self.ep_running, pool, a).set(m.running)
        self.child(self.ep_kv, pool, a).set(m.kv_usage)
        self.child(self.ep_loras, pool, a).set(len(m.running_loras))
        self.child(self.ep_last_ok, pool, a).set_to_current_time()

    def scrape_error(self, pool: str, ep, reason: str = "unreachable") -> None:
        self.child(self.ep_scrape_err, pool, ep.address).inc()
        self.child(self.ep_scrape_fail, pool, ep.address, reason).inc()

    def unknown_engine(self, pool: str, ep, unknown: bool) -> None:
        self.child(self.ep_unknown, pool, ep.address).set(1 if unknown else 0)

    def forget_endpoint(self, addr: str) -> None:
        self._children = {k: v for k, v in self._children.items() if addr not in k[1]}
        for g in (self.ep_waiting, self.ep_running, self.ep_kv, self.ep_loras, self.ep_last_ok, self.ep_unknown):
            for labels in list(g._metrics):  # prometheus_client keeps children keyed by label tuple
                if labels[-1] == addr:
                    g.remove(*labels)
