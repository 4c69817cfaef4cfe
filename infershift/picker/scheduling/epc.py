"""EndpointPickerConfig: the config format of llm-d's endpoint picker (apiVersion llm-d.ai/v1alpha1)
and of the Gateway API Inference Extension's before it (inference.networking.x-k8s.io/v1alpha1),
read into the picker's one-profile SchedulingSpec with upstream's defaulting rules:

- a plugin's `name` defaults to its `type`; a profile's scorer without `weight` weighs 1;
- no `schedulingProfiles`: one profile with every filter, scorer and picker, in plugin order;
- a profile without a picker gets the first declared picker, else a max-score-picker;
- plugins in a profile that are not filters, scorers or pickers (parsers, data-layer plugins,
  profile handlers) take no slot, as upstream ignores them there;
- the saturation detector (`saturationDetector.pluginRef`, default a utilization-detector with
  its defaults) drops sheddable requests while the pool is saturated, before the profile runs.

infershift adds two rules of its own: a profile without a model-filter gets one first (an
endpoint that does not serve the target model is never picked; upstream pools serve one base
model), and a profile with infershift's saturation-filter or admission-filter does its own
admission, so no detector is added unless one is named. Plugin types, upstream's and infershift's,
are in `registry.py`; anything else is named in the error, every one of them at once.
"""
from __future__ import annotations

import re
from dataclasses import replace

from ..config import BandSpec, DataLayerSpec, FlowSpec, PluginSpec, ProfileSpec, SchedulingSpec, _keys, _mapping, _str
from ..errors import ConfigError
from .registry import canonical_type, role_of, unsupported_message
from .upstream import UtilizationDetector

API_VERSIONS = ("llm-d.ai/v1alpha1", "inference.networking.x-k8s.io/v1alpha1")
KIND = "EndpointPickerConfig"
TOP_LEVEL = {"apiVersion", "kind", "featureGates", "plugins", "schedulingProfiles", "saturationDetector", "dataLayer",
             "flowControl", "parser", "requestHandler"}
# Feature gates of upstream's releases. All but flowControl change nothing here: the picker
# always scrapes its own metrics (dataLayer, enableLegacyMetrics), runs no data-producer plugins
# (prepareDataPlugins) and keeps its datastore on every replica (haPopulateNonLeaderDatastore).
FEATURE_GATES = ("dataLayer", "enableLegacyMetrics", "prepareDataPlugins", "haPopulateNonLeaderDatastore",
                 "flowControl")
UNSUPPORTED_GATES: dict[str, str] = {}
FLOW_CONTROL = {"maxBytes", "maxRequests", "defaultRequestTTL", "noEndpointRequestTTL", "defaultPriorityBand",
                "defaultNegativePriorityBand", "priorityBands", "usageLimitPolicyPluginRef", "saturationDetector",
                "enableEviction"}
PRIORITY_BAND = {"priority", "maxBytes", "maxRequests", "fairnessPolicyRef", "orderingPolicyRef"}
DATA_LAYER = {"injectDefaults", "sources", "discovery", "peerDiscovery", "crossReplicaSyncerPluginRef",
              "crossReplicaSyncInterval"}
# GIE v1.0's saturationDetector took the utilization detector's thresholds directly.
LEGACY_DETECTOR = {"queueDepthThreshold": "queueDepthThreshold", "kvCacheUtilThreshold": "kvCacheUtilThreshold",
                   "metricsStalenessThreshold": "metricsStalenessThreshold"}
OWN_ADMISSION = ("saturation-filter", "admission-filter")


def _at(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _ref(raw, where: str, names: dict[str, PluginSpec]) -> str:
    """A `{pluginRef: NAME}` entry naming a declared plugin."""
    raw = _mapping(raw, where)
    _keys(raw, {"pluginRef"}, where)
    ref = _str(raw.get("pluginRef"), f"{where}.pluginRef")
    if ref not in names:
        raise ConfigError(f"{where}.pluginRef: no plugin named {ref!r} (plugins: {', '.join(names) or 'none'})")
    return ref


def _fresh(name: str, names: dict[str, PluginSpec]) -> str:
    n, i = name, 2
    while n in names:
        n, i = f"{name}-{i}", i + 1
    return n


def _plugins(raw, where: str) -> list[PluginSpec]:
    w = _at(where, "plugins")
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise ConfigError(f"{w}: expected a list of {{type, name, parameters}}")
    out, seen = [], set()
    for i, p in enumerate(raw):
        pw = f"{w}[{i}]"
        p = _mapping(p, pw)
        _keys(p, {"type", "name", "parameters"}, pw)
        ptype = _str(p.get("type"), f"{pw}.type")
        name = p.get("name") or ptype  # upstream: an empty name is the type
        name = _str(name, f"{pw}.name")
        if name in seen:
            raise ConfigError(f"{pw}.name: duplicate plugin name {name!r}")
        seen.add(name)
        out.append(PluginSpec(ptype, name, dict(_mapping(p.get("parameters"), f"{pw}.parameters"))))
    return out


def _gates(raw, where: str) -> tuple[list[str], list[str]]:
    w = _at(where, "featureGates")
    if raw is None:
        return [], []
    if not isinstance(raw, list):
        raise ConfigError(f"{w}: expected a list of feature gate names")
    gates, problems = [], []
    for i, g in enumerate(raw):
        if g not in FEATURE_GATES:
            raise ConfigError(f"{w}[{i}]: unknown feature gate {g!r} (known: {', '.join(FEATURE_GATES)})")
        if g in UNSUPPORTED_GATES:
            problems.append(f"{w}[{i}]: feature gate {g!r} is not supported: {UNSUPPORTED_GATES[g]}")
        gates.append(g)
    return gates, problems


_QUANTITY = re.compile(r"^([0-9]+(?:\.[0-9]+)?(?:[eE][0-9]+)?)(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$")
_SUFFIX = {None: 1, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18,
           "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_GO_DURATION = re.compile(r"([0-9]+(?:\.[0-9]*)?)(ns|us|\u00b5s|ms|s|m|h)")
_GO_UNITS = {"ns": 1e-9, "us": 1e-6, "\u00b5s": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
FAIRNESS_TYPES = ("round-robin-fairness-policy", "global-strict-fairness-policy")
ORDERING_TYPES = ("fcfs-ordering-policy",)
DETECTOR_TYPES = ("utilization-detector", "concurrency-detector", "batch-capacity-detector")


def quantity(value, where: str) -> int:
    """A Kubernetes resource.Quantity as upstream's maxBytes / maxRequests take it: 100, "100",
    "1Gi", "500M"; a whole, non-negative number."""
    if isinstance(value, bool) or value is None:
        raise ConfigError(f"{where}: expected a quantity like 100 or '1Gi', got {value!r}")
    if isinstance(value, int):
        n = value
    else:
        m = _QUANTITY.match(str(value).strip()) if isinstance(value, (str, float)) else None
        if not m:
            raise ConfigError(f"{where}: expected a quantity like 100 or '1Gi', got {value!r}")
        n = int(float(m.group(1)) * _SUFFIX[m.group(2)])
    if n < 0:
        raise ConfigError(f"{where}: expected a quantity of at least 0, got {value!r}")
    return n


def go_duration(value, where: str) -> float:
    """A metav1.Duration (Go's time.ParseDuration: "30s", "1m30s", "500ms") in seconds."""
    text = str(value).strip() if isinstance(value, str) else None
    if not text:
        raise ConfigError(f"{where}: expected a duration like '30s' or '1m30s', got {value!r}")
    pos, total = 0, 0.0
    for m in _GO_DURATION.finditer(text):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _GO_UNITS[m.group(2)]
        pos = m.end()
    if pos != len(text) and text != "0":
        raise ConfigError(f"{where}: expected a duration like '30s' or '1m30s', got {value!r}")
    return total


def _policy_ref(raw, where: str, names: dict[str, PluginSpec], types: tuple[str, ...], what: str) -> str:
    """fairnessPolicyRef / orderingPolicyRef: a plugin's name, or (as upstream resolves it) a type."""
    ref = _str(raw, where)
    ptype = canonical_type(names[ref].type) if ref in names else ref
    if ptype not in types:
        declared = f"plugin {ref!r} is a {ptype!r}" if ref in names else f"no plugin named {ref!r}"
        raise ConfigError(f"{where}: {declared}; a {what} is one of {', '.join(types)}")
    return ptype


def _band(raw, where: str, names: dict[str, PluginSpec], priority: int | None) -> BandSpec:
    raw = _mapping(raw, where)
    _keys(raw, PRIORITY_BAND, where)
    b = BandSpec(priority)
    kw: dict = {}
    for key, attr in (("maxRequests", "max_requests"), ("maxBytes", "max_bytes")):
        if raw.get(key) is not None:
            n = quantity(raw[key], f"{where}.{key}")
            if n > 0:  # upstream: 0 is unset and takes the default
                kw[attr] = n
    if raw.get("fairnessPolicyRef"):
        kw["fairness"] = _policy_ref(raw["fairnessPolicyRef"], f"{where}.fairnessPolicyRef", names, FAIRNESS_TYPES,
                                     "fairness policy")
    if raw.get("orderingPolicyRef"):
        kw["ordering"] = _policy_ref(raw["orderingPolicyRef"], f"{where}.orderingPolicyRef", names, ORDERING_TYPES,
                                     "ordering policy")
    return replace(b, **kw)


def _flow_control(raw, where: str, names: dict[str, PluginSpec], enabled: bool, inject) -> FlowSpec | None:
    """The flowControl section. Checked either way; it takes effect only with the flowControl
    feature gate (upstream: without it the section is ignored but its saturationDetector)."""
    w = _at(where, "flowControl")
    raw = _mapping(raw, w) if raw is not None else {}
    _keys(raw, FLOW_CONTROL, w)
    kw: dict = {}
    for key, attr in (("maxRequests", "max_requests"), ("maxBytes", "max_bytes")):
        if raw.get(key) is not None:
            n = quantity(raw[key], f"{w}.{key}")
            kw[attr] = n or None
    for key, attr in (("defaultRequestTTL", "ttl"), ("noEndpointRequestTTL", "no_endpoint_ttl")):
        if raw.get(key) is not None:
            t = go_duration(raw[key], f"{w}.{key}")
            if t > 0:
                kw[attr] = t
    for key, attr, prio in (("defaultPriorityBand", "default_band", None),
                            ("defaultNegativePriorityBand", "default_negative_band", None)):
        if raw.get(key) is not None:
            kw[attr] = _band(raw[key], f"{w}.{key}", names, prio)
    bands = raw.get("priorityBands")
    if bands is not None:
        if not isinstance(bands, list):
            raise ConfigError(f"{w}.priorityBands: expected a list")
        out, seen = [], set()
        for i, b in enumerate(bands):
            bw = f"{w}.priorityBands[{i}]"
            b = _mapping(b, bw)
            prio = b.get("priority")
            if isinstance(prio, bool) or not isinstance(prio, int):
                raise ConfigError(f"{bw}.priority: expected an integer, got {prio!r}")
            if prio in seen:
                raise ConfigError(f"{bw}.priority: band {prio} is listed twice")
            seen.add(prio)
            out.append(_band(b, bw, names, prio))
        kw["bands"] = tuple(out)
    for key in ("usageLimitPolicyPluginRef",):
        if raw.get(key):
            ref = _str(raw[key], f"{w}.{key}")
            if ref not in names:
                raise ConfigError(f"{w}.{key}: no plugin named {ref!r} (plugins: {', '.join(names) or 'none'})")
            if canonical_type(names[ref].type) != "static-usage-limit-policy":
                raise ConfigError(f"{w}.{key}: plugin {ref!r} is a {names[ref].type!r}; infershift's picker has "
                                  f"the static usage limit only (static-usage-limit-policy)")
    if raw.get("enableEviction"):
        raise ConfigError(f"{w}.enableEviction: not supported by infershift's picker (a request that was "
                          f"dispatched is not revoked)")
    det = raw.get("saturationDetector")
    if det is not None:
        ref = _ref(det, f"{w}.saturationDetector", names)
        if canonical_type(names[ref].type) not in DETECTOR_TYPES:
            raise ConfigError(f"{w}.saturationDetector.pluginRef: plugin {ref!r} is a {names[ref].type!r}; a "
                              f"saturation detector is one of {', '.join(DETECTOR_TYPES)}")
        kw["detector"] = ref
    if not enabled:
        return None
    if "detector" not in kw:  # upstream's default: the utilization detector with its defaults
        declared = next((n for n, p in names.items() if canonical_type(p.type) == UtilizationDetector.type_name), None)
        kw["detector"] = declared or inject(UtilizationDetector.type_name)
    return FlowSpec(**kw)


def _profile(raw, where: str, plugins: list[PluginSpec], names: dict[str, PluginSpec]):
    """(profile name, [(plugin name, weight or None)]) of the one profile; problems for more."""
    w = _at(where, "schedulingProfiles")
    if raw is None or raw == []:  # upstream: every filter, scorer and picker, in plugin order
        return "default", [(p.name, None) for p in plugins if role_of(p.type) in ("filter", "scorer", "picker")], []
    if not isinstance(raw, list):
        raise ConfigError(f"{w}: expected a list of {{name, plugins}}")
    profiles, seen = [], set()
    for i, prof in enumerate(raw):
        pw = f"{w}[{i}]"
        prof = _mapping(prof, pw)
        _keys(prof, {"name", "plugins"}, pw)
        name = _str(prof.get("name"), f"{pw}.name")
        if name in seen:
            raise ConfigError(f"{pw}.name: duplicate profile name {name!r}")
        seen.add(name)
        entries = prof.get("plugins") or []
        if not isinstance(entries, list):
            raise ConfigError(f"{pw}.plugins: expected a list of {{pluginRef, weight}}")
        refs = []
        for j, e in enumerate(entries):
            ew = f"{pw}.plugins[{j}]"
            e = _mapping(e, ew)
            _keys(e, {"pluginRef", "weight"}, ew)
            ref = _str(e.get("pluginRef"), f"{ew}.pluginRef")
            if ref not in names:
                raise ConfigError(f"{ew}.pluginRef: no plugin named {ref!r} (plugins: {', '.join(names) or 'none'})")
            weight = e.get("weight")
            if weight is not None and (isinstance(weight, bool) or not isinstance(weight, (int, float)) or weight < 0):
                raise ConfigError(f"{ew}.weight: expected a non-negative number, got {weight!r}")
            refs.append((ref, None if weight is None else float(weight)))
        profiles.append((name, refs))
    problems = []
    if len(profiles) > 1:
        problems.append(f"{w}: {len(profiles)} profiles ({', '.join(n for n, _ in profiles)}); infershift's picker "
                        f"runs one (profile handlers that choose among several, e.g. for prefill/decode "
                        f"disaggregation, are not implemented)")
    name, refs = profiles[0]
    return name, refs, problems


def parse_endpoint_picker_config(raw: dict, where: str = "scheduling") -> SchedulingSpec:
    _keys(raw, TOP_LEVEL, where or "config")
    api, kind = raw.get("apiVersion"), raw.get("kind")
    if api is not None and api not in API_VERSIONS:
        raise ConfigError(f"{_at(where, 'apiVersion')}: expected one of {', '.join(API_VERSIONS)}, got {api!r}")
    if kind is not None and kind != KIND:
        raise ConfigError(f"{_at(where, 'kind')}: expected {KIND}, got {kind!r}")
    gates, problems = _gates(raw.get("featureGates"), where)
    plugins = _plugins(raw.get("plugins"), where)
    names = {p.name: p for p in plugins}
    bad = [(i, p.type) for i, p in enumerate(plugins) if role_of(p.type) is None]
    pname, refs, more = _profile(raw.get("schedulingProfiles"), where, plugins, names)
    if len(bad) == 1:
        i, t = bad[0]
        problems.insert(0, f"{_at(where, f'plugins[{i}].type')}: {unsupported_message(t)}")
    elif bad:
        listed = ", ".join(f"{t!r} (plugins[{i}])" for i, t in bad)
        problems.insert(0, f"{_at(where, 'plugins')}: {len(bad)} plugin types are not supported by infershift's "
                           f"picker: {listed}")
    problems += more
    if problems:
        raise ConfigError("; ".join(problems))

    # the profile's slots, in upstream's order of the profile list
    filters: list[str] = []
    scorers: list[tuple[str, float]] = []
    picker = None
    pw = _at(where, "schedulingProfiles[0]")
    for j, (ref, weight) in enumerate(refs):
        role = role_of(names[ref].type)
        if role == "filter":
            filters.append(ref)
        elif role == "scorer":
            scorers.append((ref, 1.0 if weight is None else weight))
        elif role == "picker":
            if picker is not None:
                raise ConfigError(f"{pw}.plugins[{j}].pluginRef: a profile takes one picker; it already has {picker!r}")
            picker = ref
    extra: list[PluginSpec] = []

    def inject(ptype: str, parameters: dict | None = None) -> str:
        spec = PluginSpec(ptype, _fresh(ptype, names), dict(parameters or {}))
        names[spec.name] = spec
        extra.append(spec)
        return spec.name

    if picker is None:
        picker = next((p.name for p in plugins if role_of(p.type) == "picker"), None) or inject("max-score-picker")
    if not any(canonical_type(names[f].type) == "model-filter" for f in filters):
        filters.insert(0, inject("model-filter"))
    flow = _flow_control(raw.get("flowControl"), where, names, "flowControl" in gates, inject)
    detector = _saturation_detector(raw.get("saturationDetector"), where, names, filters, inject)
    _data_layer(raw.get("dataLayer"), where, names)
    for key, w in (("parser", _at(where, "parser")),):
        if raw.get(key) is not None:
            _parser_ref(raw[key], w, names)
    handler = raw.get("requestHandler")
    if handler is not None:
        hw = _at(where, "requestHandler")
        handler = _mapping(handler, hw)
        _keys(handler, {"parsers"}, hw)
        parsers = handler.get("parsers") or []
        if not isinstance(parsers, list):
            raise ConfigError(f"{hw}.parsers: expected a list of {{pluginRef}}")
        for i, p in enumerate(parsers):
            _parser_ref(p, f"{hw}.parsers[{i}]", names)

    # upstream moved the prefix index's parameters to approx-prefix-cache-producer
    producer = next((p for p in plugins if p.type == "approx-prefix-cache-producer"), None)
    if producer is not None and producer.parameters:
        plugins = [PluginSpec(p.type, p.name, dict(producer.parameters))
                   if canonical_type(p.type) == "prefix-cache-scorer" and not p.parameters else p for p in plugins]
    extractor = next((p for p in plugins if p.type == "core-metrics-extractor"), None)
    data_layer = DataLayerSpec()
    if extractor is not None:
        data_layer = DataLayerSpec(extractor.parameters.get("engineLabelKey", data_layer.engine_label_key),
                                   extractor.parameters.get("defaultEngine", data_layer.default_engine))
    return SchedulingSpec(
        plugins=tuple(plugins + extra),
        profile=ProfileSpec(tuple(filters), tuple(scorers), picker, pname),
        saturation_detector=detector,
        feature_gates=tuple(gates),
        data_layer=data_layer,
        flow_control=flow,
    )


def _parser_ref(raw, where: str, names: dict[str, PluginSpec]) -> None:
    ref = _ref(raw, where, names)
    if role_of(names[ref].type) != "parser":
        raise ConfigError(f"{where}.pluginRef: plugin {ref!r} is not a parser")


def _saturation_detector(raw, where: str, names: dict[str, PluginSpec], filters: list[str], inject) -> str | None:
    w = _at(where, "saturationDetector")
    if raw is not None:
        raw = _mapping(raw, w)
        _keys(raw, {"pluginRef", *LEGACY_DETECTOR}, w)
        if raw.get("pluginRef"):
            ref = _ref({"pluginRef": raw["pluginRef"]}, w, names)
            if canonical_type(names[ref].type) != UtilizationDetector.type_name:
                raise ConfigError(f"{w}.pluginRef: plugin {ref!r} is not a saturation detector (utilization-detector)")
            return ref
        params = {LEGACY_DETECTOR[k]: v for k, v in raw.items() if k in LEGACY_DETECTOR}
        return inject(UtilizationDetector.type_name, params)
    if any(canonical_type(names[f].type) in OWN_ADMISSION for f in filters):
        return None  # infershift's admission filters decide who is shed
    declared = next((n for n, p in names.items() if canonical_type(p.type) == UtilizationDetector.type_name), None)
    return declared or inject(UtilizationDetector.type_name)


def _data_layer(raw, where: str, names: dict[str, PluginSpec]) -> None:
    if raw is None:
        return
    w = _at(where, "dataLayer")
    raw = _mapping(raw, w)
    _keys(raw, DATA_LAYER, w)
    inject = raw.get("injectDefaults", True)
    if not isinstance(inject, bool):
        raise ConfigError(f"{w}.injectDefaults: expected true or false, got {inject!r}")
    sources = raw.get("sources") or []
    if not isinstance(sources, list):
        raise ConfigError(f"{w}.sources: expected a list of {{pluginRef, extractors}}")
    for i, s in enumerate(sources):
        sw = f"{w}.sources[{i}]"
        s = _mapping(s, sw)
        _keys(s, {"pluginRef", "extractors"}, sw)
        ref = _ref({"pluginRef": s.get("pluginRef")}, sw, names)
        if role_of(names[ref].type) != "data source":
            raise ConfigError(f"{sw}.pluginRef: plugin {ref!r} is not a data source")
        extractors = s.get("extractors") or []
        if not isinstance(extractors, list):
            raise ConfigError(f"{sw}.extractors: expected a list of {{pluginRef}}")
        for j, e in enumerate(extractors):
            ew = f"{sw}.extractors[{j}]"
            ref = _ref(e, ew, names)
            if role_of(names[ref].type) != "data extractor":
                raise ConfigError(f"{ew}.pluginRef: plugin {ref!r} is not a data extractor")
    for key in ("discovery", "peerDiscovery", "crossReplicaSyncerPluginRef", "crossReplicaSyncInterval"):
        if raw.get(key) is not None:
            raise ConfigError(f"{w}.{key}: not supported: the picker discovers endpoints itself (`kubernetes:` "
                              f"or `endpoints:`) and shares no state between replicas")
