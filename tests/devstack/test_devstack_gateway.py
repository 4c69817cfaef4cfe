"""What the gateway itself decides (issue 13 items 1, 2, 4, 5): which client headers it strips, what
it answers on its own (/v1/models, the management paths, 405), its error JSON and limits, the
override_host / retry / ejection setup of the pool tier. Pure config checks, and one stack run from
the `client-headers` feature's objects."""
from __future__ import annotations

import json
import random
import re
import urllib.request

import httpx
import pytest
from devstack_helpers import FAST, TESTDATA
from test_devstack_goldens import feature_objects, plane_of

from infershift import contract
from infershift.devstack import envoy_check, envoy_config, translate
from infershift.devstack.stack import LocalStack, Options
from infershift.routing_headers import strip_matchers, strip_regex, stripped

KEEPS = [(), ("x-gateway-inference-objective",), contract.CLIENT_CHOOSABLE_HEADERS,
         ("x-gateway-a", "x-gateway-ab", "x-gateway-abc", "x-envoy-x", "x-infershift-canary")]


def _names(keep, rng: random.Random) -> list[str]:
    chars = "abcdefghijklmnopqrstuvwxyz-0123456789_."
    names = [*keep, *(k + "x" for k in keep), *(k[:-1] for k in keep), "x-gateway-", "x-gatewa", "x-canary"]
    for p in contract.ROUTING_HEADER_PREFIXES:
        names += [p + "".join(rng.choice(chars) for _ in range(rng.randrange(0, 8))) for _ in range(1500)]
        for k in (k for k in keep if k.startswith(p)):
            for _ in range(400):
                cut = rng.randrange(len(p), len(k) + 1)
                names.append(k[:cut] + "".join(rng.choice(chars) for _ in range(rng.randrange(0, 3))))
    return names


@pytest.mark.parametrize("keep", KEEPS, ids=lambda k: f"keep{len(k)}")
def test_the_strip_regexes_match_exactly_the_namespaces_but_the_kept_names(keep):
    rng = random.Random(len(keep))
    whole = re.compile(strip_regex(keep))
    pieces = strip_matchers(keep)
    assert len(pieces) <= 64  # Envoy Gateway's removeOnMatch takes at most 64
    for name in _names(keep, rng):
        want = stripped(name, keep)
        assert bool(whole.fullmatch(name)) == want, name
        hit = any(name.startswith(m["prefix"]) if "prefix" in m else re.fullmatch(m["regex"], name) for m in pieces)
        assert hit == want, name


def test_the_strip_matchers_pass_envoys_regex_limits():
    """Envoy refuses a regex of more than 100 RE2 instructions by default: each piece stays below."""
    plane = plane_of("client-headers")
    config = envoy_config.bootstrap(plane, 1, None)
    mutation = envoy_config.strip_routing_headers(list(contract.CLIENT_CHOOSABLE_HEADERS) + ["x-envoy-pin"])
    config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"][
        "early_header_mutation_extensions"] = [mutation]
    envoy_check.validate(config)


def test_client_headers_by_annotation_and_pins_never_the_target_or_endpoint():
    gw = translate.translate(feature_objects("client-headers"))
    rules = {r.name: r for p in gw.ports for r in p.rules}
    assert rules["objectives.0"].client_headers == ("x-gateway-inference-objective", "x-llm-d-inference-objective")
    assert rules["plain"].client_headers == () and rules["elsewhere"].client_headers == ()
    assert any("x-gateway-model-name-rewrite" in w and "may not send" in w for w in gw.warnings)
    plane = plane_of("client-headers")
    web = next(x for x in plane.listeners if x.key == "web")
    api = next(x for x in plane.listeners if x.key == "api")
    assert envoy_config.client_headers(web.rules) == ["x-gateway-canary", "x-gateway-inference-objective",
                                                      "x-llm-d-inference-objective"]
    assert envoy_config.client_headers(api.rules) == []
    routes = {r["name"]: r for v in envoy_config.gateway_routes(plane, "web")["virtual_hosts"] for r in v["routes"]}
    assert "x-gateway-inference-objective" not in routes["objectives.0"].get("request_headers_to_remove", [])
    assert set(contract.CLIENT_CHOOSABLE_HEADERS) <= set(routes["plain"]["request_headers_to_remove"])


def test_the_gateway_answers_models_and_refuses_management_paths_ahead_of_routes():
    plane = plane_of("weights")
    routes = envoy_config.gateway_routes(plane, "web")["virtual_hosts"][-1]["routes"]
    assert [r["name"] for r in routes[:1]] == ["models"]
    listing = json.loads(routes[0]["direct_response"]["body"]["inline_string"])
    assert listing["object"] == "list" and {m["id"] for m in listing["data"]}
    management = [r for r in routes if r["name"] == "management-path"]
    # every management path of the contract (the list a cluster's listing routes refuse too), and
    # nothing else: a path sharing a prefix with one still routes
    for path in contract.MANAGEMENT_PATHS:
        assert any("safe_regex" in r["match"] and re.fullmatch(r["match"]["safe_regex"]["regex"], path)
                   for r in management), path
    for path in ("/v1/load_lora_adapters", "/sleepy", "/v1/chat/completions", "/xsleep"):
        assert not any("safe_regex" in r["match"] and re.fullmatch(r["match"]["safe_regex"]["regex"], path)
                       for r in management), path
    assert any(r["match"] == {"path_separated_prefix": "/admin"} for r in management)
    # a route that maps /v1/models itself keeps it (pins-and-matches sends it to a Service)
    special = envoy_config.gateway_routes(plane_of("pins-and-matches"), "web")["virtual_hosts"][-1]["routes"]
    assert "models" not in [r["name"] for r in special]


def test_pool_tier_retries_on_the_fallback_and_ejects():
    plane = plane_of("failure-modes")
    config = envoy_config.bootstrap(plane, 1, None)
    clusters = {c["name"]: c for c in config["static_resources"]["clusters"]}
    blue = clusters["pool-blue-pool-endpoints"]
    policy = blue["load_balancing_policy"]["policies"][0]["typed_extension_config"]
    assert policy["name"] == "envoy.load_balancing_policies.override_host"
    assert policy["typed_config"]["override_host_sources"] == [{"header": contract.DESTINATION_HEADER}]
    assert blue["outlier_detection"]["consecutive_5xx"] == 3
    routes = envoy_config.pool_routes(plane, plane.pool("blue-pool"))
    picked = next(r for r in routes["virtual_hosts"][0]["routes"] if r["name"] == "picked-endpoint")
    assert picked["route"]["retry_policy"]["num_retries"] == 1
    assert "previous_hosts" in json.dumps(picked["route"]["retry_policy"])
    assert routes["virtual_hosts"][0]["include_attempt_count_in_response"] is True
    methods = [r for r in routes["virtual_hosts"][0]["routes"] if r["name"] == "method-not-allowed"]
    assert {r["match"]["path"] for r in methods} == set(envoy_config.COMPLETION_PATHS)


@pytest.fixture(scope="module")
def headers_stack(tmp_path_factory):
    directory = tmp_path_factory.mktemp("client-headers")
    paths = [TESTDATA / "features" / "_base.yaml", TESTDATA / "features" / "client-headers" / "in.yaml"]
    s = LocalStack(manifests=paths, options=Options(**FAST, workdir=directory / "work", watch=False),
                   log=lambda msg: print(f"devstack: {msg}"))
    s.start()
    yield s
    s.stop()


def _seen(stack: LocalStack) -> list[list]:
    out = []
    for eps in stack.endpoints.values():
        for e in eps:
            with urllib.request.urlopen(f"http://{e.admin}/admin/requests?clear=1", timeout=5) as r:
                out += [h for req in json.load(r)["requests"] for h in req["headers"]]
    return out


def test_only_declared_client_headers_reach_the_servers(headers_stack):
    s = headers_stack
    sent = {"x-gateway-inference-objective": "premium", "x-llm-d-inference-fairness-id": "tenant-a",
            "x-gateway-model-name-rewrite": "helper-v2", "x-gateway-destination-endpoint": "127.0.0.1:1",
            "x-envoy-max-retries": "7", "x-infershift-anything": "1", "x-llm-d-whatever": "1"}
    body = {"model": "chat", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3}
    _seen(s)
    r = httpx.post(s.url("web") + "/v1/chat/completions", json=body, headers=sent, timeout=30)
    assert r.status_code == 200, r.text
    names = {k for k, _ in _seen(s) if k.startswith(contract.ROUTING_HEADER_PREFIXES)}
    # the route allows the objective (the picker reads it, and so does the server): nothing else
    assert names == {"x-gateway-inference-objective", "x-gateway-destination-endpoint"}, names
    r = httpx.post(s.url("web") + "/plain/v1/chat/completions", json=body, headers=sent, timeout=30)
    assert r.status_code == 404  # the server's own answer for that path: it got there
    assert {k for k, _ in _seen(s) if k.startswith(contract.ROUTING_HEADER_PREFIXES)} == {
        "x-gateway-destination-endpoint"}
    r = httpx.post(s.url("api") + "/v1/chat/completions", json=body, headers=sent, timeout=30)
    assert r.status_code == 200
    assert {k for k, _ in _seen(s) if k.startswith(contract.ROUTING_HEADER_PREFIXES)} == {
        "x-gateway-destination-endpoint"}
    # a pin in the namespace still works (kept at the listener): green serves it
    r = httpx.post(s.url("web") + "/v1/chat/completions", json=body, headers={"x-gateway-canary": "true"}, timeout=30)
    assert r.status_code == 200 and r.headers["x-inference-pod"].startswith("green")
