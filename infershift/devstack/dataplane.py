"""The IR plus the addresses the local processes got -> the data plane Envoy is configured from.

One direction only: `translate.py` reads the Kubernetes objects into the IR (`ir.py`); this
module adds where each listener, pool tier, picker and model server listens; `envoy_config.py`
turns the result into Envoy configuration.
"""
from __future__ import annotations

from dataclasses import dataclass

from infershift import contract

from . import ir

ENDPOINT_HEADER = contract.DESTINATION_HEADER


@dataclass(frozen=True)
class Endpoint:
    address: str  # "ip:port"
    name: str  # pod name, as the server reports it in x-inference-pod
    server: str  # the Deployment (server group) it belongs to
    models: tuple[str, ...]
    admin: str = ""  # "ip:port" of a simulator's admin endpoints (faults, predictions); "" for real servers


@dataclass(frozen=True)
class Listener:
    key: str
    port: int  # where it listens locally
    rules: tuple[ir.Rule, ...]


@dataclass(frozen=True)
class ClientModel:
    """A model name clients send to a pool, and the target models its picker splits it over."""

    name: str
    targets: tuple[tuple[str, int], ...]  # (target model, weight)


@dataclass(frozen=True)
class Pool:
    name: str
    failure_mode: str  # "FailOpen" | "FailClose"
    endpoints: tuple[Endpoint, ...]
    port: int  # the pool's own (second-tier) listener
    picker_port: int  # the picker's ext_proc gRPC port
    max_body_bytes: int  # the pool listener's buffer: the picker's limit plus headroom
    picker_tls: bool = True  # Envoy talks TLS to the picker (the picker's default), as a cluster's gateway
    models: tuple[ClientModel, ...] = ()  # what clients ask this pool for (GET /v1/models)


@dataclass(frozen=True)
class Service:
    name: str
    endpoints: tuple[Endpoint, ...]


@dataclass(frozen=True)
class DataPlane:
    listeners: tuple[Listener, ...]
    pools: tuple[Pool, ...]
    services: tuple[Service, ...]
    buffer_limit: int | None  # bytes, ClientTrafficPolicy connection.bufferLimit
    request_timeout: float | None  # seconds, BackendTrafficPolicy requestTimeout
    max_request_headers_kb: int = contract.ENVOY_DEFAULT_MAX_HEADERS_KB  # ClientTrafficPolicy headers.maxRequestHeaderLimit

    def pool(self, name: str) -> Pool:
        return next(p for p in self.pools if p.name == name)

    @property
    def rules(self) -> tuple[ir.Rule, ...]:
        return tuple(dict.fromkeys(r for lst in self.listeners for r in lst.rules))


@dataclass(frozen=True)
class Ports:
    """Where the local processes listen; decided by the caller (free-port probing)."""

    listeners: dict[str, int]  # ir.Port key -> port
    pools: dict[str, int]  # pool name -> its second-tier listener port
    pickers: dict[str, int]  # pool name -> picker gRPC port


def client_models(gw: ir.Gateway, pool: ir.Pool) -> tuple[ClientModel, ...]:
    """The names clients use for a pool and their targets, as its picker reads them: the picker
    config's `models`, then the pool's routing objects on top (the picker's own translation); then
    the base models its servers serve under their own names (passed through). Adapters that are only
    targets are not client-facing."""
    from infershift.picker import k8s
    from infershift.picker.config import ConfigError, parse_model_route

    routes: dict = {}
    for name, raw in (pool.picker.config.get("models") or {}).items():
        try:
            routes[str(name)] = parse_model_route(str(name), raw, f"models.{name}")
        except ConfigError:
            continue  # the picker refuses the file and says why; nothing to list
    owner = str((pool.picker.config.get("pool") or {}).get("name") or pool.name)
    by_kind: dict[str, list[dict]] = {}
    for o in pool.routing:
        by_kind.setdefault(str(o.get("kind")), []).append(o)
    routes.update(k8s.routes_from_inference_models(by_kind.get("InferenceModel", []), owner))
    routes.update(k8s.routes_from_rewrites(by_kind.get("InferenceModelRewrite", []), owner))
    out = [ClientModel(r.name, tuple((t.model, t.weight) for t in r.targets)) for r in routes.values()]
    listed = {m.name for m in out} | {t.model for r in routes.values() for t in r.targets}
    for group in pool.servers:
        for name in gw.server(group).server.served_names:
            if name not in listed:
                listed.add(name)
                out.append(ClientModel(name, ((name, 1),)))
    return tuple(out)


def build(gw: ir.Gateway, endpoints: dict[str, list[Endpoint]], ports: Ports) -> DataPlane:
    """The data plane of `gw`, given each server group's endpoints and the chosen ports."""
    return DataPlane(
        listeners=tuple(Listener(p.key, ports.listeners[p.key], p.rules) for p in gw.ports),
        pools=tuple(
            Pool(name=p.name, failure_mode=p.picker.failure_mode,
                 endpoints=tuple(e for s in p.servers for e in endpoints.get(s, [])),
                 port=ports.pools[p.name], picker_port=ports.pickers[p.name], max_body_bytes=p.max_body_bytes,
                 picker_tls=p.picker.tls, models=client_models(gw, p))
            for p in gw.pools),
        services=tuple(Service(s.name, tuple(e for g in s.servers for e in endpoints.get(g, [])))
                       for s in gw.services),
        buffer_limit=gw.buffer_limit,
        request_timeout=gw.request_timeout,
        max_request_headers_kb=gw.max_request_headers_kb or contract.ENVOY_DEFAULT_MAX_HEADERS_KB,
    )


def restart_needed(old: ir.Gateway, new: ir.Gateway) -> list[str]:
    """What an edit changed that the running processes cannot take live. Live: routes (weights,
    matches, mirrors), each pool's model routing objects and picker config, the request timeout."""
    out = []

    def shape(gw: ir.Gateway) -> dict:
        return {
            "listeners": {p.key: (p.gateway, p.port, p.listeners) for p in gw.ports},
            "pools": {p.name: (p.selector, p.target_ports, p.servers, p.picker.failure_mode, p.max_body_bytes,
                               p.picker.tls) for p in gw.pools},
            "services": {s.name: s.servers for s in gw.services},
            "servers": {s.name: (s.replicas, s.server) for s in gw.servers},
            "recorders": {r.name: r for r in gw.recorders},
            "bufferLimit": gw.buffer_limit,
            "maxRequestHeaderLimit": gw.max_request_headers_kb,
        }

    a, b = shape(old), shape(new)
    for section in a:
        if isinstance(a[section], dict):
            for name in sorted(set(a[section]) | set(b[section])):
                if a[section].get(name) != b[section].get(name):
                    out.append(f"{section}.{name}")
        elif a[section] != b[section]:
            out.append(section)
    return out
