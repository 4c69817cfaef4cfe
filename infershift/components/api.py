"""API groups and versions the components render."""
from __future__ import annotations

GATEWAY_GROUP = "gateway.networking.k8s.io"
GATEWAY_API = f"{GATEWAY_GROUP}/v1"
ENVOY_GATEWAY_API = "gateway.envoyproxy.io/v1alpha1"
ENVOY_GATEWAY_CONTROLLER = "gateway.envoyproxy.io/gatewayclass-controller"
LLMD_API = "llm-d.ai/v1alpha2"
GKE_NETWORKING_API = "networking.gke.io/v1"

# InferencePool API version (as the stack names it) -> API group.
POOL_GROUPS = {"v1": "inference.networking.k8s.io", "v1alpha2": "inference.networking.x-k8s.io"}


def pool_api_version(version: str) -> str:
    return f"{POOL_GROUPS[version]}/{version}"


def pool_ref(version: str, name: str) -> dict:
    return {"group": POOL_GROUPS[version], "kind": "InferencePool", "name": name}
