"""The translator: stack -> IR -> Envoy config, checked against golden files and by
`envoy --mode validate`. Regenerate the goldens with UPDATE_GOLDEN=1 after a deliberate
change, and review the diff."""
from __future__ import annotations

import os

import pytest
from devstack_helpers import TESTDATA

from infershift import spec
from infershift.devstack import envoy_check, envoy_config, render
from infershift.devstack.files import write_yaml

GOLDEN = sorted(p.name[: -len(".stack.yaml")] for p in TESTDATA.glob("*.stack.yaml"))


def rendered_text(stack) -> str:
    out = render.render(stack)
    parts = ["# envoy bootstrap\n" + envoy_check.dump(out["bootstrap"])]
    parts += [f"# {name}\n" + envoy_check.dump(doc) for name, doc in out["routes"].items()]
    return "---\n".join(parts)


@pytest.mark.parametrize("name", GOLDEN)
def test_envoy_config_matches_golden(name):
    text = rendered_text(spec.load_file(TESTDATA / f"{name}.stack.yaml"))
    golden = TESTDATA / f"{name}.envoy.yaml"
    if os.environ.get("UPDATE_GOLDEN"):
        golden.write_text(text)
    assert golden.exists(), f"no golden {golden.name}; run with UPDATE_GOLDEN=1"
    assert text == golden.read_text(), f"{name}: Envoy config differs from {golden.name} (UPDATE_GOLDEN=1 to accept)"


@pytest.mark.parametrize("source", [f"golden:{n}" for n in GOLDEN] + [f"stack:{n}" for n in spec.stack_names()])
def test_generated_config_passes_envoy_validate(source, tmp_path):
    kind, name = source.split(":")
    stack = spec.load_file(TESTDATA / f"{name}.stack.yaml") if kind == "golden" else spec.load_stack(name)
    plane = render.fixed_plane(stack)
    envoy_check.validate(envoy_config.bootstrap(plane, render.ADMIN_PORT, None))
    # The RDS form too, with its route files in place as devstack writes them.
    for path, doc in envoy_config.route_files(plane, tmp_path, "1").items():
        write_yaml(path, doc)
    envoy_check.validate(envoy_config.bootstrap(plane, render.ADMIN_PORT, tmp_path))


def test_envoy_validate_rejects_a_broken_config():
    plane = render.fixed_plane(spec.load_file(TESTDATA / "local.stack.yaml"))
    config = envoy_config.bootstrap(plane, render.ADMIN_PORT, None)
    config["static_resources"]["clusters"] = []  # routes now name clusters that do not exist
    with pytest.raises(envoy_check.EnvoyConfigError, match="validate"):
        envoy_check.validate(config)


def routes_of(stack_name: str, listener: str) -> dict:
    return envoy_config.gateway_routes(render.fixed_plane(spec.load_file(TESTDATA / f"{stack_name}.stack.yaml")), listener)


def test_host_routes_come_before_any_host_routes_and_longer_paths_first():
    vhosts = {v["name"]: v for v in routes_of("hosts-pins-mirror", "web")["virtual_hosts"]}
    assert set(vhosts) == {"chat.example", "shadow.example", "any-host"}
    chat = [r["name"] for r in vhosts["chat.example"]["routes"]]
    # pins before the weighted route on each path; the longer path first; then any-host ones
    assert chat == ["chat-pin-0", "chat-pin-1", "chat", "chat-pin-0", "chat-pin-1", "chat", "fallback", "no-route"]
    assert [r["name"] for r in vhosts["any-host"]["routes"]] == ["fallback", "no-route"]


def test_weights_pins_timeout_and_mirror_tag():
    vhosts = {v["name"]: v for v in routes_of("hosts-pins-mirror", "web")["virtual_hosts"]}
    weighted = next(r for r in vhosts["any-host"]["routes"] if r["name"] == "fallback")["route"]
    assert weighted["weighted_clusters"]["clusters"] == [
        {"name": "pool-base-pool", "weight": 70}, {"name": "pool-next-pool", "weight": 30}]
    assert weighted["timeout"] == "90s"
    chat = vhosts["chat.example"]["routes"]
    assert chat[2]["route"]["cluster"] == "pool-base-pool"  # the zero weight is dropped
    assert chat[0]["match"]["headers"] == [{"name": "x-canary", "string_match": {"exact": "true"}}]
    assert chat[0]["route"]["cluster"] == "pool-next-pool"
    shadow = vhosts["shadow.example"]["routes"][0]
    assert shadow["request_headers_to_add"][0]["header"] == {"key": "x-infershift-mirror", "value": "shadowing"}


def test_pool_tier_mirrors_after_the_picker_and_keeps_failure_modes():
    plane = render.fixed_plane(spec.load_file(TESTDATA / "hosts-pins-mirror.stack.yaml"))
    base = envoy_config.pool_routes(plane, plane.pool("base-pool"))["virtual_hosts"][0]["routes"]
    assert [r["name"] for r in base] == ["picked-endpoint-shadowing", "picked-endpoint", "fail-close"]
    assert base[0]["route"]["request_mirror_policies"] == [{
        "cluster": "svc-shadow",
        "runtime_fraction": {"default_value": {"numerator": 25, "denominator": "HUNDRED"}}}]
    assert base[2]["direct_response"]["status"] == 503
    nxt = envoy_config.pool_routes(plane, plane.pool("next-pool"))["virtual_hosts"][0]["routes"]
    assert [r["name"] for r in nxt] == ["picked-endpoint", "fail-open"]
    assert nxt[1]["route"]["cluster"] == "pool-next-pool-fallback"


def test_listener_hostname_and_buffer_limit():
    plane = render.fixed_plane(spec.load_file(TESTDATA / "hosts-pins-mirror.stack.yaml"))
    internal = envoy_config.gateway_routes(plane, "internal")["virtual_hosts"]
    assert internal[0]["domains"] == ["internal.example", "internal.example:*"]
    listeners = {lst["name"]: lst for lst in envoy_config.bootstrap(plane, 1, None)["static_resources"]["listeners"]}
    assert listeners["gateway-web"]["per_connection_buffer_limit_bytes"] == 4 * 1024 * 1024
    # the picker's maxBodySize plus headroom, so the picker answers a too-large body itself
    assert listeners["pool-base-pool"]["per_connection_buffer_limit_bytes"] == 21 * 1024 * 1024
