"""On Envoy Gateway (ACK, kubeconfig clusters) the Gateway's BackendTrafficPolicy turns Envoy's own
plain-text replies into OpenAI error JSON, from the table the local stack's Envoy answers with
(infershift/gateway_errors.py); GKE's gateway has no such policy, so it gets none. What Envoy
Gateway does with the policy (which replies its custom-response filter reaches) only a real Envoy
Gateway shows; here: the rendered policy, its schema and CEL rules, and that it is the local table."""
from __future__ import annotations

import json

import pytest
from k8s_schemas import validate

from infershift import contract, gateway_errors
from infershift.components.gateway import json_error_overrides, manifests
from infershift.devstack import render, translate


def _policies(stack_objects, kind="BackendTrafficPolicy"):
    return [o for o in stack_objects if o["kind"] == kind]


@pytest.mark.parametrize("stack", ["ack-canary", "ack-mirror", "local"])
def test_envoy_gateway_stacks_answer_their_own_errors_in_json(renders, stack):
    [policy] = _policies(renders(stack).objects)
    assert validate(policy) == []
    assert policy["spec"]["targetRefs"] == [{"group": "gateway.networking.k8s.io", "kind": "Gateway",
                                             "name": policy["spec"]["targetRefs"][0]["name"]}]
    overrides = policy["spec"]["responseOverride"]
    by_status = {o["match"]["statusCodes"][0]["value"]: o for o in overrides}
    assert set(by_status) == {400, 404, 405, 408, 413, 426, 431, 500, 502, 503, 504}
    for o in overrides:
        # only Envoy's own plain-text replies: the picker's JSON answers and the servers' pass
        assert o["source"] == "Local"
        assert o["match"]["responseHeaders"] == [{"name": "content-type",
                                                  "value": {"type": "Prefix", "value": "text/plain"}}]
        body = json.loads(o["response"]["body"]["inline"])
        assert o["response"]["contentType"] == "application/json"
        assert set(body["error"]) == {"message", "type", "param", "code"}
    assert by_status[503]["response"]["header"] == {"add": [{"name": "retry-after", "value": "1"}]}
    # a 403 from Envoy Gateway may be a SecurityPolicy's denial: left as it is
    assert 403 not in by_status and all("statusCode" not in o["response"] for o in overrides)


def test_the_timeout_and_the_overrides_share_one_policy():
    # Envoy Gateway accepts one BackendTrafficPolicy per target; a second one is Conflicted
    objs = manifests("gw", {"class_name": "eg", "listeners": [{"name": "http", "port": 80}],
                            "request_timeout": "24h"})
    [policy] = _policies(objs)
    assert policy["metadata"]["name"] == "backend-timeout"
    assert policy["spec"]["timeout"] == {"http": {"requestTimeout": "24h"}} and policy["spec"]["responseOverride"]
    off = manifests("gw", {"class_name": "eg", "listeners": [{"name": "http", "port": 80}], "json_errors": False})
    assert _policies(off) == []
    gke = manifests("gw", {"class_name": "gke-l7-rilb", "listeners": [{"name": "http", "port": 80}],
                           "envoy_gateway": False})
    assert _policies(gke) == []


def _local_gateway_replies(objects) -> dict[int, dict]:
    """What the local stack's gateway listener answers for each protocol-level status: the error
    JSON in its local_reply_config, from the Envoy config devstack builds out of the objects."""
    bootstrap = render.envoy(translate.translate(objects))["bootstrap"]
    [listener] = [x for x in bootstrap["static_resources"]["listeners"] if x["name"] == "gateway-llm-gw"]
    hcm = listener["filter_chains"][0]["filters"][0]["typed_config"]
    out = {}
    for m in hcm["local_reply_config"]["mappers"]:
        code = (m["filter"].get("status_code_filter") or {}).get("comparison", {}).get("value", {}).get("default_value")
        if code and "json_format" in m.get("body_format_override", {}):
            out[code] = m["body_format_override"]["json_format"]["error"]
    return out


def test_the_cluster_and_the_local_stack_answer_from_one_table(renders):
    objects = renders("local").objects
    local = _local_gateway_replies(objects)
    cluster = {}
    for o in json_error_overrides():
        cluster[o["match"]["statusCodes"][0]["value"]] = json.loads(o["response"]["body"]["inline"])["error"]
    assert set(cluster) == set(local) - {403}  # (see above)
    for status, err in cluster.items():
        if status == 413:  # the local message names the tier whose limit it is (the gateway's bufferLimit)
            assert (err["type"], err["code"]) == (local[status]["type"], local[status]["code"])
            continue
        assert err == local[status], status
    # the 431 names the header limits, and they are the Gateway's: the ClientTrafficPolicy renders
    # maxRequestHeaderLimit and the local Envoy takes it from there
    assert "at most 100 headers, 12 KiB in all" in cluster[431]["message"]
    [client_policy] = _policies(objects, "ClientTrafficPolicy")
    assert client_policy["spec"]["headers"]["maxRequestHeaderLimit"] == f"{contract.GATEWAY_MAX_HEADERS_KB}Ki"
    assert validate(client_policy) == []
    hcm_kb = {x["name"]: x["filter_chains"][0]["filters"][0]["typed_config"].get("max_request_headers_kb")
              for x in render.envoy(translate.translate(objects))["bootstrap"]["static_resources"]["listeners"]
              if x["name"].startswith("gateway-")}
    assert set(hcm_kb.values()) == {contract.GATEWAY_MAX_HEADERS_KB}, hcm_kb
    assert sorted(r.status for r in gateway_errors.protocol_replies()) == sorted(local)


def test_without_a_header_limit_the_local_gateway_keeps_envoys_default(renders):
    """Objects from elsewhere (no maxRequestHeaderLimit) run with Envoy's, and Envoy Gateway's,
    default: 60 KiB."""
    objects = []
    for o in renders("local").objects:
        if o["kind"] == "ClientTrafficPolicy":
            o = json.loads(json.dumps(o))
            del o["spec"]["headers"]["maxRequestHeaderLimit"]
        objects.append(o)
    gw = translate.translate(objects)
    assert gw.max_request_headers_kb is None
    listeners = render.envoy(gw)["bootstrap"]["static_resources"]["listeners"]
    assert {x["filter_chains"][0]["filters"][0]["typed_config"]["max_request_headers_kb"]
            for x in listeners if x["name"].startswith("gateway-")} == {contract.ENVOY_DEFAULT_MAX_HEADERS_KB}
    assert "60 KiB in all" in _local_gateway_replies(objects)[431]["message"]
