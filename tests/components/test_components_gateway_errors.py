"""On Envoy Gateway (ACK, kubeconfig clusters) the Gateway's BackendTrafficPolicy turns Envoy's own
plain-text replies into OpenAI error JSON, from the table the local stack's Envoy answers with
(infershift/gateway_errors.py); GKE's gateway has no such policy, so it gets none. What Envoy
Gateway does with the policy (which replies its custom-response filter reaches) only a real Envoy
Gateway shows; here: the rendered policy, its schema and CEL rules, and that it is the local table."""
from __future__ import annotations

import json

import pytest
from k8s_schemas import validate

from infershift import gateway_errors
from infershift.components.gateway import json_error_overrides, manifests
from infershift.devstack import envoy_config


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


def test_the_cluster_and_the_local_stack_answer_from_one_table():
    local = {status: (message, type_, code) for status, _, message, type_, code, _ in envoy_config._PROTOCOL_REPLIES}
    cluster = {}
    for o in json_error_overrides():
        err = json.loads(o["response"]["body"]["inline"])["error"]
        cluster[o["match"]["statusCodes"][0]["value"]] = (err["message"], err["type"], err["code"])
    assert set(cluster) == set(local) - {403}  # (see above)
    for status, (message, type_, code) in cluster.items():
        assert (type_, code) == local[status][1:]
        # the local 431 names the local Envoy's header limits; a cluster's are Envoy Gateway's
        assert message == local[status][0] or (status == 431 and local[status][0].startswith(message))
    assert sorted(r.status for r in gateway_errors.protocol_replies()) == sorted(local)
