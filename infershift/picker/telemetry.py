"""Prometheus metrics: infershift's own (decisions, outcomes, scraped endpoint state, per-target
response evidence) and the endpoint picker's upstream names, so dashboards, alerts and autoscalers
built on the Gateway API Inference Extension's EPP (`inference_objective_*`, `inference_pool_*`,
`inference_extension_*`) or llm-d's (`llm_d_epp_*`) keep working.

The upstream families, their types, label names and buckets are upstream's (llm-d/llm-d-router
pkg/epp/metrics/metrics.go, llm_d_router_metrics.go and collectors/inference_pool.go;
`UPSTREAM` below, checked by tests/picker/test_picker_upstream_metrics.py against
tests/picker/testdata/upstream_epp_metrics.json). Request-side ones are recorded for every request;
response-side ones (latency, sizes, tokens, TTFT, NTPOT, running requests) for every response that
comes back to the picker (`telemetry.responseSampleRate`, 1 by default: all of them). Pool gauges are
computed from the endpoint snapshot when Prometheus scrapes.

With leader election (leader.py) the picker also exports the leader gauge upstream's EPP serves:
`leader_election_master_status{name=<lease>}`, 1 on the leader and 0 on a standby (`LEADER`
below). It is controller-runtime's (pkg/metrics/leaderelection.go at v0.23.3, the version
llm-d-router's go.mod pins), registered in the registry the EPP's /metrics serves
(cmd/epp/runner/runner.go: ctrlmetrics.Registry), and set by client-go's elector
(tools/leaderelection/leaderelection.go at v0.35.7: 0 when the elector is made, 1 on acquiring,
0 on failing to renew); `name` is the Lease's name. Here it is read from the elector at each
scrape, so it never lags a step-down. controller-runtime does not register client-go's slow-path
counter, so upstream exposes none and neither does the picker; infershift's own
`infershift_picker_leader_transitions_total{pool,event}` counts this replica's changes of
leadership (event: acquired, lost, released).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics, start_http_server
from prometheus_client.core import GaugeMetricFamily

from infershift import contract

_LAT = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
_DECISION = (0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05)

# --- upstream's buckets (pkg/epp/metrics/metrics.go, llm_d_router_metrics.go) -------------------------
GENERAL_LATENCY = (0.005, 0.025, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 1.0, 1.25, 1.5, 2, 3, 4, 5, 6, 8, 10, 15, 20, 30,
                   45, 60, 120, 180, 240, 300, 360, 480, 600, 900, 1200, 1800, 2700, 3600)
REQUEST_SIZE = (64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768, 65536, 131072, 262144, 524288, 1048576,
                2097152, 4194304, 8388608, 16777216, 33554432, 67108864, 134217728, 268435456, 536870912,
                1073741824)
RESPONSE_SIZE = (1, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32778, 65536)
INPUT_TOKENS = (1, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32778, 65536, 131072, 262144,
                524288, 1048576)
OUTPUT_TOKENS = (1, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192)
NTPOT = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)
TTFT = (0.005, 0.025, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 1.0, 1.25, 1.5, 2, 3, 4, 5, 6, 8, 10, 15, 20, 30, 45, 60,
        120)
FLOW_QUEUE = (0.0001, 0.0005, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
SCHEDULER = (0.0001, 0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1)

MODEL = ("model_name", "target_model_name")
MODEL_PRIORITY = ("model_name", "target_model_name", "priority")
LLMD = ("model_name", "target_model_name", "fairness_id", "priority")
POOL = ("name",)


@dataclass(frozen=True)
class Spec:
    name: str  # as exposed (counters with _total)
    type: str  # counter | gauge | histogram
    help: str
    labels: tuple[str, ...]
    buckets: tuple = ()


def _h(msg: str) -> str:
    return f"[ALPHA] {msg}"  # upstream's HelpMsgWithStability(msg, ALPHA)


def _dep(new: str, msg: str) -> str:
    return _h(f"[Deprecated: Use {new}] {msg}")


UPSTREAM: tuple[Spec, ...] = (
    # GIE's names (now deprecated twins upstream, still emitted there)
    Spec("inference_objective_request_total", "counter", _dep(
        "llm_d_epp_request_total", "Counter of inference objective requests broken out for each model and target model."),
        MODEL_PRIORITY),
    Spec("inference_objective_request_error_total", "counter", _dep(
        "llm_d_epp_request_error_total",
        "Counter of inference objective requests errors broken out for each model and target model."),
        MODEL + ("error_code",)),
    Spec("inference_objective_request_duration_seconds", "histogram", _dep(
        "llm_d_epp_request_duration_seconds",
        "Inference objective response latency distribution in seconds for each model and target model."),
        MODEL, GENERAL_LATENCY),
    Spec("inference_objective_request_sizes", "histogram", _dep(
        "llm_d_epp_request_size_bytes",
        "Inference objective requests size distribution in bytes for each model and target model."),
        MODEL, REQUEST_SIZE),
    Spec("inference_objective_response_sizes", "histogram", _dep(
        "llm_d_epp_response_size_bytes",
        "Inference objective responses size distribution in bytes for each model and target model."),
        MODEL, RESPONSE_SIZE),
    Spec("inference_objective_input_tokens", "histogram", _dep(
        "llm_d_epp_request_input_tokens", "Inference objective input token count distribution for requests in each model."),
        MODEL, INPUT_TOKENS),
    Spec("inference_objective_output_tokens", "histogram", _dep(
        "llm_d_epp_request_output_tokens",
        "Inference objective output token count distribution for requests in each model."),
        MODEL, OUTPUT_TOKENS),
    Spec("inference_objective_prompt_cached_tokens", "histogram", _dep(
        "llm_d_epp_request_cached_tokens",
        "Inference objective prompt cached token count distribution for requests in each model."),
        MODEL, INPUT_TOKENS),
    Spec("inference_objective_running_requests", "gauge", _dep(
        "llm_d_epp_request_running", "Inference objective number of running requests in each model."), ("model_name",)),
    Spec("inference_objective_normalized_time_per_output_token_seconds", "histogram", _dep(
        "llm_d_epp_request_ntpot_seconds",
        "Inference objective latency divided by number of output tokens in seconds for each model and target model."),
        MODEL, NTPOT),
    Spec("inference_pool_average_kv_cache_utilization", "gauge", _dep(
        "llm_d_epp_average_kv_cache_utilization", "The average kv cache utilization for an inference server pool."), POOL),
    Spec("inference_pool_average_queue_size", "gauge", _dep(
        "llm_d_epp_average_queue_size", "The average number of requests pending in the model server queue."), POOL),
    Spec("inference_pool_average_running_requests", "gauge", _dep(
        "llm_d_epp_average_running_requests",
        "The average number of running requests across model servers in the pool."), POOL),
    Spec("inference_pool_ready_pods", "gauge", _dep(
        "llm_d_epp_ready_endpoints", "The number of ready pods in the inference server pool."), POOL),
    Spec("inference_pool_per_pod_queue_size", "gauge", _h(
        "The total number of requests pending in the model server queue for each underlying pod."),
        ("name", "model_server_pod")),
    Spec("inference_extension_scheduler_e2e_duration_seconds", "histogram", _dep(
        "llm_d_epp_scheduler_e2e_duration_seconds", "End-to-end scheduling latency distribution in seconds."),
        (), SCHEDULER),
    Spec("inference_extension_info", "gauge", _h("General information of the current build of Inference Extension."),
         ("commit", "build_ref")),
    # llm-d's names
    Spec("llm_d_epp_request_total", "counter", _h("Total number of processed requests."), LLMD),
    Spec("llm_d_epp_request_error_total", "counter", _h("Total number of request errors."), LLMD + ("error_code",)),
    Spec("llm_d_epp_request_duration_seconds", "histogram", _h("End-to-end request latency distribution in seconds."),
         LLMD, GENERAL_LATENCY),
    Spec("llm_d_epp_request_size_bytes", "histogram", _h("Incoming request body size distribution in bytes."),
         LLMD, REQUEST_SIZE),
    Spec("llm_d_epp_response_size_bytes", "histogram", _h("Outgoing response body size distribution in bytes."),
         LLMD, RESPONSE_SIZE),
    Spec("llm_d_epp_request_input_tokens", "histogram", _h("Input token count distribution per request."),
         LLMD, INPUT_TOKENS),
    Spec("llm_d_epp_request_output_tokens", "histogram", _h("Output token count distribution per request."),
         LLMD, OUTPUT_TOKENS),
    Spec("llm_d_epp_request_cached_tokens", "histogram", _h(
        "Distribution of prompt tokens read from cache per request, as reported by the model server in the response."),
        LLMD, INPUT_TOKENS),
    Spec("llm_d_epp_request_running", "gauge", _h("Current number of active running requests."), LLMD),
    Spec("llm_d_epp_flow_control_request_queue_duration_seconds", "histogram", _h(
        "Distribution of total time requests spend in the Flow Control layer (from enqueue to final outcome)."),
        ("fairness_id", "priority", "outcome", "inference_pool", *MODEL), FLOW_QUEUE),
    Spec("llm_d_epp_flow_control_queue_size", "gauge", _h(
        "Current number of requests actively held in the Flow Control queue."),
        ("fairness_id", "priority", "inference_pool", *MODEL)),
    Spec("llm_d_epp_flow_control_requests_total", "counter", _h(
        "Total number of requests processed by the Flow Control layer."), ("outcome", "priority", "inference_pool")),
    Spec("llm_d_epp_request_ntpot_seconds", "histogram", _h(
        "Normalized time per output token in seconds (end-to-end latency divided by output token count)."),
        LLMD, NTPOT),
    Spec("llm_d_epp_request_ttft_seconds", "histogram", _h(
        "Time to first token in seconds, measured from request received to first response byte. For non-streaming "
        "requests, this equals total request duration."), LLMD + ("streaming",), TTFT),
    Spec("llm_d_epp_average_kv_cache_utilization", "gauge", _h(
        "The average kv cache utilization for an inference server pool."), POOL),
    Spec("llm_d_epp_average_queue_size", "gauge", _h(
        "The average number of requests pending in the model server queue."), POOL),
    Spec("llm_d_epp_average_running_requests", "gauge", _h(
        "The average number of running requests across model servers in the pool."), POOL),
    Spec("llm_d_epp_std_dev_kv_cache_utilization", "gauge", _h(
        "The standard deviation kv cache utilization for an inference server pool."), POOL),
    Spec("llm_d_epp_std_dev_queue_size", "gauge", _h(
        "The standard deviation number of requests pending in the model server queue."), POOL),
    Spec("llm_d_epp_std_dev_running_requests", "gauge", _h(
        "The standard deviation number of running requests across model servers in the pool."), POOL),
    Spec("llm_d_epp_ready_endpoints", "gauge", _h("The number of ready endpoints in the inference server pool."),
         POOL),
    Spec("llm_d_epp_per_endpoint_queue_size", "gauge", _h(
        "The total number of requests pending in the model server queue for each underlying endpoint."),
        ("name", "model_server_endpoint")),
    Spec("llm_d_epp_scheduler_e2e_duration_seconds", "histogram", _h(
        "End-to-end scheduling latency distribution in seconds."), (), SCHEDULER),
    Spec("llm_d_epp_info", "gauge", _h("General information of the current build of Inference Extension."),
         ("commit", "build_ref")),
)
_POOL_GAUGES = {s.name: s for s in UPSTREAM if s.labels and s.labels[0] == "name"}

# controller-runtime's leader gauge (see the module docstring): name, type, HELP and label as upstream's /metrics has them
LEADER = Spec("leader_election_master_status", "gauge",
              "Gauge of if the reporting system is master of the relevant lease, 0 indicates backup, 1 indicates "
              "master. 'name' is the string used to identify the lease. Please make sure to group by name.", ("name",))
LEADER_EVENTS = ("acquired", "lost", "released")  # leader.LeaderElector.on_change's events

# upstream's error codes (llm-d-router pkg/common/error/error.go) for the picker's own rejections
_ERROR_CODES = {400: "BadRequest", 404: "NotFound", 413: "BadRequest", 429: "ResourceExhausted",
                503: "ServiceUnavailable"}
MODEL_SERVER_ERROR = "ModelServerError"  # upstream: any response status other than 200
# upstream's metadata.DefaultFairnessID and request header names (llm-d-router pkg/epp/metadata/consts.go),
# current name first; the contract module carries them (getattr: it may predate them)
DEFAULT_FAIRNESS_ID = getattr(contract, "DEFAULT_FAIRNESS_ID", "default-flow")
FAIRNESS_HEADERS = getattr(contract, "FAIRNESS_HEADERS",
                           ("x-llm-d-inference-fairness-id", "x-gateway-inference-fairness-id"))
OBJECTIVE_HEADERS = getattr(contract, "OBJECTIVE_HEADERS", ("x-llm-d-inference-objective", contract.OBJECTIVE_HEADER))
MAX_LABEL_VALUES = 1000  # upstream's maxModelLabelValues; more distinct values read "other"
INFLIGHT_TTL = 600.0  # a running request whose response never came back stops counting after this


def error_code(status: int) -> str:
    return _ERROR_CODES.get(status, "Internal" if status >= 500 else "BadRequest")


class _Bounded:
    def __init__(self, cap: int = MAX_LABEL_VALUES):
        self.cap = cap
        self.seen: set[str] = set()

    def __call__(self, v: str) -> str:
        if not v or v in self.seen:
            return v
        if len(self.seen) >= self.cap:
            return "other"
        self.seen.add(v)
        return v


@dataclass
class RequestLabels:
    """The upstream label values of one request, fixed when it is routed (they travel with the
    hand-over to the response stream)."""

    model: str
    target: str
    priority: str = "0"
    fairness: str = DEFAULT_FAIRNESS_ID


def priority_of(cfg, client_model: str, headers: dict) -> int:
    """The request's priority as routing sees it: an InferenceObjective the request names, else one
    annotated for its model, else its model route's priority or criticality; 0 by default."""
    for h in OBJECTIVE_HEADERS:
        name = headers.get(h)
        if name and name in cfg.objectives:
            return int(cfg.objectives[name])
    if client_model in cfg.model_priorities:
        return int(cfg.model_priorities[client_model])
    route = cfg.models.get(client_model)
    if route is not None:
        if route.priority is not None:
            return int(route.priority)
        return contract.CRITICALITY_PRIORITY.get(route.criticality, 0)
    return 0


def fairness_of(headers: dict) -> str:
    for h in FAIRNESS_HEADERS:
        v = headers.get(h)
        if v:
            return v
    return DEFAULT_FAIRNESS_ID


class _PoolCollector:
    """inference_pool_* / llm_d_epp_* pool gauges from the pool's endpoints, computed per scrape as
    upstream's refresher does: ready = endpoints with fresh metrics; averages and standard deviations
    over those (the last values stay when none is ready); per-endpoint queues over all endpoints."""

    def __init__(self, telemetry: Telemetry):
        self.tm = telemetry
        self.last: dict[str, float] = {}

    def describe(self):
        return []

    def collect(self):
        pool = self.tm.pool
        if pool is None:
            return
        cfg = pool.gen.config
        name = cfg.pool_name
        # runs on the metrics server's thread: copy the endpoints first (one C call, atomic under the GIL)
        eps = list(pool.endpoints.values())
        now = pool.clock()
        fresh = [e for e in eps if now - e.last_ok <= cfg.stale_after]
        values = {"inference_pool_ready_pods": float(len(fresh)), "llm_d_epp_ready_endpoints": float(len(fresh))}
        if fresh:
            for key, attr in (("kv_cache_utilization", "kv_usage"), ("queue_size", "waiting"),
                              ("running_requests", "running")):
                xs = [getattr(e.scraped, attr) for e in fresh]
                mean = sum(xs) / len(xs)
                std = math.sqrt(sum((x - mean) ** 2 for x in xs) / len(xs))
                self.last[f"inference_pool_average_{key}"] = self.last[f"llm_d_epp_average_{key}"] = mean
                self.last[f"llm_d_epp_std_dev_{key}"] = std
        values.update(self.last)
        for metric, v in values.items():
            s = _POOL_GAUGES[metric]
            g = GaugeMetricFamily(s.name, s.help, labels=["name"])
            g.add_metric([name], v)
            yield g
        for metric, label in (("inference_pool_per_pod_queue_size", "model_server_pod"),
                              ("llm_d_epp_per_endpoint_queue_size", "model_server_endpoint")):
            g = GaugeMetricFamily(metric, _POOL_GAUGES[metric].help, labels=["name", label])
            for e in eps:
                g.add_metric([name, e.name], e.scraped.waiting)
            yield g


class _LeaderCollector:
    """leader_election_master_status from the election at each scrape (no series without one)."""

    def __init__(self, telemetry: Telemetry):
        self.tm = telemetry

    def describe(self):
        return []

    def collect(self):
        election = self.tm.election
        if election is None:
            return
        g = GaugeMetricFamily(LEADER.name, LEADER.help, labels=list(LEADER.labels))
        g.add_metric([election.cfg.name], 1.0 if election.leading else 0.0)
        yield g


class Telemetry:
    def __init__(self, registry: CollectorRegistry | None = None, build: tuple[str, str] = ("", "")):
        disable_created_metrics()  # no `_created` series: upstream's Go client exposes none
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
        self.tokens = Counter(p + "target_tokens_total", "Tokens reported in responses' usage, by target model",
                              ["pool", "target_model", "kind"], registry=r)
        self.leader_transitions = Counter(p + "leader_transitions_total",
                                          "Changes of this replica's leadership of the pool's Lease (acquired; lost: "
                                          "no renewal within the renew deadline; released: on shutdown)",
                                          ["pool", "event"], registry=r)
        # upstream's names
        self.up = {}
        for s in UPSTREAM:
            if s.name in _POOL_GAUGES or s.name.endswith("_info"):
                continue
            base = s.name[:-6] if s.type == "counter" else s.name
            cls = {"counter": Counter, "gauge": Gauge, "histogram": Histogram}[s.type]
            kw = {"buckets": s.buckets} if s.type == "histogram" else {}
            self.up[s.name] = cls(base, s.help, list(s.labels), registry=r, **kw)
        for s in UPSTREAM:
            if s.name.endswith("_info"):
                Gauge(s.name, s.help, list(s.labels), registry=r).labels(*build).set(1)
        self.pool = None
        r.register(_PoolCollector(self))
        self.election = None
        r.register(_LeaderCollector(self))
        self._children: dict = {}
        self._model = _Bounded()
        self._fairness = _Bounded()
        self._inflight: dict[str, tuple[float, tuple]] = {}
        self._sweep_at = 0.0
        u = self.up
        self._sched = (u["inference_extension_scheduler_e2e_duration_seconds"],
                       u["llm_d_epp_scheduler_e2e_duration_seconds"])

    def attach_pool(self, pool) -> None:
        """The pool whose endpoints the pool gauges describe."""
        self.pool = pool

    def attach_election(self, election, pool: str) -> None:
        """The leader election (leader.Election) the leader gauge reads; its changes of leadership
        count in leader_transitions_total (every event's series starts at 0)."""
        self.election = election
        for event in LEADER_EVENTS:
            self.child(self.leader_transitions, pool, event)
        election.on_change = lambda event: self.child(self.leader_transitions, pool, event).inc()

    def child(self, metric, *labels):
        """metric.labels(*labels), memoised: prometheus_client validates labels on every call."""
        key = (id(metric), labels)
        c = self._children.get(key)
        if c is None:
            c = self._children[key] = metric.labels(*labels) if labels else metric
        return c

    def serve(self, host: str, port: int):
        return start_http_server(port, addr=host, registry=self.registry)

    # --- request path -------------------------------------------------------------------------

    def decided(self, pool: str, seconds: float) -> None:
        self.child(self.decision, pool).observe(seconds)
        for h in self._sched:
            h.observe(seconds)

    def labels_for(self, cfg, client_model: str | None, target_model: str | None, headers: dict) -> RequestLabels:
        client = self._model(client_model or "")
        return RequestLabels(client, self._model(target_model or client), str(priority_of(cfg, client, headers)),
                             self._fairness(fairness_of(headers)))

    def handover_labels(self, client: str, target: str, priority: str, fairness: str) -> RequestLabels:
        """The labels a request-path stream (maybe another replica) fixed, as the response stream got them."""
        return RequestLabels(self._model(client), self._model(target), priority, self._fairness(fairness))

    def request_error(self, cfg, model: str, status: int, headers: dict) -> None:
        """A request the picker rejected (400/404/413/429/503...)."""
        lab = self.labels_for(cfg, model, "", headers)
        code = error_code(status)
        u, c = self.up, self.child
        c(u["inference_objective_request_error_total"], lab.model, lab.target, code).inc()
        c(u["llm_d_epp_request_error_total"], lab.model, lab.target, lab.fairness, lab.priority, code).inc()

    def request_routed(self, lab: RequestLabels, body_size: int, request_id: str | None) -> None:
        """A routed request; with `request_id` its response will come back, so it counts as running."""
        u, c = self.up, self.child
        m, t, f, p = lab.model, lab.target, lab.fairness, lab.priority
        c(u["inference_objective_request_total"], m, t, p).inc()
        c(u["llm_d_epp_request_total"], m, t, f, p).inc()
        if body_size:
            c(u["inference_objective_request_sizes"], m, t).observe(body_size)
            c(u["llm_d_epp_request_size_bytes"], m, t, f, p).observe(body_size)
        if request_id is not None and m:
            self._running(lab, 1)
            now = time.monotonic()
            self._inflight[request_id] = (now, (m, t, f, p))
            if now >= self._sweep_at:
                self._sweep(now)

    def flow_queued(self, lab: RequestLabels, d: int) -> None:
        """A request joined (1) or left (-1) a flow-control queue."""
        pool = self.pool.gen.config.pool_name if self.pool is not None else ""
        self.child(self.up["llm_d_epp_flow_control_queue_size"], lab.fairness, lab.priority, pool, lab.model,
                   lab.target).inc(d)

    def flow_outcome(self, lab: RequestLabels, outcome: str, waited: float) -> None:
        """How a request left flow control (upstream's outcome names) and how long it was there."""
        pool = self.pool.gen.config.pool_name if self.pool is not None else ""
        u, c = self.up, self.child
        c(u["llm_d_epp_flow_control_requests_total"], outcome, lab.priority, pool).inc()
        c(u["llm_d_epp_flow_control_request_queue_duration_seconds"], lab.fairness, lab.priority, outcome, pool,
          lab.model, lab.target).observe(waited)

    def _running(self, lab: RequestLabels, d: int) -> None:
        u, c = self.up, self.child
        c(u["inference_objective_running_requests"], lab.model).inc(d)
        c(u["llm_d_epp_request_running"], lab.model, lab.target, lab.fairness, lab.priority).inc(d)

    def _sweep(self, now: float) -> None:
        self._sweep_at = now + 10.0
        old = [k for k, (t, _) in self._inflight.items() if now - t > INFLIGHT_TTL]
        for k in old:
            _, (m, t, f, p) = self._inflight.pop(k)
            self._running(RequestLabels(m, t, p, f), -1)

    # --- response path ------------------------------------------------------------------------

    def response_done(self, pool: str, lab: RequestLabels, status: int, ttfb: float | None, first_byte: float | None,
                      total: float | None, size: int | None, usage: tuple | None, streaming: bool,
                      request_id: str | None) -> None:
        """One response that came back: infershift's per-target series and upstream's request metrics.
        `usage` is (prompt, completion, cached) tokens from the body, if it had them."""
        c, u = self.child, self.up
        m, t, f, p = lab.model, lab.target, lab.fairness, lab.priority
        c(self.resp_status, pool, t, str(status) if status else "none").inc()
        if ttfb is not None:
            c(self.ttfb, pool, t).observe(ttfb)
        if total is not None:
            c(self.latency, pool, t).observe(total)
        if request_id is not None and self._inflight.pop(request_id, None) is not None:
            self._running(lab, -1)
        if status and status != 200:
            c(u["inference_objective_request_error_total"], m, t, MODEL_SERVER_ERROR).inc()
            c(u["llm_d_epp_request_error_total"], m, t, f, p, MODEL_SERVER_ERROR).inc()
        if total is not None and total > 0:
            c(u["inference_objective_request_duration_seconds"], m, t).observe(total)
            c(u["llm_d_epp_request_duration_seconds"], m, t, f, p).observe(total)
        if size is not None:
            c(u["inference_objective_response_sizes"], m, t).observe(size)
            c(u["llm_d_epp_response_size_bytes"], m, t, f, p).observe(size)
        ttft = first_byte if first_byte is not None else ttfb
        if ttft is not None and ttft > 0:
            c(u["llm_d_epp_request_ttft_seconds"], m, t, f, p, "true" if streaming else "false").observe(ttft)
        if usage is not None:
            prompt, completion, cached = usage
            if prompt:
                c(u["inference_objective_input_tokens"], m, t).observe(prompt)
                c(u["llm_d_epp_request_input_tokens"], m, t, f, p).observe(prompt)
                c(self.tokens, pool, t, "prompt").inc(prompt)
            if completion:
                c(u["inference_objective_output_tokens"], m, t).observe(completion)
                c(u["llm_d_epp_request_output_tokens"], m, t, f, p).observe(completion)
                c(self.tokens, pool, t, "completion").inc(completion)
                if total is not None and total > 0:
                    c(u["inference_objective_normalized_time_per_output_token_seconds"], m, t).observe(total / completion)
                    c(u["llm_d_epp_request_ntpot_seconds"], m, t, f, p).observe(total / completion)
            if cached is not None:
                c(u["inference_objective_prompt_cached_tokens"], m, t).observe(cached)
                c(u["llm_d_epp_request_cached_tokens"], m, t, f, p).observe(cached)

    # --- endpoints ----------------------------------------------------------------------------

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


class UsageReader:
    """Token usage and size of a response body as it passes (JSON whole, or SSE chunk by chunk):
    the last `"usage"` object seen wins (vLLM and SGLang put it in the last SSE event with
    stream_options.include_usage, and in the JSON body)."""

    __slots__ = ("size", "tail", "usage", "chunks")

    def __init__(self):
        self.size = 0
        self.tail = b""
        self.usage: tuple | None = None
        self.chunks = 0

    def feed(self, data: bytes) -> None:
        self.size += len(data)
        self.chunks += 1
        buf = self.tail + data if self.tail else data
        i = buf.rfind(b'"usage"')
        if i >= 0:
            self._parse(buf[i:])
        # keep enough of the end for a usage object cut across chunks
        self.tail = buf[-512:] if len(buf) > 512 else buf

    def _parse(self, s: bytes) -> None:
        import orjson

        start = s.find(b"{")
        if start < 0:
            return
        depth = 0
        for j in range(start, len(s)):
            ch = s[j]
            if ch == 123:  # {
                depth += 1
            elif ch == 125:  # }
                depth -= 1
                if depth == 0:
                    try:
                        u = orjson.loads(s[start:j + 1])
                    except orjson.JSONDecodeError:
                        return
                    if isinstance(u, dict):
                        details = u.get("prompt_tokens_details")
                        cached = details.get("cached_tokens") if isinstance(details, dict) else None
                        self.usage = (_count(u.get("prompt_tokens")), _count(u.get("completion_tokens")),
                                      _count(cached) if cached is not None else None)
                    return


def _count(v) -> int:
    return v if isinstance(v, int) and not isinstance(v, bool) and v > 0 else 0
