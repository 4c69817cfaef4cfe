"""The local gateway's intermediate representation: plain data, no Envoy types, no addresses.

`translate.py` builds it from Kubernetes objects; `dataplane.py` adds the addresses the local
processes got; `envoy_config.py` turns the result into Envoy configuration. Each stage is a
pure function with its own golden files (tests/devstack/testdata).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

from .modelserver import ModelServer


@dataclass(frozen=True)
class KeyValueMatch:
    type: str  # "Exact" | "RegularExpression"
    name: str  # header names lower-cased (HTTP header names are case-insensitive)
    value: str


@dataclass(frozen=True)
class Match:
    """One HTTPRouteMatch (all of its conditions must hold)."""

    path_type: str = "PathPrefix"  # "Exact" | "PathPrefix" | "RegularExpression"
    path: str = "/"
    headers: tuple[KeyValueMatch, ...] = ()
    query: tuple[KeyValueMatch, ...] = ()
    method: str | None = None


@dataclass(frozen=True)
class Backend:
    kind: str  # "InferencePool" | "Service" | "Unresolved"
    name: str
    weight: int
    port: int | None = None


@dataclass(frozen=True)
class Mirror:
    kind: str  # "InferencePool" | "Service"
    name: str
    port: int | None
    numerator: int  # of `denominator`: percent N is N/100, fraction a/b is a/b
    denominator: int = 100


@dataclass(frozen=True)
class Rule:
    """One HTTPRoute rule as attached to one listener."""

    name: str  # unique: "<route>" or "<route>.<rule index>"
    route: str
    index: int
    order: int  # the route's apply order: the creation-time tie-breaker of Gateway API precedence
    hostnames: tuple[str, ...]  # already intersected with the listener's hostname; () = any
    matches: tuple[Match, ...]
    backends: tuple[Backend, ...]
    mirrors: tuple[Mirror, ...] = ()
    timeout: float | None = None  # seconds; None: the gateway's request timeout
    # routing-namespace headers clients may send on this route (the objective / fairness-id
    # headers, by the HTTPRoute's infershift.io/client-headers annotation); () = none
    client_headers: tuple[str, ...] = ()
    # the `/v1/models` body the rule's one backend answers with: a models listing Service
    # (components/models_listing.py), whose rendered file the local gateway answers from itself
    listing: str | None = None
    # the rule's one backend is a models listing Service, on paths other than /v1/models (the
    # management paths components/models_listing.py sends there): answered 404, as its server does
    refused: bool = False


@dataclass(frozen=True)
class Listener:
    gateway: str
    name: str
    port: int
    hostname: str | None = None
    protocol: str = "HTTP"


@dataclass(frozen=True)
class Port:
    """One Envoy listener: the Gateway API listeners of one Gateway that share a port."""

    key: str  # the name users give --listener-port: the first listener's name (gateway/name if ambiguous)
    gateway: str
    port: int
    listeners: tuple[Listener, ...]
    rules: tuple[Rule, ...]


@dataclass(frozen=True)
class ServerGroup:
    """A Deployment running model servers: each replica becomes a simulated server."""

    name: str
    labels: dict[str, str]
    replicas: int
    server: ModelServer


@dataclass(frozen=True)
class Picker:
    service: str
    failure_mode: str  # "FailOpen" | "FailClose"
    config: dict  # the picker config file the cluster's picker gets (discovery not yet swapped)
    config_source: str  # where `config` came from, for the describe output
    tls: bool = True  # the picker serves ext_proc over TLS (its default; `--secure-serving=false` turns it off)


@dataclass(frozen=True)
class Pool:
    name: str
    api_version: str
    selector: dict[str, str]
    target_ports: tuple[int, ...]
    picker: Picker
    servers: tuple[str, ...]  # ServerGroup names the selector matches
    routing: tuple[dict, ...]  # InferenceModel / InferenceObjective / InferenceModelRewrite objects
    max_body_bytes: int


@dataclass(frozen=True)
class Service:
    name: str
    selector: dict[str, str]
    servers: tuple[str, ...]  # ServerGroup (and Recorder) names the selector matches


@dataclass(frozen=True)
class Recorder:
    """A Deployment running the shadow recorder (picker/recorder.py, components/shadow_recorder.py):
    run locally in front of the Service its `--upstream` names."""

    name: str
    labels: dict[str, str]
    upstream: str  # the Service it forwards to (the first DNS label of its --upstream URL)
    record_as: str  # its --name: the `pool` of its answer lines
    max_text_chars: int = 2000


@dataclass(frozen=True)
class Gateway:
    """Everything the local stack serves, from one set of objects."""

    ports: tuple[Port, ...]
    pools: tuple[Pool, ...]
    services: tuple[Service, ...]
    servers: tuple[ServerGroup, ...]
    buffer_limit: int | None  # ClientTrafficPolicy connection.bufferLimit, bytes
    request_timeout: float | None  # BackendTrafficPolicy timeout.http.requestTimeout, seconds
    ignored: tuple[str, ...] = ()  # kinds and fields not honoured locally
    recorders: tuple[Recorder, ...] = ()
    warnings: tuple[str, ...] = ()  # what a gateway reports: unresolved refs, unattached routes
    notes: tuple[str, ...] = field(default=())  # how the local stack stands in (pickers, servers)
    max_request_headers_kb: int | None = None  # ClientTrafficPolicy headers.maxRequestHeaderLimit (None: Envoy's 60)

    def pool(self, name: str) -> Pool:
        return next(p for p in self.pools if p.name == name)

    def server(self, name: str) -> ServerGroup:
        return next(s for s in self.servers if s.name == name)

    def to_dict(self) -> dict:
        return asdict(self)


def from_dict(cls, data):
    """The IR (or any part of it) back from its plain-data form (`Gateway.to_dict`, a golden file)."""
    import dataclasses
    import typing

    if dataclasses.is_dataclass(cls):
        hints = typing.get_type_hints(cls)
        return cls(**{f.name: from_dict(hints[f.name], data[f.name]) for f in dataclasses.fields(cls)
                      if f.name in data})
    origin = typing.get_origin(cls)
    args = typing.get_args(cls)
    if origin is tuple:
        inner = args[0]
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(from_dict(inner, x) for x in data)
        return tuple(from_dict(a, x) for a, x in zip(args, data, strict=False))
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        if data is None:
            return None
        real = [a for a in args if a is not type(None)]
        return from_dict(real[0], data)
    return data
