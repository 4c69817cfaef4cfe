"""The components' enumerated args, as str-valued enums (the schema's enum types).

Each member equals its string value (`PoolApiVersion.V1 == "v1"`), so callers may pass either;
components turn members into their plain values before building manifests (`plain_args`), so a
manifest never holds an enum member.
"""
import types
import typing
from collections.abc import Awaitable, Mapping
from enum import Enum, StrEnum
from typing import Any

try:  # the pure manifest builders (model routing) are used where Pulumi is not installed: the picker's tests
    import pulumi
except ImportError:  # pragma: no cover - exercised in the picker's virtualenv
    pulumi = None  # type: ignore[assignment]


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
    return pulumi is not None and isinstance(value, pulumi.Output)


_Args = typing.TypeVar("_Args", bound=Mapping[str, Any])


def _unwrap(annotation: Any) -> Any:
    """The value type under NotRequired / Required / Optional / pulumi.Input."""
    while True:
        origin = typing.get_origin(annotation)
        if origin in (typing.NotRequired, typing.Required):
            annotation = typing.get_args(annotation)[0]
        elif origin in (typing.Union, types.UnionType):
            inner = [a for a in typing.get_args(annotation)
                     if a is not type(None)
                     and typing.get_origin(a) not in ((pulumi.Output, Awaitable) if pulumi else (Awaitable,))
                     and not isinstance(a, typing.ForwardRef)]
            if len(inner) != 1:
                return annotation
            annotation = inner[0]
        else:
            return annotation


def _coerce(value: Any, annotation: Any) -> Any:
    annotation = _unwrap(annotation)
    if annotation is int and isinstance(value, float) and value.is_integer():
        return int(value)
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is list and isinstance(value, list):
        return [_coerce(v, args[0]) for v in value]
    if origin is dict and isinstance(value, dict):
        return {k: _coerce(v, args[1]) for k, v in value.items()}
    if typing.is_typeddict(annotation) and isinstance(value, dict):
        return component_args(value, annotation)
    return value


def component_args(args: _Args, typ: Any) -> _Args:
    """A component's args as its builders take them: enum members as their values, and whole
    numbers where the TypedDict `typ` says int (another language's SDK sends every number as a
    float: 8000.0 must stay `--port 8000`). Plain callers' args come back equal."""
    hints = typ.__annotations__  # unevaluated: pulumi.Input holds a forward reference to Output
    return plain_args({k: _coerce(v, hints[k]) if k in hints else v for k, v in args.items()})
