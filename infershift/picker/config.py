"""The picker's config file: parse and validate it into plain data, naming the field on error."""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from typing import Any

import yaml

from infershift import contract

from .errors import ConfigError

log = logging.getLogger("picker.config")

CRITICALITIES = contract.CRITICALITIES
POOL_API_VERSIONS = (contract.POOL_V1, contract.POOL_V1ALPHA2)
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m)?\s*$")


@dataclass(frozen=True)
class StaticEndpoint:
    address: str  # "ip:port"
    name: str
    models: tuple[str, ...] | None  # None: learn from the server
    labels: tuple[tuple[str, str], ...] = ()  # the pod's labels (Kubernetes discovery) or the endpoint's `labels:`
    engine: str | None = None  # model server engine (metrics_parse.ENGINES); None: the pod label, else the pool's


@dataclass(frozen=True)
class OnDemandAdapter:
    """A LoRA adapter the pool's servers load when a request asks for it (lora.onDemand)."""

    name: str
    base: str  # the base model it applies to: endpoints serving it can load it
    path: str | None = None  # the picker loads it via POST /v1/load_lora_adapter; None: the server resolves it


@dataclass(frozen=True)
class Target:
    model: str
    weight: int


@dataclass(frozen=True)
class ModelRoute:
    name: str
    targets: tuple[Target, ...]
    criticality: str = "Standard"
    priority: int | None = None

    @property
    def sheddable(self) -> bool:
        if self.priority is not None:
            return self.priority < 0
        return self.criticality == "Sheddable"


@dataclass(frozen=True)
class PluginSpec:
    type: str
    name: str
    parameters: dict


@dataclass(frozen=True)
class ProfileSpec:
    filters: tuple[str, ...]
    scorers: tuple[tuple[str, float], ...]
    picker: str
    name: str = "default"


@dataclass(frozen=True)
class DataLayerSpec:
    """What an EndpointPickerConfig's data layer says about the model servers' metrics (the
    core-metrics-extractor's parameters); the picker scrapes /metrics and /v1/models itself."""

    engine_label_key: str = "llm-d.ai/engine-type"
    # upstream's default is vllm; without a defaultEngine the picker recognises the page (metrics_parse)
    default_engine: str = "auto"


@dataclass(frozen=True)
class BandSpec:
    """One priority band of flow control (upstream's PriorityBandConfig): its queue limits and the
    policies that pick the next flow (fairness id) and the next request within it."""

    priority: int | None = None  # None: the template for bands made on demand
    max_requests: int = 5000  # upstream's defaults (registry/config.go)
    max_bytes: int = 1_000_000_000
    fairness: str = "round-robin-fairness-policy"  # a plugin *type*: round-robin or global-strict
    ordering: str = "fcfs-ordering-policy"


@dataclass(frozen=True)
class FlowSpec:
    """Flow control (the `flowControl` feature gate and section of an EndpointPickerConfig): requests
    wait in the picker by priority band until an endpoint has capacity (flowcontrol.py)."""

    ttl: float = 60.0  # defaultRequestTTL: the longest a request waits in the picker
    no_endpoint_ttl: float | None = None  # noEndpointRequestTTL: waiting while the pool has no endpoint
    max_requests: int | None = None  # global limits over all bands (None: none)
    max_bytes: int | None = None
    bands: tuple[BandSpec, ...] = ()
    default_band: BandSpec = BandSpec()
    default_negative_band: BandSpec | None = None
    detector: str | None = None  # the plugin (by name) that says which endpoints have capacity

    def band(self, priority: int) -> BandSpec:
        for b in self.bands:
            if b.priority == priority:
                return b
        if priority < 0 and self.default_negative_band is not None:
            return self.default_negative_band
        return self.default_band


@dataclass(frozen=True)
class SchedulingSpec:
    """One scheduling profile, resolved: the plugins to build and which of them fill the profile's
    filter, scorer and picker slots. Parsed from an EndpointPickerConfig (`scheduling/epc.py`) or
    from the deprecated `{plugins, profile}` form."""

    plugins: tuple[PluginSpec, ...]
    profile: ProfileSpec
    # a plugin (by name) whose saturation gates sheddable requests before the profile runs
    saturation_detector: str | None = None
    feature_gates: tuple[str, ...] = ()
    data_layer: DataLayerSpec = DataLayerSpec()
    # flow control: on with the flowControl feature gate (None: off; a flowControl section without
    # the gate is checked and unused, as upstream)
    flow_control: FlowSpec | None = None
    source: str = "EndpointPickerConfig"  # or "legacy" (the deprecated form)


@dataclass(frozen=True)
class AnswerLogSpec:
    """`answerLog`: one JSON log line per answer for the shadow report (picker/answers.py)."""

    max_text_chars: int = 2000  # the answer text kept in the line (its hash covers all of it)


@dataclass(frozen=True)
class PickerConfig:
    pool_name: str = "default-pool"
    pool_namespace: str = "default"
    endpoints: tuple[StaticEndpoint, ...] | None = None
    kubernetes: dict | None = None
    models: dict[str, ModelRoute] = field(default_factory=dict)
    objectives: dict[str, int] = field(default_factory=dict)  # InferenceObjective name -> priority
    # client model name -> priority, from InferenceObjectives annotated infershift.io/model-name
    model_priorities: dict[str, int] = field(default_factory=dict)
    session_header: str | None = None
    failure_mode: str = "FailOpen"
    max_body_bytes: int = 20 * 1024 * 1024
    poll_interval: float = 0.05
    stale_after: float = 1.0
    models_interval: float = 2.0
    # share of responses that are not rewritten but still come back to the picker for per-target
    # telemetry (status, TTFB, latency, tokens, served endpoint); only with the two-filter Envoy setup
    response_sample_rate: float = 1.0
    # the `model` of a response whose target was rewritten: "served" (the target, what the server
    # says and the guides show) or "client" (the name the client asked for)
    response_model: str = "served"
    metrics_port: int | None = None  # scrape this port instead of the endpoint's (Triton: 8002)
    lora_on_demand: dict[str, OnDemandAdapter] = field(default_factory=dict)  # lora.onDemand, by adapter name
    scheduling: SchedulingSpec = None  # type: ignore[assignment]
    # None: off (the default; no per-answer work at all). Set: every answer logged (answers.py)
    answer_log: AnswerLogSpec | None = None

    def with_models(self, models: dict[str, ModelRoute], objectives: dict[str, int]) -> PickerConfig:
        from dataclasses import replace

        return replace(self, models=models, objectives=objectives)


# The picker's default scheduling, as an EndpointPickerConfig (the format of llm-d's and the
# Gateway API Inference Extension's endpoint picker). Flow control is on (requests wait in the
# picker by priority while no endpoint has room in its batch: README "Flow control"), with half of
# upstream's 60 s queue TTL so a wait ends before the gateways' 60 s longest message timeout;
# infershift's own filters keep placement by criticality (README, "Admission"); the scorers and
# weights are upstream's Helm default plus LoRA affinity.
DEFAULT_SCHEDULING: dict = {
    "apiVersion": "llm-d.ai/v1alpha1",
    "kind": "EndpointPickerConfig",
    "featureGates": ["flowControl"],
    "flowControl": {"defaultRequestTTL": "30s", "saturationDetector": {"pluginRef": "batch-capacity-detector"}},
    "plugins": [
        {"type": "batch-capacity-detector", "parameters": {"queueDepthThreshold": 0, "kvCacheUtilThreshold": 0.8,
                                                         "headroom": 0.5}},
        {"type": "model-filter"},
        {"type": "saturation-filter", "parameters": {"queueDepthThreshold": 5, "kvCacheThreshold": 0.8}},
        {"type": "admission-filter",
         "parameters": {"queueDepthThreshold": 0, "kvCacheThreshold": 0.7, "criticalQueueDepthThreshold": 5,
                        "criticalKvCacheThreshold": 0.8, "criticalQueueSlack": 1, "learnBatchLimit": False}},
        {"type": "queue-scorer"},
        {"type": "kv-cache-utilization-scorer"},
        {"type": "lora-affinity-scorer"},
        {"type": "prefix-cache-scorer", "parameters": {"blockSize": 64, "lruCapacityPerServer": 31250}},
        {"type": "max-score-picker"},
    ],
    "schedulingProfiles": [{
        "name": "default",
        "plugins": [
            {"pluginRef": "model-filter"},
            {"pluginRef": "saturation-filter"},
            {"pluginRef": "admission-filter"},
            {"pluginRef": "queue-scorer", "weight": 2},
            {"pluginRef": "kv-cache-utilization-scorer", "weight": 2},
            {"pluginRef": "lora-affinity-scorer", "weight": 1},
            {"pluginRef": "prefix-cache-scorer", "weight": 3},
            {"pluginRef": "max-score-picker"},
        ],
    }],
}


def parse_duration(value: Any, where: str) -> float:
    """'50ms' / '1s' / '2m' / a number of seconds -> seconds."""
    if isinstance(value, bool):
        raise ConfigError(f"{where}: expected a duration like '50ms' or '1s', got {value!r}")
    if isinstance(value, (int, float)):
        seconds = float(value)
    else:
        m = _DURATION.match(str(value))
        if not m:
            raise ConfigError(f"{where}: expected a duration like '50ms' or '1s', got {value!r}")
        seconds = float(m.group(1)) * {"ms": 0.001, "s": 1.0, "m": 60.0, None: 1.0}[m.group(2)]
    if seconds <= 0:
        raise ConfigError(f"{where}: must be positive, got {value!r}")
    return seconds


def _mapping(value: Any, where: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(value).__name__}")
    return value


def _keys(d: dict, allowed: set[str], where: str) -> None:
    unknown = sorted(set(d) - allowed)
    if unknown:
        raise ConfigError(f"{where}: unknown field(s) {', '.join(unknown)} (allowed: {', '.join(sorted(allowed))})")


def _str(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{where}: expected a non-empty string, got {value!r}")
    return value


def parse_address(value: Any, where: str) -> str:
    addr = _str(value, where)
    host, sep, port = addr.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"{where}: expected 'ip:port', got {addr!r}")
    return addr


def parse_targets(raw: Any, where: str) -> tuple[Target, ...]:
    if not isinstance(raw, list) or not raw:
        raise ConfigError(f"{where}: expected a non-empty list of {{model, weight}}")
    out = []
    for i, t in enumerate(raw):
        w = f"{where}[{i}]"
        t = _mapping(t, w)
        _keys(t, {"model", "weight"}, w)
        weight = t.get("weight", 1)
        if isinstance(weight, bool) or not isinstance(weight, int) or weight < 0:
            raise ConfigError(f"{w}.weight: expected a non-negative integer, got {weight!r}")
        out.append(Target(_str(t.get("model"), f"{w}.model"), weight))
    if sum(t.weight for t in out) <= 0:
        raise ConfigError(f"{where}: weights must not all be zero")
    return tuple(out)


def parse_model_route(name: str, raw: Any, where: str) -> ModelRoute:
    raw = _mapping(raw, where)
    _keys(raw, {"criticality", "priority", "targets"}, where)
    crit = raw.get("criticality", "Standard")
    if crit not in CRITICALITIES:
        raise ConfigError(f"{where}.criticality: expected one of {', '.join(CRITICALITIES)}, got {crit!r}")
    prio = raw.get("priority")
    if prio is not None and (isinstance(prio, bool) or not isinstance(prio, int)):
        raise ConfigError(f"{where}.priority: expected an integer, got {prio!r}")
    targets = parse_targets(raw["targets"], f"{where}.targets") if "targets" in raw else (Target(name, 1),)
    return ModelRoute(name=name, targets=targets, criticality=crit, priority=prio)


def is_legacy_scheduling(raw: Any) -> bool:
    """The deprecated infershift form: `{plugins, profile: {filters, scorers, picker}}`."""
    return (isinstance(raw, dict) and "profile" in raw and "schedulingProfiles" not in raw
            and "kind" not in raw and "apiVersion" not in raw)


def parse_scheduling(raw: Any, where: str = "scheduling") -> SchedulingSpec:
    """A `scheduling` block: an EndpointPickerConfig (upstream's format, the one going forward) or
    the deprecated `{plugins, profile}` form. `where` prefixes every error's path."""
    if raw is None:
        raw = DEFAULT_SCHEDULING
    if is_legacy_scheduling(raw):
        return parse_legacy_scheduling(raw, where)
    from .scheduling.epc import parse_endpoint_picker_config  # imports the plugin registry

    return parse_endpoint_picker_config(_mapping(raw, where or "config"), where)


_warned_legacy = False


def parse_legacy_scheduling(raw: Any, where: str = "scheduling") -> SchedulingSpec:
    """Deprecated: `{plugins, profile: {filters, scorers, picker}}`, infershift's format before it
    took upstream's EndpointPickerConfig. Still read, into the same spec, with one warning."""
    global _warned_legacy
    if not _warned_legacy:
        _warned_legacy = True
        log.warning("%s: the {plugins, profile} format is deprecated; write an EndpointPickerConfig "
                    "(plugins + schedulingProfiles[].plugins[].pluginRef/weight), see the picker README", where)
    raw = _mapping(raw, where)
    _keys(raw, {"plugins", "profile"}, where)
    plugins_raw = raw.get("plugins")
    if not isinstance(plugins_raw, list) or not plugins_raw:
        raise ConfigError(f"{where}.plugins: expected a non-empty list")
    plugins: list[PluginSpec] = []
    names: set[str] = set()
    for i, p in enumerate(plugins_raw):
        w = f"{where}.plugins[{i}]"
        p = _mapping(p, w)
        _keys(p, {"type", "name", "parameters"}, w)
        ptype = _str(p.get("type"), f"{w}.type")
        name = _str(p.get("name", ptype), f"{w}.name")
        if name in names:
            raise ConfigError(f"{w}.name: duplicate plugin name {name!r}")
        names.add(name)
        plugins.append(PluginSpec(ptype, name, dict(_mapping(p.get("parameters"), f"{w}.parameters"))))
    prof = _mapping(raw.get("profile"), f"{where}.profile")
    _keys(prof, {"filters", "scorers", "picker"}, f"{where}.profile")
    filters = prof.get("filters") or []
    if not isinstance(filters, list):
        raise ConfigError(f"{where}.profile.filters: expected a list of plugin names")
    for i, f in enumerate(filters):
        if f not in names:
            raise ConfigError(f"{where}.profile.filters[{i}]: no plugin named {f!r}")
    scorers = []
    for i, s in enumerate(prof.get("scorers") or []):
        w = f"{where}.profile.scorers[{i}]"
        s = _mapping(s, w)
        _keys(s, {"plugin", "weight"}, w)
        if s.get("plugin") not in names:
            raise ConfigError(f"{w}.plugin: no plugin named {s.get('plugin')!r}")
        weight = s.get("weight", 1)
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or weight < 0:
            raise ConfigError(f"{w}.weight: expected a non-negative number, got {weight!r}")
        scorers.append((s["plugin"], float(weight)))
    picker = prof.get("picker")
    if picker not in names:
        raise ConfigError(f"{where}.profile.picker: no plugin named {picker!r}")
    return SchedulingSpec(tuple(plugins), ProfileSpec(tuple(filters), tuple(scorers), picker), source="legacy")


def parse_config(raw: Any) -> PickerConfig:
    raw = _mapping(raw, "config")
    if raw.get("kind") == "EndpointPickerConfig":
        # An upstream EPP's config file as it is (e.g. a Helm chart's default-plugins.yaml): the
        # pool comes from --pool-name/--pool-namespace and the cluster, the rest takes defaults.
        return PickerConfig(kubernetes={"poolApiVersion": POOL_API_VERSIONS[0]},
                            scheduling=parse_scheduling(raw, where=""))
    _keys(
        raw,
        {"pool", "endpoints", "kubernetes", "models", "sessionHeader", "failureMode", "limits", "metrics", "scheduling",
         "telemetry", "lora", "flowControl", "responseModel", "answerLog"},
        "config",
    )
    response_model = raw.get("responseModel", "served")
    if response_model not in ("served", "client"):
        raise ConfigError(f"responseModel: expected served or client, got {response_model!r}")
    flow_switch = raw.get("flowControl", True)
    if not isinstance(flow_switch, bool):
        raise ConfigError(f"flowControl: expected true or false, got {flow_switch!r}")
    pool = _mapping(raw.get("pool"), "pool")
    _keys(pool, {"name", "namespace"}, "pool")
    endpoints = None
    if raw.get("endpoints") is not None:
        if not isinstance(raw["endpoints"], list):
            raise ConfigError("endpoints: expected a list")
        eps, seen = [], set()
        for i, e in enumerate(raw["endpoints"]):
            w = f"endpoints[{i}]"
            e = _mapping(e, w)
            _keys(e, {"address", "name", "models", "engine", "labels"}, w)
            addr = parse_address(e.get("address"), f"{w}.address")
            if addr in seen:
                raise ConfigError(f"{w}.address: duplicate endpoint {addr}")
            seen.add(addr)
            models = e.get("models")
            if models is not None:
                if not isinstance(models, list) or not all(isinstance(m, str) and m for m in models):
                    raise ConfigError(f"{w}.models: expected a list of model names")
                models = tuple(models)
            eps.append(StaticEndpoint(addr, _str(e.get("name", addr), f"{w}.name"), models, *_endpoint_extras(e, w)))
        endpoints = tuple(eps)
    kube = raw.get("kubernetes")
    if kube is not None:
        kube = _mapping(kube, "kubernetes")
        _keys(kube, {"poolApiVersion"}, "kubernetes")
        ver = kube.get("poolApiVersion", POOL_API_VERSIONS[0])
        if ver not in POOL_API_VERSIONS:
            raise ConfigError(f"kubernetes.poolApiVersion: expected one of {', '.join(POOL_API_VERSIONS)}, got {ver!r}")
        kube = {"poolApiVersion": ver}
    if endpoints is None and kube is None:
        raise ConfigError("config: set either endpoints (static discovery) or kubernetes (cluster discovery)")
    models = {}
    for name, route in _mapping(raw.get("models"), "models").items():
        models[str(name)] = parse_model_route(str(name), route, f"models.{name}")
    session = raw.get("sessionHeader")
    if session is not None:
        session = _str(session, "sessionHeader").lower()
    failure = raw.get("failureMode", "FailOpen")
    if failure not in ("FailOpen", "FailClose"):
        raise ConfigError(f"failureMode: expected FailOpen or FailClose, got {failure!r}")
    limits = _mapping(raw.get("limits"), "limits")
    _keys(limits, {"maxBodyBytes"}, "limits")
    max_body = limits.get("maxBodyBytes", 20 * 1024 * 1024)
    if isinstance(max_body, bool) or not isinstance(max_body, int) or max_body <= 0:
        raise ConfigError(f"limits.maxBodyBytes: expected a positive integer, got {max_body!r}")
    met = _mapping(raw.get("metrics"), "metrics")
    _keys(met, {"pollInterval", "staleAfter", "modelsInterval", "port"}, "metrics")
    metrics_port = met.get("port")
    if metrics_port is not None and (isinstance(metrics_port, bool) or not isinstance(metrics_port, int)
                                     or not 0 < metrics_port < 65536):
        raise ConfigError(f"metrics.port: expected a port number, got {metrics_port!r}")
    tel = _mapping(raw.get("telemetry"), "telemetry")
    _keys(tel, {"responseSampleRate"}, "telemetry")
    rate = tel.get("responseSampleRate", 1.0)
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 <= rate <= 1:
        raise ConfigError(f"telemetry.responseSampleRate: expected a number from 0 to 1, got {rate!r}")
    return PickerConfig(
        pool_name=_str(pool.get("name", "default-pool"), "pool.name"),
        pool_namespace=_str(pool.get("namespace", "default"), "pool.namespace"),
        endpoints=endpoints,
        kubernetes=kube,
        models=models,
        session_header=session,
        failure_mode=failure,
        max_body_bytes=max_body,
        poll_interval=parse_duration(met.get("pollInterval", "50ms"), "metrics.pollInterval"),
        stale_after=parse_duration(met.get("staleAfter", "1s"), "metrics.staleAfter"),
        models_interval=parse_duration(met.get("modelsInterval", "2s"), "metrics.modelsInterval"),
        response_sample_rate=float(rate),
        response_model=response_model,
        metrics_port=metrics_port,
        lora_on_demand=parse_lora(raw.get("lora")),
        scheduling=_flow_switched(parse_scheduling(raw.get("scheduling")), flow_switch),
        answer_log=parse_answer_log(raw.get("answerLog")),
    )


def parse_answer_log(raw: Any) -> AnswerLogSpec | None:
    """`answerLog: true`, or `{enabled: true, maxTextChars: N}`; absent or false: off."""
    if raw is None or raw is False:
        return None
    if raw is True:
        return AnswerLogSpec()
    raw = _mapping(raw, "answerLog")
    _keys(raw, {"enabled", "maxTextChars"}, "answerLog")
    enabled = raw.get("enabled", True)
    if not isinstance(enabled, bool):
        raise ConfigError(f"answerLog.enabled: expected true or false, got {enabled!r}")
    chars = raw.get("maxTextChars", AnswerLogSpec.max_text_chars)
    if isinstance(chars, bool) or not isinstance(chars, int) or chars < 0:
        raise ConfigError(f"answerLog.maxTextChars: expected a non-negative integer, got {chars!r}")
    return AnswerLogSpec(max_text_chars=chars) if enabled else None


def _flow_switched(spec: SchedulingSpec, on: bool) -> SchedulingSpec:
    """`flowControl: false` turns flow control off whatever the scheduling config says; true (the
    default) leaves it to the scheduling config (the default one has it on)."""
    if on or spec.flow_control is None:
        return spec
    from dataclasses import replace

    return replace(spec, flow_control=None)


def _endpoint_extras(e: dict, where: str) -> tuple[tuple[tuple[str, str], ...], str | None]:
    """An endpoint's `labels` (as a pod's) and `engine`."""
    from .metrics_parse import AUTO, ENGINES

    labels = _mapping(e.get("labels"), f"{where}.labels")
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in labels.items()):
        raise ConfigError(f"{where}.labels: expected a mapping of strings")
    engine = e.get("engine")
    if engine is not None and engine not in (*ENGINES, AUTO):
        raise ConfigError(f"{where}.engine: expected one of {', '.join((*ENGINES, AUTO))}, got {engine!r}")
    return tuple(sorted(labels.items())), engine


def parse_lora(raw: Any) -> dict[str, OnDemandAdapter]:
    """`lora: {onDemand: [{adapter, base, path}]}`: adapters requests may name though no server has them
    yet. With `path` the picker loads the adapter (vLLM's POST /v1/load_lora_adapter, which needs
    VLLM_ALLOW_RUNTIME_LORA_UPDATING=True); without, the server resolves it (a vLLM LoRA resolver)."""
    lora = _mapping(raw, "lora")
    _keys(lora, {"onDemand"}, "lora")
    items = lora.get("onDemand") or []
    if not isinstance(items, list):
        raise ConfigError("lora.onDemand: expected a list of {adapter, base, path}")
    out: dict[str, OnDemandAdapter] = {}
    for i, a in enumerate(items):
        w = f"lora.onDemand[{i}]"
        a = _mapping(a, w)
        _keys(a, {"adapter", "base", "path"}, w)
        name = _str(a.get("adapter"), f"{w}.adapter")
        if name in out:
            raise ConfigError(f"{w}.adapter: duplicate adapter {name!r}")
        path = a.get("path")
        out[name] = OnDemandAdapter(name, _str(a.get("base"), f"{w}.base"),
                                    _str(path, f"{w}.path") if path is not None else None)
    return out


def read_yaml(path: str, what: str = "config file"):
    """A YAML file's content; an unreadable or malformed file is a ConfigError naming it."""
    try:
        with open(path, encoding="utf-8") as f:
            return yaml.safe_load(f)
    except OSError as e:
        raise ConfigError(f"cannot read {what} {path}: {e.strerror}") from e
    except yaml.YAMLError as e:
        raise ConfigError(f"{what} {path} is not valid YAML: {e}") from e


def load_config(path: str) -> PickerConfig:
    return parse_config(read_yaml(path))
