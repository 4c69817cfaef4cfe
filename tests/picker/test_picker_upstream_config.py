"""Upstream EndpointPickerConfig files (testdata/upstream, unchanged; README there names each one's
source): each loads, or fails with a ConfigError naming every plugin type the picker lacks. Plus
the upstream plugins the picker implements, on parsed endpoint state."""
from __future__ import annotations

import random
import textwrap
from pathlib import Path

import pytest
import yaml

from infershift.picker.config import load_config, parse_config
from infershift.picker.endpoints import Endpoint
from infershift.picker.errors import ConfigError, Shed
from infershift.picker.metrics_parse import ServerMetrics
from infershift.picker.scheduling import SchedRequest, build_scheduler, check_scheduling

UPSTREAM = Path(__file__).resolve().parent / "testdata" / "upstream"


def helm_block(text: str, key: str = "default-plugins.yaml") -> str:
    """A ConfigMap template's literal `key: |` block (a chart version without templating inside it)."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() == f"{key}: |")
    indent = len(lines[start]) - len(lines[start].lstrip())
    body = []
    for line in lines[start + 1:]:
        if line.strip() and len(line) - len(line.lstrip()) <= indent:
            break
        body.append(line)
    return textwrap.dedent("\n".join(body))


def documents(name: str) -> dict[str, dict]:
    """The EndpointPickerConfig(s) in a fixture: a plain file, a rendered ConfigMap, a chart template."""
    text = (UPSTREAM / name).read_text()
    if name.endswith(".tpl"):
        return {"default-plugins.yaml": yaml.safe_load(helm_block(text))}
    raw = yaml.safe_load(text)
    if raw.get("kind") == "ConfigMap":
        return {k: yaml.safe_load(v) for k, v in raw["data"].items()}
    return {"": raw}


HELM_DEFAULT = ("model-filter",), (("queue-scorer", 2.0), ("kv-cache-utilization-scorer", 2.0),
                                   ("prefix-cache-scorer", 3.0)), "max-score-picker"
# fixture, document -> (filters, scorers, picker) it loads as
LOADS = {
    ("gie-v1.0.0.chart.epp-config.yaml.tpl", "default-plugins.yaml"): (
        ("model-filter",), (("queue-scorer", 1.0), ("kv-cache-utilization-scorer", 1.0),
                            ("prefix-cache-scorer", 1.0)), "max-score-picker"),
    ("gie.chart-inferencepool.render.configmap.yaml", "default-plugins.yaml"): HELM_DEFAULT,
    ("llm-d-router.chart-gateway.render.configmap.yaml", "default-plugins.yaml"): HELM_DEFAULT,
    ("gie.test.integration.default-config.yaml", ""): (
        ("model-filter",), (("queue-scorer", 1.0), ("kv-cache-utilization-scorer", 1.0), ("prefix-cache-scorer", 1.0),
                            ("lora-affinity-scorer", 1.0)), "max-score-picker"),
    ("llm-d-router.test.integration.default-config.yaml", ""): (
        ("model-filter",), (("queue-scorer", 1.0), ("kv-cache-utilization-scorer", 1.0), ("prefix-cache-scorer", 1.0),
                            ("lora-affinity-scorer", 1.0)), "max-score-picker"),
    ("llm-d-router.deploy.config.epp-config.yaml", ""): (
        ("model-filter", "decode-filter"), (("prefix-cache-scorer", 2.0),), "max-score-picker"),
    ("llm-d-router.deploy.config.sim-epp-config.yaml", ""): (
        ("model-filter", "decode-filter"), (("prefix-cache-scorer", 2.0),), "max-score-picker"),
    ("llm-d-router.deploy.config.epp-estimate-prefix-cache-config.yaml", ""): (
        ("model-filter", "decode-filter"), (("prefix-cache-scorer", 1.0), ("load-aware-scorer", 1.0)),
        "max-score-picker"),
}
# fixture, document -> every plugin type (or other feature) the error must name
FAILS = {
    ("llm-d-router.chart-gateway.render.configmap.yaml", "payload-agnostic.yaml"): [
        "'passthrough-parser' (plugins[0])", "'active-request-scorer' (plugins[1])",
        "'session-affinity-scorer' (plugins[2])"],
    ("llm-d-router.deploy.config.dp-epp-config.yaml", ""): ["plugins[3].type: plugin type 'data-parallel-profile-handler'"],
    ("llm-d-router.deploy.config.epp-precise-prefix-cache-config.yaml", ""): [
        "'token-producer' (plugins[0])", "'endpoint-notification-source' (plugins[1])",
        "'precise-prefix-cache-producer' (plugins[6])"],
    ("llm-d-router.deploy.config.pd-epp-config.yaml", ""): [
        "'prefill-filter' (plugins[3])", "'disagg-profile-handler' (plugins[6])", "'prefix-based-pd-decider' (plugins[7])",
        "schedulingProfiles: 2 profiles (prefill, decode)"],
    ("llm-d-router.deploy.config.probabilistic-admitter-epp-config.yaml", ""): [
        "plugins[0].type: plugin type 'probabilistic-admitter'"],
    ("llm-d-router.deploy.config.sim-program-aware-config.yaml", ""): [
        "plugins[0].type: plugin type 'program-aware-fairness'"],
    ("llm-d-router.deploy.config.soft-reflective-ceiling-epp-config.yaml", ""): [
        "plugins[3].type: plugin type 'soft-reflective-ceiling-policy'"],
}


def test_every_fixture_is_covered():
    files = {p.name for p in UPSTREAM.iterdir() if p.name != "README.md"}
    covered = {f for f, _ in LOADS} | {f for f, _ in FAILS}
    assert files == covered
    assert len(files) >= 6 and len(LOADS) >= 6
    readme = (UPSTREAM / "README.md").read_text()
    assert all(f in readme for f in files), "every fixture's source is named in testdata/upstream/README.md"


@pytest.mark.parametrize("key", LOADS, ids=[f"{f}:{d}" if d else f for f, d in LOADS])
def test_upstream_config_loads(key):
    name, doc = key
    cfg = parse_config(documents(name)[doc])  # the whole file as the picker's config
    assert cfg.kubernetes is not None  # an EPP config file alone: cluster discovery
    sched = build_scheduler(cfg.scheduling, random.Random(0))
    filters, scorers, picker = LOADS[key]
    # upstream's default saturation detector gates sheddable requests before the profile
    assert [f.name for f in sched.filters] == ["saturation-detector(utilization-detector)", *filters]
    assert [(s.name, w) for s, w in sched.scorers] == list(scorers)
    assert sched.picker.name == picker
    # the same document as a stack's / picker config's `scheduling` block
    assert check_scheduling(documents(name)[doc]) == cfg.scheduling


@pytest.mark.parametrize("key", FAILS, ids=[f"{f}:{d}" if d else f for f, d in FAILS])
def test_upstream_config_names_what_is_unsupported(key):
    name, doc = key
    with pytest.raises(ConfigError) as e:
        parse_config(documents(name)[doc])
    for part in FAILS[key]:
        assert part in str(e.value), str(e.value)
    with pytest.raises(ConfigError) as e:  # within a picker config, the paths start at `scheduling`
        parse_config({"endpoints": [], "scheduling": documents(name)[doc]})
    assert str(e.value).startswith("scheduling.")


@pytest.mark.parametrize("name", [f for f, d in LOADS if d == "" and not f.endswith(".tpl")])
def test_upstream_config_file_is_read_as_it_is(name):
    cfg = load_config(str(UPSTREAM / name))
    assert cfg.scheduling.source == "EndpointPickerConfig"


def test_prefix_parameters_from_upstreams_data_producer():
    """sim-epp-config gives the prefix index's parameters to approx-prefix-cache-producer."""
    spec = parse_config(documents("llm-d-router.deploy.config.sim-epp-config.yaml")[""]).scheduling
    prefix = next(s for s, _ in build_scheduler(spec, random.Random(0)).scorers if s.name == "prefix-cache-scorer")
    assert prefix.block_size == 64  # 16 tokens of 4 characters, upstream's default block
    assert prefix.max_blocks == 16384 * 4 // 64 and prefix.index.capacity == 31250


def ep(i: int, waiting: float = 0, kv: float = 0.0, labels: dict | None = None, fresh: bool = True) -> Endpoint:
    e = Endpoint(f"10.0.0.{i}:8000", f"e{i}", frozenset({"llama"}))
    e.metrics = ServerMetrics(waiting=waiting, kv_usage=kv)
    e.last_ok = 1e12 if fresh else -1e18
    if labels is not None:
        e.labels = labels
    return e


def upstream_scheduler(raw: dict, clock=lambda: 1e12):
    s = build_scheduler(parse_config({"endpoints": [], "scheduling": raw}).scheduling, random.Random(3))
    for f in s.filters:
        inner = getattr(f, "detector", f)
        if hasattr(inner, "clock"):
            inner.clock = clock
    return s


def test_default_saturation_detector_sheds_only_sheddable_at_saturation():
    s = upstream_scheduler({"plugins": [{"type": "queue-scorer"}]})
    busy = [ep(1, waiting=4), ep(2, waiting=6)]  # mean of max(q/5, kv/0.8) = 1.0
    with pytest.raises(Shed):
        s.schedule(SchedRequest("llama", "x", sheddable=True), busy)
    assert s.schedule(SchedRequest("llama", "x"), busy)[0].address == "10.0.0.1:8000"
    assert s.schedule(SchedRequest("llama", "x", sheddable=True), [ep(1, waiting=4), ep(2, waiting=5, kv=0.1)])
    # stale metrics count as saturated, as upstream's detector counts them
    with pytest.raises(Shed):
        s.schedule(SchedRequest("llama", "x", sheddable=True), [ep(1, waiting=5), ep(2, fresh=False), ep(3, fresh=False)])
    assert s.schedule(SchedRequest("llama", "x", sheddable=True), [ep(1, waiting=4), ep(2, fresh=False)])  # 0.9


def test_named_detector_thresholds_and_gie_v1_thresholds():
    named = {"plugins": [{"type": "queue-scorer"}, {"type": "utilization-detector", "name": "sd",
                                                   "parameters": {"queueDepthThreshold": 100}}],
             "saturationDetector": {"pluginRef": "sd"},
             "schedulingProfiles": [{"name": "default", "plugins": [{"pluginRef": "queue-scorer"}]}]}
    busy = [ep(1, waiting=40), ep(2, waiting=60)]
    assert upstream_scheduler(named).schedule(SchedRequest("llama", "x", sheddable=True), busy)
    gie_v1 = {"plugins": [{"type": "queue-scorer"}], "saturationDetector": {"queueDepthThreshold": 100}}
    assert upstream_scheduler(gie_v1).schedule(SchedRequest("llama", "x", sheddable=True), busy)


def test_infershift_admission_filters_replace_the_default_detector():
    spec = parse_config({"endpoints": []}).scheduling  # the default: admission-filter decides
    assert spec.saturation_detector is None and spec.source == "EndpointPickerConfig"


def test_utilization_detector_as_a_profile_filter():
    s = upstream_scheduler({"plugins": [{"type": "utilization-detector", "parameters": {"headroom": 0.2}},
                                        {"type": "queue-scorer"}]})
    eps = [ep(1, waiting=5), ep(2, waiting=7), ep(3, kv=0.97)]
    flt = s.filters[-1]
    assert flt.name == "utilization-detector"
    assert [e.address for e in flt.filter(SchedRequest("llama"), eps)] == ["10.0.0.1:8000"]  # < 6 queued, kv < 0.96
    assert flt.filter(SchedRequest("llama"), eps[1:]) == eps[1:]  # none passes: all of them, as upstream


def test_decode_filter_reads_the_role_label():
    s = upstream_scheduler({"plugins": [{"type": "decode-filter"}, {"type": "queue-scorer"}]})
    eps = [ep(1, labels={"llm-d.ai/role": "prefill"}), ep(2, labels={"llm-d.ai/role": "decode"}),
           ep(3, labels={"llm-d.ai/role": "both"}), ep(4), ep(5, labels={"app": "x"})]
    kept = s.filters[-1].filter(SchedRequest("llama"), eps)
    assert [e.name for e in kept] == ["e2", "e3", "e4", "e5"]


def test_load_aware_scorer_and_weighted_random_picker():
    s = upstream_scheduler({"plugins": [{"type": "load-aware-scorer", "parameters": {"threshold": 10}},
                                        {"type": "weighted-random-picker"}]})
    scorer, _ = s.scorers[0]
    eps = [ep(1), ep(2, waiting=5), ep(3, waiting=50)]
    assert scorer.score(SchedRequest("llama"), eps) == [0.5, 0.25, 0.0]
    got = [s.schedule(SchedRequest("llama", f"p{i}"), eps)[0].address for i in range(600)]
    a, b = got.count("10.0.0.1:8000"), got.count("10.0.0.2:8000")
    assert got.count("10.0.0.3:8000") == 0 and 1.5 < a / b < 2.7  # about 0.5 : 0.25


def test_max_num_of_endpoints_gives_fallbacks():
    s = upstream_scheduler({"plugins": [{"type": "queue-scorer"},
                                        {"type": "max-score-picker", "parameters": {"maxNumOfEndpoints": 3}}]})
    chosen = s.schedule(SchedRequest("llama"), [ep(1, waiting=3), ep(2, waiting=1), ep(3), ep(4, waiting=2)])
    assert [e.address for e in chosen] == ["10.0.0.3:8000", "10.0.0.2:8000", "10.0.0.4:8000"]


@pytest.mark.parametrize("raw, message", [
    ({"plugins": [{"type": "metrics-data-source", "parameters": {"scheme": "https"}}]}, "scheme: only 'http'"),
    ({"plugins": [{"type": "metrics-data-source", "parameters": {"path": "/stats"}}]}, "path: the picker reads /metrics"),
    ({"plugins": [{"type": "core-metrics-extractor", "parameters": {"defaultEngine": "tgi"}}]},
     "defaultEngine: engine 'tgi' is not supported"),
    ({"plugins": [{"type": "queue-scorer"}], "dataLayer": {"discovery": {"pluginRef": "queue-scorer"}}},
     "dataLayer.discovery: not supported"),
    ({"plugins": [{"type": "queue-scorer"}], "parser": {"pluginRef": "queue-scorer"}}, "is not a parser"),
    ({"plugins": [{"type": "queue-scorer"}], "saturationDetector": {"pluginRef": "queue-scorer"}},
     "is not a saturation detector"),
    ({"plugins": [{"type": "queue-scorer"}], "flowControl": {"maxRequest": 5}}, "flowControl: unknown field(s) maxRequest"),
])
def test_upstream_sections_are_checked(raw, message):
    with pytest.raises(ConfigError, match="^scheduling") as e:
        check_scheduling(raw)
    assert message in str(e.value)


def test_flow_control_section_without_its_gate_is_checked_and_unused():
    section = {"maxRequests": "100", "priorityBands": [{"priority": 1, "maxRequests": 10}]}
    spec = check_scheduling({"plugins": [{"type": "queue-scorer"}], "flowControl": section})
    assert spec.flow_control is None and spec.feature_gates == ()
    with pytest.raises(ConfigError, match=r"flowControl.priorityBands\[0\].maxRequests: expected a quantity"):
        check_scheduling({"plugins": [{"type": "queue-scorer"}], "flowControl": {"priorityBands": [
            {"priority": 1, "maxRequests": "lots"}]}})


def test_flow_control_gate_and_section_as_upstream_writes_them():
    spec = check_scheduling({
        "featureGates": ["flowControl"],
        "plugins": [{"type": "queue-scorer"}, {"type": "round-robin-fairness-policy", "name": "rr"},
                    {"type": "concurrency-detector", "parameters": {"maxConcurrency": 16, "headroom": 0.25}}],
        "flowControl": {"maxBytes": "1Gi", "defaultRequestTTL": "1m30s", "noEndpointRequestTTL": "5m",
                        "saturationDetector": {"pluginRef": "concurrency-detector"},
                        "defaultPriorityBand": {"fairnessPolicyRef": "global-strict-fairness-policy"},
                        "priorityBands": [{"priority": 10, "maxRequests": "2k", "fairnessPolicyRef": "rr"}]}})
    f = spec.flow_control
    assert (f.max_bytes, f.ttl, f.no_endpoint_ttl, f.detector) == (2**30, 90.0, 300.0, "concurrency-detector")
    assert f.band(10).max_requests == 2000 and f.band(10).fairness == "round-robin-fairness-policy"
    assert f.band(3).priority is None and f.band(3).fairness == "global-strict-fairness-policy"  # the template
    assert f.band(3).max_requests == 5000  # upstream's default


@pytest.mark.parametrize("section, message", [
    ({"defaultRequestTTL": "soon"}, "flowControl.defaultRequestTTL: expected a duration"),
    ({"priorityBands": [{"priority": 1}, {"priority": 1}]}, "priorityBands[1].priority: band 1 is listed twice"),
    ({"priorityBands": [{"priority": 1, "fairnessPolicyRef": "queue-scorer"}]}, "is a 'queue-scorer'; a fairness policy"),
    ({"saturationDetector": {"pluginRef": "queue-scorer"}}, "a saturation detector is one of"),
    ({"enableEviction": True}, "enableEviction: not supported"),
])
def test_flow_control_mistakes_name_the_field(section, message):
    with pytest.raises(ConfigError) as e:
        check_scheduling({"featureGates": ["flowControl"], "plugins": [{"type": "queue-scorer"}], "flowControl": section})
    assert message in str(e.value)
