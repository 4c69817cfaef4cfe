"""The components' enumerated args, as str-valued enums (the schema's enum types).

Each member equals its string value (`PoolApiVersion.V1 == "v1"`), so callers may pass either;
components turn members into their plain values before building manifests (`plain_args`), so a
manifest never holds an enum member.
"""
from enum import Enum, StrEnum
from typing import Any

import pulumi


class PoolApiVersion(StrEnum):
    """The InferencePool API: `v1` (inference.networking.k8s.io) or `v1alpha2`
    (inference.networking.x-k8s.io, ACK's add-on)."""

    V1 = "v1"
    V1ALPHA2 = "v1alpha2"


class FailureMode(StrEnum):
    """What the gateway does when the endpoint picker does not answer."""

    FAIL_OPEN = "FailOpen"
    FAIL_CLOSE = "FailClose"


class Criticality(StrEnum):
    """A client model's criticality (v1 pools map it to a priority: 1 / 0 / -1)."""

    CRITICAL = "Critical"
    STANDARD = "Standard"
    SHEDDABLE = "Sheddable"


class ServiceType(StrEnum):
    """The Envoy proxy Service type."""

    LOAD_BALANCER = "LoadBalancer"
    CLUSTER_IP = "ClusterIP"
    NODE_PORT = "NodePort"


class MirrorKind(StrEnum):
    """What a mirror copies requests to."""

    SERVICE = "Service"
    INFERENCE_POOL = "InferencePool"


def plain_args(value: Any) -> Any:
    """`value` with every enum member replaced by its value, through dicts and lists (Outputs and
    other values are left as they are)."""
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, dict):
        return {k: plain_args(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain_args(v) for v in value]
    return value


def is_output(value: Any) -> bool:
    return isinstance(value, pulumi.Output)
