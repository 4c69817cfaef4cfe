"""The translation, one golden file per stage (as Envoy Gateway's testdata):
  stack -> Kubernetes objects        testdata/render/<stack>.yaml      (what a cluster gets)
  objects -> IR                      testdata/{features/<f>,stacks}/…ir.yaml
  IR -> Envoy configuration          testdata/{features/<f>,stacks}/…envoy.yaml
The Envoy stage reads its IR from the IR golden, so each stage is checked on its own input.
Every generated Envoy config also passes `envoy --mode validate`. After a deliberate change,
regenerate with UPDATE_GOLDEN=1 and review the diff."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml
from devstack_helpers import TESTDATA

from infershift import spec
from infershift.devstack import envoy_check, envoy_config, ir, manifests, render, translate
from infershift.devstack.files import write_yaml

FEATURES = TESTDATA / "features"
FEATURE_NAMES = sorted(p.name for p in FEATURES.iterdir() if p.is_dir())
STACKS = spec.stack_names()
UPDATE = bool(os.environ.get("UPDATE_GOLDEN"))


def check(golden: Path, text: str) -> None:
    if UPDATE:
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_text(text)
    assert golden.exists(), f"no golden {golden}; run with UPDATE_GOLDEN=1"
    assert text == golden.read_text(), f"{golden.relative_to(TESTDATA)} differs (UPDATE_GOLDEN=1 to accept)"


def feature_objects(name: str) -> list[dict]:
    return manifests.load([FEATURES / "_base.yaml", FEATURES / name / "in.yaml"]).items


def stack_objects(name: str) -> list[dict]:
    return manifests.render_stack_file(spec.stack_path(name)).items


def envoy_text(gw: ir.Gateway) -> str:
    out = render.envoy(gw)
    parts = ["# envoy bootstrap\n" + envoy_check.dump(out["bootstrap"])]
    parts += [f"# {name}\n" + envoy_check.dump(doc) for name, doc in out["routes"].items()]
    return "---\n".join(parts)


def ir_from_golden(path: Path) -> ir.Gateway:
    return ir.from_dict(ir.Gateway, yaml.safe_load(path.read_text()))


# --- stage 1: stack -> objects ----------------------------------------------------------

@pytest.mark.parametrize("name", STACKS)
def test_render_golden(name):
    check(TESTDATA / "render" / f"{name}.yaml",
          yaml.safe_dump_all(stack_objects(name), sort_keys=False, width=120))


# --- stage 2: objects -> IR -------------------------------------------------------------

@pytest.mark.parametrize("name", FEATURE_NAMES)
def test_feature_ir_golden(name):
    check(FEATURES / name / "ir.yaml", render.dump_ir(translate.translate(feature_objects(name))))


@pytest.mark.parametrize("name", STACKS)
def test_stack_ir_golden(name):
    check(TESTDATA / "stacks" / f"{name}.ir.yaml", render.dump_ir(translate.translate(stack_objects(name))))


# --- stage 3: IR -> Envoy ---------------------------------------------------------------

@pytest.mark.parametrize("name", FEATURE_NAMES)
def test_feature_envoy_golden(name):
    check(FEATURES / name / "envoy.yaml", envoy_text(ir_from_golden(FEATURES / name / "ir.yaml")))


@pytest.mark.parametrize("name", STACKS)
def test_stack_envoy_golden(name):
    check(TESTDATA / "stacks" / f"{name}.envoy.yaml", envoy_text(ir_from_golden(TESTDATA / "stacks" / f"{name}.ir.yaml")))


@pytest.mark.parametrize("source", [f"feature:{n}" for n in FEATURE_NAMES] + [f"stack:{n}" for n in STACKS])
def test_generated_config_passes_envoy_validate(source, tmp_path):
    kind, name = source.split(":")
    gw = translate.translate(feature_objects(name) if kind == "feature" else stack_objects(name))
    plane = render.fixed_plane(gw)
    envoy_check.validate(envoy_config.bootstrap(plane, render.ADMIN_PORT, None))
    # The RDS form too, with its route files in place as devstack writes them.
    for path, doc in envoy_config.route_files(plane, tmp_path, "1").items():
        write_yaml(path, doc)
    envoy_check.validate(envoy_config.bootstrap(plane, render.ADMIN_PORT, tmp_path))


def test_envoy_validate_rejects_a_broken_config():
    plane = render.fixed_plane(translate.translate(feature_objects("weights")))
    config = envoy_config.bootstrap(plane, render.ADMIN_PORT, None)
    config["static_resources"]["clusters"] = []  # routes now name clusters that do not exist
    with pytest.raises(envoy_check.EnvoyConfigError, match="validate"):
        envoy_check.validate(config)


# --- what the goldens mean, asserted ----------------------------------------------------

def plane_of(feature: str):
    return render.fixed_plane(translate.translate(feature_objects(feature)))


def vhosts(feature: str, listener: str) -> dict:
    """The virtual hosts of a listener with the HTTPRoutes' routes only (the gateway's own ones,
    /v1/models and the refused management paths, come first in each and are tested elsewhere)."""
    out = {}
    for v in envoy_config.gateway_routes(plane_of(feature), listener)["virtual_hosts"]:
        out[v["name"]] = {**v, "routes": [r for r in v["routes"] if r["name"] not in envoy_config.GATEWAY_OWN_ROUTES]}
    return out


def test_weights_drop_zero_and_split_by_weight():
    routes = {r["name"]: r for r in vhosts("weights", "web")["any-host"]["routes"]}
    assert routes["canary.0"]["route"]["weighted_clusters"]["clusters"] == [
        {"name": "pool-blue-pool", "weight": 90}, {"name": "pool-green-pool", "weight": 10}]
    assert routes["canary.1"]["route"]["cluster"] == "pool-blue-pool"


def test_match_precedence_follows_gateway_api():
    names = [r["name"] for r in vhosts("pins-and-matches", "web")["any-host"]["routes"]]
    # exact path first; then (same prefix length) method, then most headers, then query, then plain
    assert names == ["special.0", "special.1", "main.1.m1", "main.1.m0", "special.2", "main.0", "no-route"]
    routes = {r["name"]: r for r in vhosts("pins-and-matches", "web")["any-host"]["routes"]}
    assert routes["main.1.m0"]["match"]["headers"] == [{"name": "x-canary", "string_match": {"exact": "true"}}]
    assert routes["main.1.m1"]["match"]["headers"][0] == {"name": "x-tenant",
                                                          "string_match": {"safe_regex": {"regex": "beta-.*"}}}
    assert routes["special.0"]["match"] == {"path": "/v1/models"}
    assert routes["special.1"]["match"]["headers"] == [{"name": ":method", "string_match": {"exact": "GET"}}]
    assert routes["special.2"]["match"]["query_parameters"] == [{"name": "debug", "string_match": {"exact": "1"}}]


def test_hostnames_intersect_as_gateway_api_says():
    gw = translate.translate(feature_objects("hostnames"))
    rules = {(p.key, r.route): r.hostnames for p in gw.ports for r in p.rules}
    assert rules[("wild", "chat")] == ("chat.example.com", "*.example.com")  # other.org dropped
    assert rules[("exact", "chat")] == ("api.example.com",)  # the wildcard takes the listener's name
    assert rules[("wild", "any")] == ("*.example.com",)
    assert ("exact", "nowhere") not in rules
    assert any("nowhere" in w and "NoMatchingListenerHostname" in w for w in gw.warnings)
    wild = vhosts("hostnames", "wild")
    assert set(wild) == {"chat.example.com", "*.example.com", "any-host"}
    # a request for chat.example.com: the exact-name rule first, then the wildcard ones
    assert [r["name"] for r in wild["chat.example.com"]["routes"]] == ["chat", "any", "no-route"]
    assert [r["name"] for r in wild["any-host"]["routes"]] == ["no-route"]


def test_mirrors_percent_and_fraction_after_the_picker():
    plane = plane_of("mirrors")
    routes = envoy_config.pool_routes(plane, plane.pool("blue-pool"))["virtual_hosts"][0]["routes"]
    by_name = {r["name"]: r for r in routes}
    assert by_name["picked-endpoint-shadowing.0"]["route"]["request_mirror_policies"] == [{
        "cluster": "svc-shadow", "runtime_fraction": {"default_value": {"numerator": 25, "denominator": "HUNDRED"}}}]
    assert by_name["picked-endpoint-shadowing.1"]["route"]["request_mirror_policies"] == [{
        "cluster": "pool-green-pool",
        "runtime_fraction": {"default_value": {"numerator": 333333, "denominator": "MILLION"}}}]
    gw = translate.translate(feature_objects("mirrors"))
    assert any("RequestHeaderModifier" in x for x in gw.ignored)


def test_failure_modes_default_to_failclose():
    plane = plane_of("failure-modes")
    assert (plane.pool("blue-pool").failure_mode, plane.pool("green-pool").failure_mode) == ("FailOpen", "FailClose")
    green = envoy_config.pool_routes(plane, plane.pool("green-pool"))["virtual_hosts"][0]["routes"]
    assert green[-1]["direct_response"]["status"] == 503
    blue = envoy_config.pool_routes(plane, plane.pool("blue-pool"))["virtual_hosts"][0]["routes"]
    assert blue[-1]["route"]["cluster"] == "pool-blue-pool-fallback"


def test_timeouts_and_buffer_limit():
    routes = {r["name"]: r for r in vhosts("timeouts-and-buffer", "web")["any-host"]["routes"]}
    assert routes["r.0"]["route"]["timeout"] == "86400s" and routes["r.1"]["route"]["timeout"] == "30s"
    plane = plane_of("timeouts-and-buffer")
    listeners = {x["name"]: x for x in envoy_config.bootstrap(plane, 1, None)["static_resources"]["listeners"]}
    assert listeners["gateway-web"]["per_connection_buffer_limit_bytes"] == 30 << 20
    # above the gateway's limit plus headroom, so the picker answers a too-large body itself
    assert listeners["pool-blue-pool"]["per_connection_buffer_limit_bytes"] == 31 << 20


def test_unresolved_backend_gets_500_and_is_reported():
    gw = translate.translate(feature_objects("unresolved-backend"))
    assert any("missing-pool" in w and "BackendNotFound" in w for w in gw.warnings)
    assert any("InferenceModel orphan" in w for w in gw.warnings)
    route = vhosts("unresolved-backend", "web")["any-host"]["routes"][0]["route"]
    assert route["weighted_clusters"]["clusters"] == [{"name": "pool-blue-pool", "weight": 50},
                                                      {"name": envoy_config.UNRESOLVED_CLUSTER, "weight": 50}]


def test_attach_to_annotation_routes_the_pool_without_an_httproute():
    gw = translate.translate(feature_objects("attach-to-v1alpha1"))
    port = next(p for p in gw.ports if p.key == "llm-gw")
    assert [(r.name, r.backends[0].name) for r in port.rules] == [("attach-lora-pool", "lora-pool")]
    pool = gw.pool("lora-pool")
    assert pool.picker.failure_mode == "FailClose" and pool.servers == ("blue",)
    assert any("inference-gateway-ext-proc" in n for n in gw.notes)


def test_several_gateways_and_shared_ports():
    gw = translate.translate(feature_objects("several-gateways"))
    assert sorted((p.key, p.port, len(p.listeners)) for p in gw.ports) == [("internal/http", 9080, 1),
                                                                          ("public/http", 8080, 2)]


def test_model_servers_from_command_lines():
    gw = translate.translate(feature_objects("weights"))
    blue, green = gw.server("blue").server, gw.server("green").server
    assert (blue.served_names, blue.lora_modules, blue.max_loras) == (
        ("chat",), (("helper-v1", "/adapters/v1"), ("helper-v2", "/adapters/v2")), 2)
    assert (green.model, green.max_model_len, green.tensor_parallel_size) == ("/models/green", 8192, 2)
    assert any("--frobnicate 7" in x for x in gw.ignored)  # kept and reported, not fatal
