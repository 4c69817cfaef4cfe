"""The config file: the documented example parses; every mistake names its field."""
from __future__ import annotations

import textwrap

import pytest
import yaml

from infershift.picker.config import load_config, parse_config, parse_duration
from infershift.picker.errors import ConfigError
from infershift.picker.scheduling import build_scheduler

EXAMPLE = textwrap.dedent("""
    pool: {name: mymodel-pool-v1, namespace: default}
    endpoints:
      - {address: "127.0.0.1:8001", name: qwen-0, models: [mymodel, travel-helper-v1]}
    kubernetes:
      poolApiVersion: inference.networking.k8s.io/v1
    models:
      travelhelper:
        criticality: Critical
        targets: [{model: travel-helper-v1, weight: 90}, {model: travel-helper-v2, weight: 10}]
    sessionHeader: x-session-id
    failureMode: FailOpen
    limits: {maxBodyBytes: 20971520}
    metrics: {pollInterval: 50ms, staleAfter: 1s, modelsInterval: 2s}
    scheduling:
      apiVersion: llm-d.ai/v1alpha1
      kind: EndpointPickerConfig
      plugins:
        - {type: model-filter}
        - {type: saturation-filter, parameters: {queueDepthThreshold: 5, kvCacheThreshold: 0.8}}
        - {type: queue-scorer}
        - {type: kv-cache-utilization-scorer}
        - {type: lora-affinity-scorer}
        - {type: prefix-cache-scorer, parameters: {blockSize: 64, lruCapacityPerServer: 31250}}
        - {type: max-score-picker}
      schedulingProfiles:
        - name: default
          plugins:
            - {pluginRef: model-filter}
            - {pluginRef: saturation-filter}
            - {pluginRef: queue-scorer, weight: 2}
            - {pluginRef: kv-cache-utilization-scorer, weight: 2}
            - {pluginRef: lora-affinity-scorer, weight: 1}
            - {pluginRef: prefix-cache-scorer, weight: 3}
            - {pluginRef: max-score-picker}
""")


def test_documented_example_parses(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text(EXAMPLE)
    cfg = load_config(str(p))
    assert cfg.pool_name == "mymodel-pool-v1"
    assert cfg.endpoints[0].address == "127.0.0.1:8001" and cfg.endpoints[0].models == ("mymodel", "travel-helper-v1")
    route = cfg.models["travelhelper"]
    assert route.criticality == "Critical" and not route.sheddable
    assert [(t.model, t.weight) for t in route.targets] == [("travel-helper-v1", 90), ("travel-helper-v2", 10)]
    assert cfg.session_header == "x-session-id"
    assert (cfg.poll_interval, cfg.stale_after, cfg.models_interval) == (0.05, 1.0, 2.0)
    sched = build_scheduler(cfg.scheduling, __import__("random").Random(1))
    assert [f.name for f in sched.filters] == ["model-filter", "saturation-filter"]
    assert [(s.name, w) for s, w in sched.scorers] == [("queue-scorer", 2), ("kv-cache-utilization-scorer", 2),
                                                       ("lora-affinity-scorer", 1), ("prefix-cache-scorer", 3)]


def test_defaults_when_omitted():
    cfg = parse_config({"endpoints": [{"address": "10.0.0.1:8000"}]})
    assert cfg.pool_name == "default-pool" and cfg.max_body_bytes == 20 * 1024 * 1024
    assert cfg.scheduling.profile.picker == "max-score-picker"
    assert cfg.endpoints[0].models is None


@pytest.mark.parametrize("mutate, field", [
    (lambda c: c.update(endpoints=[{"address": "nohost"}]), "endpoints[0].address"),
    (lambda c: c.update(endpoints=[{"address": "1.2.3.4:80", "modles": []}]), "endpoints[0]: unknown field(s) modles"),
    (lambda c: c["models"]["travelhelper"].update(criticality="Urgent"), "models.travelhelper.criticality"),
    (lambda c: c["models"]["travelhelper"]["targets"][1].update(weight=-1), "models.travelhelper.targets[1].weight"),
    (lambda c: c["models"]["travelhelper"].update(targets=[]), "models.travelhelper.targets"),
    (lambda c: c["models"]["travelhelper"].update(priority="high"), "models.travelhelper.priority"),
    (lambda c: c["metrics"].update(pollInterval="fast"), "metrics.pollInterval"),
    (lambda c: c["limits"].update(maxBodyBytes=0), "limits.maxBodyBytes"),
    (lambda c: c.update(failureMode="Maybe"), "failureMode"),
    (lambda c: c["kubernetes"].update(poolApiVersion="v9"), "kubernetes.poolApiVersion"),
    (lambda c: c["scheduling"]["schedulingProfiles"][0]["plugins"][6].update(pluginRef="nope"),
     "scheduling.schedulingProfiles[0].plugins[6].pluginRef: no plugin named 'nope'"),
    (lambda c: c["scheduling"]["schedulingProfiles"][0]["plugins"][2].update(weight=-1),
     "scheduling.schedulingProfiles[0].plugins[2].weight"),
    (lambda c: c["scheduling"]["schedulingProfiles"][0]["plugins"][2].update(wieght=1),
     "scheduling.schedulingProfiles[0].plugins[2]: unknown field(s) wieght"),
    (lambda c: c["scheduling"]["plugins"].append({"type": "queue-scorer"}), "duplicate plugin name"),
    (lambda c: c["scheduling"].update(apiVersion="v1"), "scheduling.apiVersion"),
    (lambda c: c["scheduling"].update(kind="Config"), "scheduling.kind"),
    (lambda c: c["scheduling"].update(featureGates=["turbo"]), "scheduling.featureGates[0]: unknown feature gate"),
    (lambda c: c["scheduling"].update(schedulingProfile=[]), "scheduling: unknown field(s) schedulingProfile"),
    (lambda c: c["scheduling"]["schedulingProfiles"].append({"name": "second", "plugins": []}),
     "scheduling.schedulingProfiles: 2 profiles (default, second); infershift's picker runs one"),
    (lambda c: c.update(extra=1), "config: unknown field(s) extra"),
    (lambda c: (c.pop("endpoints"), c.pop("kubernetes")), "set either endpoints"),
])
def test_errors_name_the_field(mutate, field):
    raw = yaml.safe_load(EXAMPLE)
    mutate(raw)
    with pytest.raises(ConfigError) as e:
        parse_config(raw)
    assert field in str(e.value)


def test_unknown_plugin_type_and_two_pickers():
    raw = yaml.safe_load(EXAMPLE)
    raw["scheduling"]["plugins"].append({"type": "magic-scorer"})
    with pytest.raises(ConfigError, match=r"scheduling\.plugins\[7\]\.type: unknown plugin type 'magic-scorer'"):
        parse_config(raw)
    raw = yaml.safe_load(EXAMPLE)
    raw["scheduling"]["plugins"].append({"type": "random-picker"})
    raw["scheduling"]["schedulingProfiles"][0]["plugins"].append({"pluginRef": "random-picker"})
    with pytest.raises(ConfigError, match=r"plugins\[7\]\.pluginRef: a profile takes one picker; it already has "
                                          r"'max-score-picker'"):
        parse_config(raw)


LEGACY = textwrap.dedent("""
    plugins:
      - {type: model-filter}
      - {type: saturation-filter, parameters: {queueDepthThreshold: 5, kvCacheThreshold: 0.8}}
      - {type: queue-scorer}
      - {type: kv-cache-scorer}
      - {type: max-score-picker}
    profile:
      filters: [model-filter, saturation-filter]
      scorers: [{plugin: queue-scorer, weight: 2}, {plugin: kv-cache-scorer, weight: 2}]
      picker: max-score-picker
""")


def test_deprecated_infershift_format_still_loads():
    """`{plugins, profile}`: read into the same spec as the EndpointPickerConfig it stands for."""
    legacy = parse_config({"endpoints": [], "scheduling": yaml.safe_load(LEGACY)}).scheduling
    assert legacy.source == "legacy" and legacy.saturation_detector is None
    upstream = parse_config({"endpoints": [], "scheduling": {
        "plugins": yaml.safe_load(LEGACY)["plugins"],
        "schedulingProfiles": [{"name": "default", "plugins": [
            {"pluginRef": "model-filter"}, {"pluginRef": "saturation-filter"}, {"pluginRef": "queue-scorer", "weight": 2},
            {"pluginRef": "kv-cache-scorer", "weight": 2}, {"pluginRef": "max-score-picker"}]}]}}).scheduling
    assert (legacy.plugins, legacy.profile) == (upstream.plugins, upstream.profile)
    s = build_scheduler(legacy, __import__("random").Random(1))
    assert [type(x).__name__ for x, _ in s.scorers] == ["QueueScorer", "KVCacheScorer"]  # kv-cache-scorer: an alias


@pytest.mark.parametrize("mutate, field", [
    (lambda c: c["profile"].update(picker="nope"), "scheduling.profile.picker"),
    (lambda c: c["profile"]["scorers"][0].update(plugin="ghost"), "scheduling.profile.scorers[0].plugin"),
    (lambda c: c["plugins"].append({"type": "queue-scorer"}), "duplicate plugin name"),
])
def test_deprecated_format_errors_name_the_field(mutate, field):
    raw = yaml.safe_load(LEGACY)
    mutate(raw)
    with pytest.raises(ConfigError) as e:
        parse_config({"endpoints": [], "scheduling": raw})
    assert field in str(e.value)


def test_deprecated_format_wrong_role():
    raw = yaml.safe_load(LEGACY)
    raw["profile"]["picker"] = "queue-scorer"
    with pytest.raises(ConfigError, match="not a picker"):
        build_scheduler(parse_config({"endpoints": [], "scheduling": raw}).scheduling, __import__("random").Random(1))


def test_durations():
    assert parse_duration("50ms", "x") == 0.05 and parse_duration("2m", "x") == 120 and parse_duration(1.5, "x") == 1.5
    for bad in ("0s", "-1s", "soon", True):
        with pytest.raises(ConfigError, match="x"):
            parse_duration(bad, "x")


def test_unreadable_or_invalid_yaml(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(str(tmp_path / "missing.yaml"))
    p = tmp_path / "bad.yaml"
    p.write_text("pool: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(str(p))


@pytest.mark.parametrize("ptype,good,bad", [
    ("saturation-filter", "queueDepthThreshold", "queueDepthTreshold"),
    ("lora-affinity-scorer", "activeScore", "activeScor"),
    ("prefix-cache-scorer", "blockSize", "blocksize"),
    ("queue-scorer", None, "weight"),
    ("max-score-picker", "maxNumOfEndpoints", "seed"),
    ("utilization-detector", "queueDepthThreshold", "queueDepthTreshold"),
    ("load-aware-scorer", "threshold", "treshold"),
    ("decode-filter", None, "role"),
    ("weighted-random-picker", "maxNumOfEndpoints", "max"),
])
def test_every_plugin_rejects_parameters_it_does_not_read(ptype, good, bad):
    from infershift.picker.scheduling import check_scheduling

    role = "picker" if ptype.endswith("picker") else "filters" if ptype.endswith("filter") else "scorers"

    def sched(params):
        plugins = [{"type": ptype, "parameters": params}]
        return {"plugins": plugins, "schedulingProfiles": [{"name": "p", "plugins": [{"pluginRef": ptype}]}]}

    if good:
        check_scheduling(sched({good: 1}))
    with pytest.raises(ConfigError) as e:
        check_scheduling(sched({bad: 1}))
    assert f"scheduling plugin {ptype}.parameters: unknown {bad}" in str(e.value)


def test_check_scheduling_is_what_the_picker_builds():
    """The stack spec validates with check_scheduling; it must accept the default and name the plugin's index."""
    from infershift.picker.config import DEFAULT_SCHEDULING
    from infershift.picker.scheduling import check_scheduling

    assert check_scheduling(DEFAULT_SCHEDULING) == parse_config({"endpoints": []}).scheduling
    bad = {"plugins": [{"type": "model-filter"}, {"type": "nope"}], "schedulingProfiles": [
        {"name": "default", "plugins": [{"pluginRef": "model-filter"}]}]}
    with pytest.raises(ConfigError, match=r"scheduling\.plugins\[1\]\.type: unknown plugin type 'nope'"):
        check_scheduling(bad)
    legacy = {"plugins": [{"type": "model-filter"}, {"type": "nope"}], "profile": {"picker": "model-filter"}}
    with pytest.raises(ConfigError, match=r"scheduling\.plugins\[1\]\.type: unknown plugin type 'nope'"):
        check_scheduling(legacy)
