"""Every stack renders under mocks, and everything it writes is a valid object."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from infershift import spec
from infershift.components.render import write
STACKS = spec.stack_names()
from k8s_schemas import NO_CRD, validate

REPO = Path(__file__).resolve().parents[2]
COMPONENT_TYPES = {"Cluster", "GpuNodePool", "InferenceService", "InferencePool", "EndpointPicker", "Gateway",
                   "CanaryRoute", "MirrorRoute", "Images", "Secrets",
                   # the stack program's /v1/models listing (its args are the whole stack's routes and
                   # pools, so it is not one of the component package's)
                   "ModelsListing"}


def test_every_seed_scenario_has_a_stack():
    assert {"ack-canary", "ack-mirror", "ack-multi-lora", "ack-reasoning", "gke-node-rollout",
            "gke-base-model-rollout", "local"} <= set(STACKS)


@pytest.mark.parametrize("stack", STACKS)
def test_every_object_validates_against_its_schema(renders, stack):
    r = renders(stack)
    assert r.objects, "nothing rendered"
    problems = {f"{o['kind']}/{o['metadata']['name']}": validate(o) for o in r.objects}
    assert {k: v for k, v in problems.items() if v} == {}


@pytest.mark.parametrize("stack", STACKS)
def test_object_names_are_unique_per_kind(renders, stack):
    seen = [(o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"]) for o in renders(stack).objects]
    assert len(seen) == len(set(seen))


@pytest.mark.parametrize("stack", STACKS)
def test_every_kubernetes_object_uses_the_cluster_provider(renders, stack):
    r = renders(stack)
    k8s = [res for res in r.resources if res.is_kubernetes]
    providers = {res.provider.rsplit("::", 1)[0] for res in k8s}
    assert len(providers) == 1 and providers.pop().endswith("pulumi:providers:kubernetes::cluster-provider")


@pytest.mark.parametrize("stack", STACKS)
def test_components_register_with_their_type_token(renders, stack):
    r = renders(stack)
    components = {res.type for res in r.resources if not res.custom}
    assert components <= {f"infershift:index:{c}" for c in COMPONENT_TYPES}
    assert {"infershift:index:Cluster", "infershift:index:InferencePool", "infershift:index:Gateway"} <= components


def test_node_pools_use_the_cloud_provider(renders):
    for stack, provider in (("ack-canary", "alicloud::cluster-alicloud"), ("gke-node-rollout", "gcp::cluster-gcp")):
        pools = [res for res in renders(stack).cloud if res.type.endswith(":NodePool")]
        assert pools and all(provider in res.provider for res in pools), stack


def test_kubeconfig_platform_creates_no_cloud_resources(renders):
    cloud = renders("local").cloud
    assert sorted(res.type for res in cloud) == ["docker-build:index:Image"] * 2 + ["pulumi:providers:kubernetes"]
    cloud = [res for res in cloud if res.type == "pulumi:providers:kubernetes"]
    assert cloud[0].inputs == {"context": "kind-infershift", "clusterIdentifier": "kubeconfig/~/kind-infershift",
                               "enableConfigMapMutable": "true"}


def test_write_one_object_per_file(renders, tmp_path):
    r = renders("ack-canary")
    files = write(r, tmp_path)
    k8s = sorted((tmp_path / "k8s").glob("*.yaml"))
    assert len(k8s) == len(r.objects)
    docs = [list(yaml.safe_load_all(f.read_text())) for f in k8s]
    assert all(len(d) == 1 for d in docs)
    assert {(d[0]["kind"], d[0]["metadata"]["name"]) for d in docs} == {
        (o["kind"], o["metadata"]["name"]) for o in r.objects}
    cloud = [json.loads(f.read_text()) for f in files if f.suffix == ".json"]
    assert {c["type"] for c in cloud} == {"alicloud:cs/nodePool:NodePool", "pulumi:providers:alicloud",
                                          "docker-build:index:Image",
                                         "pulumi:providers:kubernetes"}
    provider = next(c for c in cloud if c["type"] == "pulumi:providers:kubernetes")
    assert provider["inputs"]["kubeconfig"] == "[secret]"  # credentials never land in review output


def _render_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "infershift.components.render", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=120)


def test_cli_writes_the_canary_route_with_90_10(tmp_path):
    out = tmp_path / "out"
    proc = _render_cli("--stack", "ack-canary", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    route = yaml.safe_load((out / "k8s" / "httproute-inference-route.yaml").read_text())
    refs = route["spec"]["rules"][-1]["backendRefs"]
    assert [(b["kind"], b["name"], b["weight"]) for b in refs] == [
        ("InferencePool", "mymodel-pool-v1", 90), ("InferencePool", "mymodel-pool-v2", 10)]
    for f in (out / "k8s").glob("*.yaml"):
        obj = yaml.safe_load(f.read_text())
        assert validate(obj) == [], f.name
    exports = json.loads((out / "exports.json").read_text())
    assert "routes.inference-route.backends.mymodel-pool-v2" in exports["weightPaths"]


def test_cli_rejects_invalid_config_with_the_message(tmp_path):
    text = spec.stack_path("ack-canary").read_text().replace("mymodel-pool-v2: 10", "mymodel-pool-v3: 10")
    (tmp_path / "Pulumi.broken.yaml").write_text(text)
    proc = _render_cli("--stack", "broken", "--out", str(tmp_path / "out"), "--stacks-dir", str(tmp_path))
    assert proc.returncode == 2
    assert "infershift:routes.inference-route.backends.mymodel-pool-v3: no pool named 'mymodel-pool-v3'" in proc.stderr
    assert not (tmp_path / "out").exists()


def test_cli_names_an_unknown_stack(tmp_path):
    proc = _render_cli("--stack", "nope", "--out", str(tmp_path))
    assert proc.returncode == 2 and "no stack named 'nope'" in proc.stderr


def test_program_raises_on_invalid_config_before_declaring_anything():
    import pulumi

    from infershift.components.render import render_values

    values = spec.config_values(yaml.safe_load(spec.stack_path("ack-canary").read_text()))
    values["gateway"]["listeners"].append({"name": "again", "port": 8080})
    with pytest.raises(pulumi.RunError, match=r"infershift:gateway: Value error|both use port 8080"):
        render_values(values)


def test_gke_custom_policies_without_crd_have_their_shape(renders):
    r = renders("gke-node-rollout")
    kinds = {(o["apiVersion"], o["kind"]) for o in r.objects}
    assert NO_CRD <= kinds
    for o in r.find("HealthCheckPolicy") + r.find("GCPBackendPolicy"):
        assert o["spec"]["targetRef"] == {"group": "inference.networking.k8s.io", "kind": "InferencePool",
                                          "name": o["metadata"]["name"].rsplit("-", 1)[0]}
    hc = r.one("HealthCheckPolicy", "llm-health")["spec"]["default"]["config"]
    assert hc == {"httpHealthCheck": {"port": 8000, "requestPath": "/health"}, "type": "HTTP"}
    assert r.one("GCPBackendPolicy", "llm-new-backend")["spec"]["default"]["timeoutSec"] > 0


def test_schema_check_enforces_crd_cel_rules(renders):
    pytest.importorskip("celpy", reason="cel-python not installed: CRD CEL rules are not evaluated")
    import copy

    route = copy.deepcopy(renders("local").one("HTTPRoute", "llama2-mirror"))
    route["spec"]["rules"][0]["filters"][0]["requestMirror"]["fraction"] = {"numerator": 1}
    assert validate(route) == ["spec.rules[0].filters[0].requestMirror: "
                               "Only one of percent or fraction may be specified in HTTPRequestMirrorFilter"]
    pool = copy.deepcopy(renders("local").one("InferencePool", "llama2-pool"))
    pool["spec"]["targetPorts"] = [{"number": 8000}, {"number": 8000}]
    assert validate(pool) == ["spec.targetPorts: port number must be unique"]
    route = copy.deepcopy(renders("ack-canary").one("HTTPRoute", "inference-route"))
    route["spec"]["rules"][0]["backendRefs"].append({"group": "", "kind": "Service", "name": "x"})
    assert validate(route) == ["spec.rules[0].backendRefs[2]: Must have port for Service reference"]


def test_main_py_runs_the_program_with_engine_style_config(renders, monkeypatch):
    """`__main__.py` as the Pulumi engine runs it: config arrives in PULUMI_CONFIG as JSON strings."""
    import runpy

    from infershift.components.render import render_program, stack_config

    values = spec.config_values(yaml.safe_load(spec.stack_path("gke-node-rollout").read_text()))
    monkeypatch.setenv("PULUMI_CONFIG", json.dumps(stack_config(values)))
    r = render_program(lambda: runpy.run_path(str(REPO / "__main__.py"), run_name="__main__"),
                       stack="gke-node-rollout")
    expected = renders("gke-node-rollout")
    assert sorted(map(str, r.objects)) == sorted(map(str, expected.objects))
    assert {(c.type, c.name) for c in r.cloud} == {(c.type, c.name) for c in expected.cloud}


@pytest.mark.parametrize("stack", STACKS)
def test_children_are_parented_and_named_after_their_component(renders, stack):
    r = renders(stack)
    components = {(res.type, res.name) for res in r.resources if not res.custom}
    for res in r.resources:
        parent_type, parent_name = res.parent.rsplit("::", 2)[-2:]
        if parent_type == "pulumi:pulumi:Stack":
            assert not res.custom, f"{res.type} {res.name} is not inside a component"
            continue
        assert (parent_type.rsplit("$", 1)[-1], parent_name) in components
        assert res.name.startswith(f"{parent_name}-"), (res.name, parent_name)


def test_stack_warnings_are_logged_not_fatal(caplog):
    from infershift.components.render import render_values

    values = spec.config_values(yaml.safe_load(spec.stack_path("ack-canary").read_text()))
    with caplog.at_level("WARNING", logger="infershift.render"):
        r = render_values(values, "ack-canary")
    assert r.objects
    assert any("model 'travelhelper' is routed only by pool 'mymodel-pool-v1'" in m for m in caplog.messages)
