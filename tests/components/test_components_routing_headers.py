"""What a cluster's gateway gets to strip client-sent routing headers (issue 13 item 2): Envoy Gateway's
ClientTrafficPolicy `headers.earlyRequestHeaders`, built by the same code as the local stack's Envoy
config, valid against the CRD as ../shared/crds has it."""
from __future__ import annotations

import pytest
from k8s_schemas import validate

from infershift import contract
from infershift.routing_headers import early_request_headers


@pytest.mark.parametrize("keep", [(), ("x-gateway-canary",), contract.CLIENT_CHOOSABLE_HEADERS])
def test_the_early_header_policy_is_valid_for_envoy_gateway(keep):
    policy = {"apiVersion": contract.ENVOY_GATEWAY_API, "kind": "ClientTrafficPolicy",
              "metadata": {"name": "strip-routing-headers", "namespace": "default"},
              "spec": {"targetRefs": [{"group": contract.GATEWAY_GROUP, "kind": "Gateway", "name": "gw"}],
                       "headers": {"earlyRequestHeaders": early_request_headers(keep)}}}
    assert validate(policy) == []
    matches = policy["spec"]["headers"]["earlyRequestHeaders"]["removeOnMatch"]
    if not keep:
        assert matches == [{"type": "Prefix", "value": p} for p in contract.ROUTING_HEADER_PREFIXES]
    assert len(matches) <= 64 and all(len(m["value"]) <= 1024 for m in matches)
