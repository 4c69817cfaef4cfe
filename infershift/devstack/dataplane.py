"""StackSpec -> the local data plane as plain data (no Envoy types).

One direction only: this module reads the typed spec and the addresses the local
processes got; `envoy_config.py` turns the result into Envoy configuration.
"""
from __future__ import annotations

from dataclasses import dataclass

from infershift import contract
from infershift.spec import StackSpec
from infershift.spec.base import duration_seconds, quantity_bytes

ENDPOINT_HEADER = contract.DESTINATION_HEADER
BUFFER_HEADROOM = 1 << 20


@dataclass(frozen=True)
class Endpoint:
    address: str  # "ip:port"
    name: str  # pod name, as the server reports it in x-inference-pod
    service: str
    models: tuple[str, ...]


@dataclass(frozen=True)
class Listener:
    name: str
    port: int
    hostname: str | None = None


@dataclass(frozen=True)
class Pin:
    header: str
    value: str
    pool: str


@dataclass(frozen=True)
class MirrorTo:
    kind: str  # "Service" | "InferencePool"
    name: str
    percent: int


@dataclass(frozen=True)
class Rule:
    """One HTTPRoute: its matches and where it sends (weighted pools, pins, a mirror)."""

    name: str
    listeners: tuple[str, ...]
    hostnames: tuple[str, ...]
    paths: tuple[str, ...]
    backends: tuple[tuple[str, int], ...]  # pool -> weight, zero weights kept
    pins: tuple[Pin, ...] = ()
    mirror: MirrorTo | None = None


@dataclass(frozen=True)
class Pool:
    name: str
    failure_mode: str  # "FailOpen" | "FailClose"
    endpoints: tuple[Endpoint, ...]
    port: int  # the pool's own (second-tier) listener
    picker_port: int  # the picker's ext_proc gRPC port
    max_body_bytes: int  # the pool listener's buffer: the picker's limit plus headroom


@dataclass(frozen=True)
class Service:
    name: str
    endpoints: tuple[Endpoint, ...]


@dataclass(frozen=True)
class DataPlane:
    listeners: tuple[Listener, ...]
    rules: tuple[Rule, ...]
    pools: tuple[Pool, ...]
    services: tuple[Service, ...]
    buffer_limit: int | None  # bytes, ClientTrafficPolicy connection.bufferLimit
    request_timeout: float | None  # seconds, BackendTrafficPolicy requestTimeout

    def pool(self, name: str) -> Pool:
        return next(p for p in self.pools if p.name == name)


@dataclass(frozen=True)
class Ports:
    """Where the local processes listen; decided by the caller (free-port probing)."""

    listeners: dict[str, int]  # gateway listener name -> port
    pools: dict[str, int]  # pool name -> its second-tier listener port
    pickers: dict[str, int]  # pool name -> picker gRPC port


def build(spec: StackSpec, endpoints: dict[str, list[Endpoint]], ports: Ports) -> DataPlane:
    """The data plane of `spec`, given each service's endpoints and the chosen ports."""
    gw = spec.gateway
    listeners = tuple(Listener(lst.name, ports.listeners[lst.name], lst.hostname) for lst in gw.listeners)
    all_listeners = tuple(lst.name for lst in gw.listeners)

    def matches(m) -> dict:
        # What routes and mirrors share (spec RouteMatch): where they listen and what they match.
        return {"listeners": (m.listener,) if m.listener else all_listeners,
                "hostnames": tuple(m.hostnames), "paths": tuple(m.paths)}

    rules: list[Rule] = [
        Rule(name=name, **matches(route), backends=tuple(route.backends.items()),
             pins=tuple(Pin(p.header.lower(), p.value, p.backend) for p in route.pins))
        for name, route in spec.routes.items()
    ]
    rules += [
        Rule(name=name, **matches(mirror), backends=((mirror.backend, 1),),
             mirror=MirrorTo(mirror.mirror_to.kind, mirror.mirror_to.name, mirror.percent))
        for name, mirror in spec.mirrors.items()
    ]
    pools = []
    for name, pool in spec.pools.items():
        members = tuple(ep for svc in spec.pool_services(name) for ep in endpoints.get(svc, []))
        # Above the picker's body limit (headers and framing need room too), so the
        # picker, not Envoy, rejects a too-large body — with an OpenAI error.
        body = quantity_bytes(pool.picker.max_body_size)
        if gw.buffer_limit:
            body = max(body, quantity_bytes(gw.buffer_limit))
        body += BUFFER_HEADROOM
        pools.append(Pool(
            name=name,
            failure_mode=pool.failure_mode,
            endpoints=members,
            port=ports.pools[name],
            picker_port=ports.pickers[name],
            max_body_bytes=body,
        ))
    services = tuple(Service(name, tuple(endpoints.get(name, []))) for name in spec.services)
    return DataPlane(
        listeners=listeners,
        rules=tuple(rules),
        pools=tuple(pools),
        services=services,
        buffer_limit=quantity_bytes(gw.buffer_limit) if gw.buffer_limit else None,
        request_timeout=duration_seconds(gw.request_timeout) if gw.request_timeout else None,
    )


def restart_needed(old: StackSpec, new: StackSpec) -> list[str]:
    """Config paths an edit changed that the running processes cannot take live.
    Live: routes, mirrors, each pool's model routing, the gateway's request timeout."""

    def fixed(spec: StackSpec) -> dict:
        d = spec.model_dump(by_alias=True)
        d.pop("routes"), d.pop("mirrors")
        d["gateway"].pop("requestTimeout")
        for pool in d["pools"].values():
            pool.pop("models")
        return d

    def diff(a, b, path: str) -> list[str]:
        if isinstance(a, dict) and isinstance(b, dict):
            out = []
            for key in sorted(set(a) | set(b), key=str):
                out += diff(a.get(key), b.get(key), f"{path}.{key}" if path else str(key))
            return out
        return [] if a == b else [path]

    return diff(fixed(old), fixed(new), "")
