"""Several stacks on one cluster: a namespace per stack (created or asserted), a GatewayClass
shared by reference, optional name prefixes for stacks sharing a namespace, collisions refused
naming both config paths; PodDisruptionBudgets for what node drains evict."""
from __future__ import annotations

import pytest
import yaml

from infershift import spec
from infershift.components.render import render_values


def _values(stack: str) -> dict:
    return spec.config_values(yaml.safe_load(spec.stack_path(stack).read_text()))


def _names(render) -> set[tuple[str, str]]:
    return {(o["kind"], o["metadata"]["name"]) for o in render.objects}


def test_a_name_prefix_renames_every_object_and_keeps_every_reference():
    values = _values("ack-canary")
    values["platform"]["namePrefix"] = "team-a-"
    render = render_values(values)
    for kind, name in _names(render):
        if kind in ("GatewayClass",):
            assert name == "team-a-inference-gateway"  # the class this stack creates is its own
        elif kind not in ("Namespace",):
            assert name.startswith("team-a-"), (kind, name)
    route = render.one("HTTPRoute", "team-a-inference-route")
    assert {b["name"] for b in route["spec"]["rules"][0]["backendRefs"]} == {"team-a-mymodel-pool-v1",
                                                                              "team-a-mymodel-pool-v2"}
    assert route["spec"]["parentRefs"][0]["name"] == "team-a-inference-gateway"
    pool = render.one("InferencePool", "team-a-mymodel-pool-v1")
    assert pool["spec"]["extensionRef"]["name"] == "team-a-mymodel-pool-v1-epp"
    # what pools select and what clients send do not change
    assert pool["spec"]["selector"] == {"app": "custom-serving", "release": "qwen"}
    model = next(o for o in render.objects if o["kind"] == "InferenceModel" and "travelhelper" in o["metadata"]["name"])
    assert model["spec"]["modelName"] == "travelhelper"
    config = yaml.safe_load(render.one("ConfigMap", "team-a-mymodel-pool-v1-epp")["data"]["config.yaml"])
    assert config["pool"]["name"] == "team-a-mymodel-pool-v1"  # the picker watches its own pool by name
    # config paths stay the user's
    paths = str(render.exports["weightPaths"])
    assert "routes.inference-route.backends.mymodel-pool-v2" in paths and "team-a-" not in paths
    assert render.exports["routeWeights"] == {"inference-route": {"mymodel-pool-v1": 90, "mymodel-pool-v2": 10}}


def test_two_prefixed_stacks_in_one_namespace_share_no_object():
    a, b = _values("ack-canary"), _values("ack-canary")
    a["platform"]["namePrefix"], b["platform"]["namePrefix"] = "blue-", "green-"
    b["gateway"]["createClass"] = False  # the second stack references the first's GatewayClass
    ra, rb = render_values(a), render_values(b)
    shared = _names(ra) & _names(rb)
    assert shared == set(), shared
    assert rb.one("Gateway", "green-inference-gateway")["spec"]["gatewayClassName"] == "inference-gateway"


def test_objects_two_parts_would_both_declare_are_refused_naming_both_paths():
    values = _values("ack-canary")
    svc = values["services"]["qwen"]
    values["services"]["mymodel-pool-v1-epp"] = dict(svc)  # the Deployment pool v1's picker has
    with pytest.raises(spec.StackConfigError) as e:
        spec.validate(values)
    problems = [p for p in e.value.problems if p.path == "pools.mymodel-pool-v1.picker"]
    assert problems and "services.mymodel-pool-v1-epp" in problems[0].message


def test_a_route_and_a_mirror_of_one_name_collide():
    values = _values("ack-mirror")
    mirror = next(iter(values["mirrors"]))
    values["routes"] = {mirror: {"backends": {values["mirrors"][mirror]["backend"]: 100}}}
    with pytest.raises(spec.StackConfigError) as e:
        spec.validate(values)
    assert any(f"mirrors.{mirror}" in p.path and f"routes.{mirror}" in p.message for p in e.value.problems), e.value


def test_names_kubernetes_refuses_are_caught():
    values = _values("ack-canary")
    values["platform"]["namePrefix"] = "a" * 20
    values["pools"]["p" * 40] = values["pools"].pop("mymodel-pool-v2")
    values["routes"]["inference-route"]["backends"] = {"mymodel-pool-v1": 100, "p" * 40: 0}
    with pytest.raises(spec.StackConfigError) as e:
        spec.validate(values)
    assert any("longer than 63" in p.message for p in e.value.problems), e.value


def test_the_namespace_is_created_or_asserted():
    values = _values("ack-canary")
    values["platform"]["namespace"] = "llm"
    render = render_values(values)
    assert ("Namespace", "llm") in _names(render)
    assert all(o["metadata"].get("namespace") in (None, "llm") for o in render.objects)
    values["platform"]["createNamespace"] = False
    render = render_values(values)
    assert ("Namespace", "llm") not in _names(render)
    reads = [r for r in render.resources if r.read]
    assert [(r.type, r.name) for r in reads] == [("kubernetes:core/v1:Namespace", "cluster-namespace")]
    # the default namespace is neither created nor read
    render = render_values(_values("ack-canary"))
    assert ("Namespace", "default") not in _names(render) and not [r for r in render.resources if r.read]


def test_every_object_waits_for_its_namespace():
    values = _values("ack-canary")
    values["platform"]["namespace"] = "llm"
    render = render_values(values)
    namespace = next(r for r in render.resources if r.type == "kubernetes:core/v1:Namespace")
    namespaced = [r for r in render.resources if r.is_kubernetes and r.manifest["metadata"].get("namespace")]
    assert len(namespaced) > 20
    waiting = [r for r in namespaced if any(d.endswith(f"::{namespace.name}") for d in r.depends_on)]
    assert waiting == namespaced, [r.name for r in namespaced if r not in waiting]


def test_model_servers_have_a_disruption_budget_that_never_blocks_a_drain():
    render = render_values(_values("ack-canary"))
    pdb = render.one("PodDisruptionBudget", "qwen")
    assert pdb["apiVersion"] == "policy/v1"
    assert pdb["spec"] == {"maxUnavailable": 1, "selector": {"matchLabels": {"infershift.io/service": "qwen"}}}
    dep = render.one("Deployment", "qwen")
    assert pdb["spec"]["selector"] == dep["spec"]["selector"]


def test_pickers_have_a_disruption_budget_too():
    render = render_values(_values("ack-canary"))
    pdb = render.one("PodDisruptionBudget", "mymodel-pool-v1-epp")
    dep = render.one("Deployment", "mymodel-pool-v1-epp")
    assert pdb["spec"]["maxUnavailable"] == 1
    assert pdb["spec"]["selector"] == dep["spec"]["selector"]
