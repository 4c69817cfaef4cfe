"""API groups and versions the components render (from the shared contract)."""
from __future__ import annotations

from infershift.contract import (  # noqa: F401  (re-exported for the components)
    ENVOY_GATEWAY_API,
    ENVOY_GATEWAY_CONTROLLER,
    GATEWAY_API,
    GATEWAY_GROUP,
    GKE_NETWORKING_API,
    LLMD_API,
    POOL_GROUPS,
)


def pool_api_version(version: str) -> str:
    return f"{POOL_GROUPS[version]}/{version}"


def pool_ref(version: str, name: str) -> dict:
    return {"group": POOL_GROUPS[version], "kind": "InferencePool", "name": name}
