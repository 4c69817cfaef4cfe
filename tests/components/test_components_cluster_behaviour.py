"""What a real `pulumi up` does with the rendered objects, checked against the providers' own rules:
which edits replace an object, what pulumi-kubernetes awaits and for how long, how node pools are
sized. The rules are transcribed from the providers' source, cited per table; only a real cluster
shows the controllers acting on them."""
from __future__ import annotations

import copy
import json
import re

import pytest
import yaml

from infershift import spec
from infershift.components.render import render_values

# pulumi-kubernetes provider/pkg/provider/diff.go (forceNewProperties, HEAD 94977969d): a change of
# any of these paths replaces the object (delete and re-create: for a Deployment, every replica).
# ConfigMap .data/.binaryData replace only without the provider's enableConfigMapMutable.
FORCE_NEW = {
    "Deployment": ["spec.selector"],
    "Service": ["spec.clusterIP"],
    "RoleBinding": ["roleRef"],
    "Secret": ["type", "data", "stringData"],
}
CONFIGMAP_IMMUTABLE_WITHOUT_MUTABLE = ["data", "binaryData"]


def _values(stack: str) -> dict:
    return spec.config_values(yaml.safe_load(spec.stack_path(stack).read_text()))


def _objects(render) -> dict:
    return {(o["kind"], o["metadata"]["name"]): o for o in render.objects}


def _get(obj: dict, path: str):
    for part in path.split("."):
        if not isinstance(obj, dict):
            return None
        obj = obj.get(part)
    return obj


def _replaced(before, after) -> list[str]:
    """Objects whose identity or force-new fields differ (what pulumi-kubernetes would replace)."""
    a, b = _objects(before), _objects(after)
    assert set(a) == set(b), set(a) ^ set(b)
    providers = [r for r in after.resources if r.type == "pulumi:providers:kubernetes"]
    mutable_cms = all(p.inputs.get("enableConfigMapMutable") in (True, "true") for p in providers)
    out = []
    for key, obj in a.items():
        paths = FORCE_NEW.get(key[0], [])
        if key[0] == "ConfigMap" and not mutable_cms:
            paths = CONFIGMAP_IMMUTABLE_WITHOUT_MUTABLE
        out += [f"{key[0]}/{key[1]}.{p}" for p in paths if _get(obj, p) != _get(b[key], p)]
    return out


def _changed(before, after) -> set[tuple[str, str]]:
    a, b = _objects(before), _objects(after)
    return {k for k in a if a[k] != b[k]}


ROUTINE_EDITS = {
    # (stack, edit of the config values, what must change)
    "labels": ("ack-canary", lambda v: (
        v["services"]["qwen"]["labels"].update(release="qwen-2"),
        v["pools"]["mymodel-pool-v1"]["selector"].update(release="qwen-2"))),
    "replicas": ("ack-canary", lambda v: v["services"]["qwen"].update(replicas=3)),
    "weights": ("ack-canary", lambda v: v["routes"]["inference-route"]["backends"].update(
        {"mymodel-pool-v1": 50, "mymodel-pool-v2": 50})),
    "chat template": ("ack-multi-lora", lambda v: v["services"][next(iter(v["services"]))].update(
        chatTemplate="{{ messages | length }}")),
    "scheduling": ("ack-canary", lambda v: v["pools"]["mymodel-pool-v1"].setdefault("picker", {}).update(
        scheduling={"plugins": [{"type": "queue-scorer"}, {"type": "max-score-picker"}],
                    "profile": {"scorers": [{"plugin": "queue-scorer", "weight": 1}], "picker": "max-score-picker"}})),
}


@pytest.mark.parametrize("edit", ROUTINE_EDITS)
def test_routine_edits_replace_nothing(edit):
    stack, change = ROUTINE_EDITS[edit]
    values = _values(stack)
    before = render_values(copy.deepcopy(values))
    change(values)
    after = render_values(values)
    assert _changed(before, after), "the edit changed nothing: the test would prove nothing"
    assert _replaced(before, after) == []


def test_a_label_change_keeps_the_deployment_selector_and_moves_the_pods():
    values = _values("ack-canary")
    before = _objects(render_values(copy.deepcopy(values)))[("Deployment", "qwen")]
    values["services"]["qwen"]["labels"]["release"] = "qwen-2"
    values["pools"]["mymodel-pool-v1"]["selector"]["release"] = "qwen-2"
    after_render = render_values(values)
    after = _objects(after_render)[("Deployment", "qwen")]
    assert before["spec"]["selector"] == after["spec"]["selector"] == {"matchLabels": {"infershift.io/service": "qwen"}}
    assert after["spec"]["template"]["metadata"]["labels"]["release"] == "qwen-2"
    pool = _objects(after_render)[("InferencePool", "mymodel-pool-v1")]
    selector = pool["spec"]["selector"]
    selector = selector.get("matchLabels", selector)
    assert selector.items() <= after["spec"]["template"]["metadata"]["labels"].items()


def test_a_chat_template_change_rolls_the_pods():
    stack = "ack-multi-lora"
    values = _values(stack)
    name = next(n for n, s in values["services"].items() if s.get("chatTemplate"))
    before = _objects(render_values(copy.deepcopy(values)))
    values["services"][name]["chatTemplate"] = "{{ messages | length }}"
    after = _objects(render_values(values))
    key = ("Deployment", name)
    ann = "infershift.io/chat-template-hash"
    assert before[key]["spec"]["template"]["metadata"]["annotations"][ann] != \
        after[key]["spec"]["template"]["metadata"]["annotations"][ann]
    cm = ("ConfigMap", f"{name}-chat-template")
    assert after[cm]["data"] != before[cm]["data"]


@pytest.mark.parametrize("stack", ["ack-canary", "gke-node-rollout", "local"])
def test_providers_are_replaced_only_when_the_cluster_changes(stack):
    providers = [r for r in render_values(_values(stack)).resources if r.type == "pulumi:providers:kubernetes"]
    assert providers
    for p in providers:
        assert p.inputs["clusterIdentifier"], p.inputs
        assert "\n" not in p.inputs["clusterIdentifier"] and "token" not in p.inputs["clusterIdentifier"]
        assert p.inputs["enableConfigMapMutable"] in (True, "true")


def test_a_kubeconfig_given_inline_never_lands_in_the_identifier():
    values = _values("local")
    inline = "apiVersion: v1\nkind: Config\nusers: [{name: u, user: {token: s3cret}}]\n"
    values["platform"]["kubeconfig"] = {"path": inline}
    providers = [r for r in render_values(values).resources if r.type == "pulumi:providers:kubernetes"]
    assert "s3cret" not in providers[0].inputs["clusterIdentifier"]


# --- await -------------------------------------------------------------------------------


def test_deployments_wait_long_enough_for_gpu_nodes_and_model_loads():
    objs = _objects(render_values(_values("ack-canary")))
    dep = objs[("Deployment", "qwen")]
    assert dep["metadata"]["annotations"]["pulumi.com/timeoutSeconds"] == "2700"
    values = _values("ack-canary")
    values["services"]["qwen"]["await"] = {"timeout": "90m"}
    values["services"]["deepseek-r1"]["await"] = {"skip": True}
    objs = _objects(render_values(values))
    assert objs[("Deployment", "qwen")]["metadata"]["annotations"]["pulumi.com/timeoutSeconds"] == "5400"
    assert objs[("Deployment", "deepseek-r1")]["metadata"]["annotations"] == {"pulumi.com/skipAwait": "true"}


def test_gateways_and_routes_are_awaited_on_their_conditions():
    objs = _objects(render_values(_values("ack-mirror")))
    gw = next(o for (k, _), o in objs.items() if k == "Gateway")
    assert gw["metadata"]["annotations"]["pulumi.com/waitFor"] == "condition=Programmed"
    routes = [o for (k, _), o in objs.items() if k == "HTTPRoute"]
    assert routes
    for route in routes:
        expressions = json.loads(route["metadata"]["annotations"]["pulumi.com/waitFor"])
        # the provider parses each as jsonpath=<{path}>=<value> (provider/pkg/jsonpath/jsonpath.go)
        assert [re.match(r'^jsonpath=\{\.status\.parents\[0\]\.conditions\[\?\(@\.type=="(\w+)"\)\]\.status\}=True$',
                         e).group(1) for e in expressions] == ["Accepted", "ResolvedRefs"]
        assert len(route["spec"]["parentRefs"]) == 1  # parents[0] is the route's only parent
    values = _values("ack-mirror")
    values["gateway"]["awaitStatus"] = False
    objs = _objects(render_values(values))
    assert all("annotations" not in o["metadata"] for (k, _), o in objs.items() if k in ("Gateway", "HTTPRoute"))


def test_the_stack_exports_the_gateway_address_weights_and_paths():
    exports = render_values(_values("ack-canary")).exports
    assert "gatewayAddress" in exports
    assert exports["routeWeights"] == {"inference-route": {"mymodel-pool-v1": 90, "mymodel-pool-v2": 10}}


# --- probes ------------------------------------------------------------------------------


def test_vllm_has_a_startup_probe_for_loading_and_fast_readiness_after():
    c = _objects(render_values(_values("ack-canary")))[("Deployment", "qwen")]["spec"]["template"]["spec"]["containers"][0]
    period = c["startupProbe"]["periodSeconds"]
    assert c["startupProbe"]["failureThreshold"] * period == 2400  # 40 minutes to load
    assert c["readinessProbe"]["failureThreshold"] * period <= 15
    assert c["livenessProbe"]["failureThreshold"] * period <= 60
    assert "initialDelaySeconds" not in c["readinessProbe"]


def test_probe_timings_are_configurable_in_seconds():
    values = _values("ack-canary")
    values["services"]["qwen"]["probes"] = {"startupTimeout": "2h", "period": "10s", "readinessTimeout": "30s",
                                            "livenessTimeout": "5m"}
    c = _objects(render_values(values))[("Deployment", "qwen")]["spec"]["template"]["spec"]["containers"][0]
    assert (c["startupProbe"]["periodSeconds"], c["startupProbe"]["failureThreshold"]) == (10, 720)
    assert c["readinessProbe"]["failureThreshold"] == 3 and c["livenessProbe"]["failureThreshold"] == 30


@pytest.mark.parametrize("probes,message", [
    ({"period": "500ms"}, "under a second"),
    ({"period": "30s", "readinessTimeout": "10s"}, "readinessTimeout (10s) is shorter than period (30s)"),
])
def test_bad_probe_timings_name_the_field(probes, message):
    values = _values("ack-canary")
    values["services"]["qwen"]["probes"] = probes
    with pytest.raises(spec.StackConfigError) as e:
        spec.validate(values)
    assert "services.qwen.probes" in str(e.value) and message in str(e.value)


# --- node pools --------------------------------------------------------------------------


def _cloud(render, type_prefix: str) -> dict:
    return {r.name: r for r in render.resources if r.type.startswith(type_prefix)}


def test_ack_fixed_pools_get_their_size_and_autoscaling_pools_a_gpu_scaling_group():
    pools = _cloud(render_values(_values("ack-canary")), "alicloud:cs/nodePool")
    pool = pools["gpu-a10-nodepool"].inputs
    assert pool["desiredSize"] == "2" and "scalingConfig" not in pool
    values = _values("ack-canary")
    values["nodePools"]["gpu-a10"].update(minNodes=0, maxNodes=4)
    values["nodePools"]["gpu-a10"]["ack"]["autoscaler"] = True
    pool = _cloud(render_values(values), "alicloud:cs/nodePool")["gpu-a10-nodepool"].inputs
    assert pool["scalingConfig"] == {"enable": True, "minSize": 0, "maxSize": 4, "type": "gpu"}
    assert "desiredSize" not in pool


@pytest.mark.parametrize("change,path,message", [
    ({"minNodes": 0, "maxNodes": 4}, "nodePools.gpu-a10.maxNodes", "ack.autoscaler: true"),
    ({"minNodes": 0, "maxNodes": 4, "desiredNodes": 2, "ack": {"autoscaler": True}}, "nodePools.gpu-a10.desiredNodes",
     "has no desired size"),
])
def test_ack_refuses_a_pool_that_would_not_come_up_as_configured(change, path, message):
    values = _values("ack-canary")
    np = values["nodePools"]["gpu-a10"]
    np["ack"].update(change.pop("ack", {}))
    np.update(change)
    with pytest.raises(spec.StackConfigError) as e:
        spec.validate(values)
    assert any(p.path == path and message in p.message for p in e.value.problems), e.value


def test_gke_pools_are_placed_in_named_zones_with_total_counts_and_never_replaced_by_a_count_edit():
    render = render_values(_values("gke-node-rollout"))
    pool = _cloud(render, "gcp:container/nodePool")["gpu-l4-nodepool"]
    assert pool.inputs["nodeLocations"] == ["us-central1-a"]
    assert pool.inputs["autoscaling"]["totalMinNodeCount"] == 1 and pool.inputs["autoscaling"]["totalMaxNodeCount"] == 4
    # terraform-provider-google resource_container_node_pool: initial_node_count and name are
    # ForceNew; the count is ignored after creation and the name is Pulumi's auto-name.
    assert "initialNodeCount" in pool.ignore_changes
    assert "name" not in pool.inputs
    values = _values("gke-node-rollout")
    values["nodePools"]["gpu-l4"].update(minNodes=2, maxNodes=6)
    after = _cloud(render_values(values), "gcp:container/nodePool")["gpu-l4-nodepool"]
    changed = {k for k in set(pool.inputs) | set(after.inputs) if pool.inputs.get(k) != after.inputs.get(k)}
    assert changed <= {"autoscaling", "initialNodeCount"}


@pytest.mark.parametrize("change,path,message", [
    ({"gke": {"zones": []}}, "nodePools.gpu-l4.gke.zones", "is a region"),
    ({"gke": {"zones": ["europe-west4-a"]}}, "nodePools.gpu-l4.gke.zones[0]", "not a zone of"),
    ({"minNodes": 3, "maxNodes": 3, "gke": {"zones": ["us-central1-a", "us-central1-b"]}}, "nodePools.gpu-l4.minNodes",
     "cannot be spread evenly over 2 zones"),
])
def test_gke_pool_counts_and_zones_are_validated(change, path, message):
    values = _values("gke-node-rollout")
    np = values["nodePools"]["gpu-l4"]
    np["gke"].update(change.pop("gke", {}))
    np.update(change)
    with pytest.raises(spec.StackConfigError) as e:
        spec.validate(values)
    assert any(p.path == path and message in p.message for p in e.value.problems), e.value


def test_protect_and_retain_reach_every_object_of_a_pool_kept_for_rollback():
    values = _values("ack-canary")
    values["pools"]["mymodel-pool-v2"].update(protect=True, retainOnDelete=True)
    render = render_values(values)
    kept = [r for r in render.resources if r.name.startswith("mymodel-pool-v2")]
    assert len(kept) >= 8
    assert all(r.protect and r.retain_on_delete for r in kept), [(r.name, r.protect, r.retain_on_delete) for r in kept]
    others = [r for r in render.resources if r.name.startswith("mymodel-pool-v1")]
    assert others and not any(r.protect or r.retain_on_delete for r in others)


# --- picker modes (ACK's add-on) ---------------------------------------------------------


def test_ack_self_hosted_pickers_patch_the_add_on_controller():
    render = render_values(_values("ack-canary"))
    patches = [r for r in render.resources if r.is_patch]
    assert [r.type for r in patches] == ["kubernetes:apps/v1:DeploymentPatch"]
    patch = patches[0].manifest
    assert (patch["metadata"]["namespace"], patch["metadata"]["name"]) == ("envoy-gateway-system", "envoy-gateway")
    assert patch["metadata"]["annotations"]["pulumi.com/patchForce"] == "true"
    containers = patch["spec"]["template"]["spec"]["containers"]
    assert containers == [{"env": [{"name": "SELF_HOST_EPP", "value": "true"}], "name": "envoy-gateway"}]
    # the patch is no object of the stack's own: not among the objects devstack or the schemas see
    assert not any(o["metadata"]["name"] == "envoy-gateway" for o in render.objects if o["kind"] == "Deployment")
    values = _values("ack-canary")
    values["platform"]["ack"].update(selfHostEpp=False, controllerContainers=["envoy-gateway", "ai-extension"])
    assert not [r for r in render_values(values).resources if r.is_patch]
    values["platform"]["ack"]["selfHostEpp"] = True
    patch = next(r for r in render_values(values).resources if r.is_patch).manifest
    assert [c["name"] for c in patch["spec"]["template"]["spec"]["containers"]] == ["envoy-gateway", "ai-extension"]


def test_ack_managed_pickers_reference_the_add_ons_service_and_declare_no_picker():
    values = _values("ack-canary")
    del values["platform"]["ack"]["selfHostEpp"]
    for pool, service in (("mymodel-pool-v1", "mymodel-v1-ext-proc"), ("mymodel-pool-v2", "mymodel-v2-ext-proc")):
        values["pools"][pool]["picker"] = {"mode": "managed", "service": service}
    render = render_values(values)
    pool = render.one("InferencePool", "mymodel-pool-v1")
    assert pool["spec"]["extensionRef"]["name"] == "mymodel-v1-ext-proc"  # as seeds 000 and 003 write it
    assert not [o for o in render.objects if o["metadata"]["name"].endswith("-epp")]
    assert not [r for r in render.resources if r.is_patch]
    assert render.exports["pickerModes"] == {"mymodel-pool-v1": "managed", "mymodel-pool-v2": "managed"}


@pytest.mark.parametrize("edit,path,message", [
    (lambda v: v["platform"]["ack"].pop("selfHostEpp"), "platform.ack.selfHostEpp", "SELF_HOST_EPP=true"),
    (lambda v: v["pools"]["mymodel-pool-v2"].update(picker={"mode": "managed", "service": "mymodel-v2-ext-proc"}),
     "pools.mymodel-pool-v2.picker.mode", "use one mode"),
    (lambda v: v["pools"]["mymodel-pool-v2"].update(picker={"mode": "managed"}),
     "pools.mymodel-pool-v2.picker", "needs `service`"),
])
def test_ack_picker_mode_mistakes_explain_the_choice(edit, path, message):
    values = _values("ack-canary")
    edit(values)
    with pytest.raises(spec.StackConfigError) as e:
        spec.validate(values)
    assert any(p.path == path and message in p.message for p in e.value.problems), e.value


def test_managed_pickers_exist_only_where_a_platform_runs_them():
    values = _values("gke-node-rollout")
    pool = next(iter(values["pools"]))
    values["pools"][pool]["picker"] = {"mode": "managed", "service": "their-epp"}
    with pytest.raises(spec.StackConfigError) as e:
        spec.validate(values)
    assert any(p.path == f"pools.{pool}.picker.mode" and "ack" in p.message for p in e.value.problems), e.value


def test_ack_private_endpoint_rewrites_the_kubeconfig_server():
    from infershift.platforms.ack import with_server

    text = "apiVersion: v1\nclusters:\n- name: c\n  cluster: {server: 'https://47.0.0.1:6443', certificate-authority-data: X}\n"
    out = yaml.safe_load(with_server(text, "https://192.168.0.10:6443"))
    assert out["clusters"][0]["cluster"] == {"server": "https://192.168.0.10:6443", "certificate-authority-data": "X"}
    values = _values("ack-canary")
    values["platform"]["ack"]["privateEndpoint"] = "192.168.0.10:6443"
    with pytest.raises(spec.StackConfigError) as e:
        spec.validate(values)
    assert "platform.ack.privateEndpoint" in str(e.value)


# --- secrets -----------------------------------------------------------------------------

SECRET = "hf_s3cr3t_t0ken_value"


def _with_secrets() -> tuple[dict, set[str]]:
    values = _values("ack-canary")
    values["secrets"] = {"hf": {"token": SECRET}}
    values["registryCredentials"] = {"acr": {"server": "registry.cn-hangzhou.aliyuncs.com", "username": "u",
                                             "password": SECRET + "-pw"}}
    values["services"]["qwen"]["secretEnv"] = {"HF_TOKEN": {"secret": "hf", "key": "token"}}
    values["services"]["qwen"]["imagePullSecrets"] = ["acr"]
    return values, {"secrets", "registryCredentials"}


def test_secret_values_become_secrets_referenced_by_name_and_never_plaintext():
    values, secret_keys = _with_secrets()
    render = render_values(values, secret_keys=secret_keys)
    dumped = yaml.safe_dump(render.objects) + json.dumps([r.inputs for r in render.resources], default=str)
    assert SECRET not in dumped and "czNjcjN0" not in dumped  # nor its base64
    secrets = {o["metadata"]["name"]: o for o in render.objects if o["kind"] == "Secret"}
    # pulumi-kubernetes' Secret marks all of stringData secret (the render shows it redacted whole)
    assert secrets["hf"]["type"] == "Opaque" and secrets["hf"]["stringData"] == "[secret]"
    assert secrets["acr"]["type"] == "kubernetes.io/dockerconfigjson" and secrets["acr"]["stringData"] == "[secret]"
    pod = render.one("Deployment", "qwen")["spec"]["template"]["spec"]
    env = {e["name"]: e for e in pod["containers"][0]["env"]}
    assert env["HF_TOKEN"] == {"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "hf", "key": "token"}}}
    assert pod["imagePullSecrets"] == [{"name": "acr"}]
    values["pools"]["mymodel-pool-v1"].setdefault("picker", {})["imagePullSecrets"] = ["acr"]
    picker = render_values(values, secret_keys=secret_keys).one("Deployment", "mymodel-pool-v1-epp")
    assert picker["spec"]["template"]["spec"]["imagePullSecrets"] == [{"name": "acr"}]


def test_the_dockerconfigjson_is_what_the_kubelet_reads():
    from infershift.components.secrets import dockerconfigjson

    doc = json.loads(dockerconfigjson("reg.example", "u", "p"))
    assert doc == {"auths": {"reg.example": {"username": "u", "password": "p", "auth": "dTpw"}}}


def test_a_secret_set_on_another_key_is_refused_before_it_reaches_a_manifest():
    values = _values("ack-canary")
    values["services"]["qwen"]["env"] = {"HF_TOKEN": SECRET}
    with pytest.raises(Exception) as e:
        render_values(values, secret_keys={"services"})
    assert "infershift:services: is stored as a secret" in str(e.value) and SECRET not in str(e.value)


def test_stack_files_with_encrypted_values_validate_and_render_offline(tmp_path):
    document = yaml.safe_load(spec.stack_path("ack-canary").read_text())
    document["config"]["infershift:secrets"] = {"hf": {"token": {"secure": "AAABAKxyz=="}}}
    document["config"]["infershift:services"]["qwen"]["secretEnv"] = {"HF_TOKEN": {"secret": "hf", "key": "token"}}
    path = tmp_path / "Pulumi.with-secret.yaml"
    path.write_text(yaml.safe_dump(document))
    assert spec.secret_config_keys(document) == {"secrets"}
    spec.load_file(path)
    render = render_values(spec.config_values(document), secret_keys=spec.secret_config_keys(document))
    assert render.one("Secret", "hf")["stringData"] == "[secret]"
    document["config"]["infershift:services"]["qwen"]["env"] = {"TOKEN": {"secure": "AAAB"}}
    path.write_text(yaml.safe_dump(document))
    with pytest.raises(spec.StackConfigError) as e:
        spec.load_file(path)
    assert any(p.path == "services" for p in e.value.problems)


@pytest.mark.parametrize("edit,path", [
    (lambda v: v["services"]["qwen"].update(secretEnv={"HF_TOKEN": {"secret": "hf", "key": "nope"}}),
     "services.qwen.secretEnv.HF_TOKEN.key"),
    (lambda v: v["services"]["qwen"].update(imagePullSecrets=["hf"]), "services.qwen.imagePullSecrets[0]"),
    (lambda v: v["services"]["qwen"].update(env={"HF_TOKEN": "x"}), "services.qwen.secretEnv"),
])
def test_secret_reference_mistakes_name_the_field(edit, path):
    values, _ = _with_secrets()
    edit(values)
    with pytest.raises(spec.StackConfigError) as e:
        spec.validate(values)
    assert any(p.path == path for p in e.value.problems), e.value


# --- images ------------------------------------------------------------------------------


def test_the_stack_builds_and_pushes_the_images_and_runs_them_by_digest():
    render = render_values(_values("local"))
    built = {r.name: r.inputs for r in render.resources if r.type == "docker-build:index:Image"}
    assert sorted(built) == ["images-picker", "images-sim"]
    for image, inputs in built.items():
        kind = image.removeprefix("images-")
        assert inputs["push"] is True and inputs["tags"] == [f"localhost:5001/infershift/infershift-{kind}:0.1.0"]
        assert inputs["dockerfile"]["location"].endswith(f"infershift/{kind}/Dockerfile")
    images = {c["image"] for o in render.objects if o["kind"] == "Deployment"
              for c in o["spec"]["template"]["spec"]["containers"]}
    assert images and all("@sha256:" in i for i in images), images
    assert any("infershift-picker" in i for i in images) and any("infershift-sim" in i for i in images)


def test_named_images_need_no_build_and_missing_ones_are_refused():
    values = _values("ack-canary")
    for pool in values["pools"].values():
        pool.setdefault("picker", {})["image"] = "reg.example/picker:7"
    for svc in values["services"].values():
        if svc.get("simulated"):
            svc["simImage"] = "reg.example/sim:7"
    render = render_values(values)
    assert not [r for r in render.resources if r.type == "docker-build:index:Image"]
    del values["images"]
    render_values(values)  # every image named: no registry needed
    del values["pools"]["mymodel-pool-v1"]["picker"]["image"]
    with pytest.raises(spec.StackConfigError) as e:
        spec.validate(values)
    assert [p.path for p in e.value.problems] == ["pools.mymodel-pool-v1.picker.image"]
    assert "images.registry" in e.value.problems[0].message


def test_the_push_uses_the_named_registry_credential():
    values = _values("ack-canary")
    values["registryCredentials"] = {"acr": {"server": "registry.cn-hangzhou.aliyuncs.com", "username": "u",
                                             "password": SECRET}}
    values["images"]["credential"] = "acr"
    render = render_values(values, secret_keys={"registryCredentials"})
    picker = next(r for r in render.resources if r.name == "images-picker").inputs
    # the whole login is a secret input (the password is): never in the render or the state in plaintext
    assert picker["registries"] == "[secret]" and SECRET not in json.dumps(picker)
    values["images"]["credential"] = "nope"
    with pytest.raises(spec.StackConfigError) as e:
        spec.validate(values)
    assert any(p.path == "images.credential" for p in e.value.problems)


# --- routing headers ---------------------------------------------------------------------


def test_the_gateway_strips_client_routing_headers_but_a_routes_pin_header():
    values = _values("ack-canary")
    values["routes"]["inference-route"]["pins"] = [{"header": "x-infershift-canary", "value": "1",
                                                   "backend": "mymodel-pool-v2"}]
    render = render_values(values)
    policy = next(o for o in render.objects if o["kind"] == "ClientTrafficPolicy")
    matchers = policy["spec"]["headers"]["earlyRequestHeaders"]["removeOnMatch"]
    from infershift.routing_headers import strip_regex

    import re as _re
    strip = _re.compile(strip_regex(keep=["x-infershift-canary"]))
    # what the cluster's policy removes is what the local stack removes
    for name in ("x-gateway-model-name-rewrite", "x-llm-d-inference-objective", "x-envoy-original-path",
                 "x-infershift-target-model"):
        assert strip.fullmatch(name)
        assert any((m["type"] == "Prefix" and name.startswith(m["value"]))
                   or (m["type"] == "RegularExpression" and _re.fullmatch(m["value"], name)) for m in matchers), name
    assert not strip.fullmatch("x-infershift-canary")
    assert not any((m["type"] == "Prefix" and "x-infershift-canary".startswith(m["value"]))
                   or (m["type"] == "RegularExpression" and _re.fullmatch(m["value"], "x-infershift-canary"))
                   for m in matchers)
    assert policy["spec"]["connection"]["bufferLimit"]  # the guides' buffer limit rides on the same policy


def test_a_route_can_let_clients_choose_their_objective_and_no_other_route_can():
    values = _values("ack-mirror")
    route = next(iter(values["mirrors"]))
    values["mirrors"][route]["clientHeaders"] = ["objective"]
    values["routes"] = {"other": {"listener": values["mirrors"][route].get("listener"), "paths": ["/v1/other"],
                                  "backends": {values["mirrors"][route]["backend"]: 100}}}
    render = render_values(values)
    allowing = render.one("HTTPRoute", route)
    assert allowing["metadata"]["annotations"]["infershift.io/client-headers"] == \
        "x-llm-d-inference-objective,x-gateway-inference-objective"
    assert not any(f["type"] == "RequestHeaderModifier" for r in allowing["spec"]["rules"] for f in r.get("filters", []))
    # the gateway keeps the objective headers (one route allows them) ...
    policy = next(o for o in render.objects if o["kind"] == "ClientTrafficPolicy")
    import re as _re
    matchers = policy["spec"]["headers"]["earlyRequestHeaders"]["removeOnMatch"]
    kept = "x-llm-d-inference-objective"
    assert not any((m["type"] == "Prefix" and kept.startswith(m["value"]))
                   or (m["type"] == "RegularExpression" and _re.fullmatch(m["value"], kept)) for m in matchers)
    # ... so the route that does not allow them removes them itself
    other = render.one("HTTPRoute", "other")
    for rule in other["spec"]["rules"]:
        mod = next(f for f in rule["filters"] if f["type"] == "RequestHeaderModifier")
        assert set(mod["requestHeaderModifier"]["remove"]) == {"x-llm-d-inference-objective",
                                                               "x-gateway-inference-objective"}
    values["mirrors"][route]["clientHeaders"] = ["target-model"]
    with pytest.raises(spec.StackConfigError) as e:
        spec.validate(values)
    assert any(p.path.startswith(f"mirrors.{route}.clientHeaders") for p in e.value.problems), e.value
