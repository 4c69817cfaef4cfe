"""CanaryRoute (weighted InferencePool backends, optional header pins) and MirrorRoute
(a primary InferencePool plus a RequestMirror copy), both Gateway API HTTPRoutes."""
import json
from typing import Any, NotRequired, TypedDict

import pulumi

from infershift import contract

from .api import GATEWAY_API, GATEWAY_GROUP, POOL_GROUPS
from .checks import check
from .enums import MirrorKind, PoolApiVersion, component_args
from .objects import build_manifests, child_opts, declare, keep_options


class PinArgs(TypedDict):
    header: str
    value: str
    backend: str
    """The pool that requests carrying `header: value` always go to."""


class RouteMatchArgs(TypedDict):
    gateway: pulumi.Input[str]
    """The Gateway the route attaches to (e.g. a Gateway component's `gateway_name`)."""
    namespace: NotRequired[pulumi.Input[str]]
    listener: NotRequired[str | None]
    """Gateway listener (sectionName); every listener when omitted."""
    hostnames: NotRequired[list[str]]
    paths: NotRequired[list[str]]
    """PathPrefix matches, e.g. `/v1/completions`, `/v1/chat/completions`. Default `/`."""
    client_headers: NotRequired[list[str]]
    """Routing headers this route lets clients send (of contract.CLIENT_CHOOSABLE_HEADERS): the
    `infershift.io/client-headers` annotation. `remove_headers` are removed by a
    RequestHeaderModifier on every rule (what the Gateway keeps for other routes, this one does not allow)."""
    remove_headers: NotRequired[list[str]]
    await_timeout_seconds: NotRequired[int | None]
    """`pulumi up` waits this long for the route to be Accepted with ResolvedRefs by its Gateway
    (a rejected route fails the update); None: no wait."""


class MirrorTargetArgs(TypedDict):
    name: str
    kind: NotRequired[MirrorKind]
    """Service (default) or InferencePool."""
    port: NotRequired[int | None]
    """Service port (required for a Service)."""


class RouteMirrorArgs(MirrorTargetArgs):
    percent: NotRequired[int]
    """Share copied (default 100); 0 renders no filter."""
    pool_api_version: NotRequired[PoolApiVersion]
    """API version of a mirrored-to pool; default v1."""


class CanaryRouteArgs(RouteMatchArgs):
    backends: dict[str, int]
    """InferencePool name -> weight (90/10 -> 50/50 -> 100)."""
    pool_api_version: NotRequired[PoolApiVersion]
    """API version of the pools (one for all backends); default v1."""
    pool_versions: NotRequired[dict[str, str]]
    """Per-pool API version (`v1` / `v1alpha2`), when pools differ. (Strings, not PoolApiVersion:
    the Python provider's input mapping turns a map of enums into empty objects.)"""
    pins: NotRequired[list[PinArgs]]
    """Header matches that always send a request to one pool."""
    mirror: NotRequired[RouteMirrorArgs | None]
    """Copy a share of the weighted rule's requests (not the pinned ones) to a Service or a pool."""


class MirrorRouteArgs(RouteMatchArgs):
    backend: str
    """The primary InferencePool; clients see only its answers."""
    mirror_to: MirrorTargetArgs
    percent: NotRequired[int]
    """Share of requests copied to `mirror_to` (default 100)."""
    pool_api_version: NotRequired[PoolApiVersion]
    mirror_pool_api_version: NotRequired[PoolApiVersion]


def _pool_backend(name: str, version: str, weight: int) -> dict:
    return {"group": POOL_GROUPS[version], "kind": "InferencePool", "name": name, "weight": weight}


def _matches(a: RouteMatchArgs, headers: list[dict] | None = None) -> list[dict]:
    out = []
    for path in a.get("paths") or ["/"]:
        match: dict = {"path": {"type": "PathPrefix", "value": path}}
        if headers:
            match["headers"] = headers
        out.append(match)
    return out


def _route(name: str, a: RouteMatchArgs, rules: list[dict]) -> dict:
    parent: dict[str, Any] = {"group": GATEWAY_GROUP, "kind": "Gateway", "name": a["gateway"]}
    listener = a.get("listener")
    if listener:
        parent["sectionName"] = listener
    spec: dict = {"parentRefs": [parent]}
    if a.get("hostnames"):
        spec["hostnames"] = list(a["hostnames"])
    remove = sorted(a.get("remove_headers") or [])
    if remove:
        for rule in rules:
            rule.setdefault("filters", []).insert(0, {"type": "RequestHeaderModifier",
                                                      "requestHeaderModifier": {"remove": remove}})
    spec["rules"] = rules
    meta: dict = {"name": name, "namespace": a.get("namespace", "default")}
    annotations: dict = {}
    if a.get("await_timeout_seconds"):
        annotations.update(route_await_annotations(int(a["await_timeout_seconds"] or 0)))
    if a.get("client_headers"):
        annotations[contract.CLIENT_HEADERS_ANNOTATION] = ",".join(a.get("client_headers") or [])
    if annotations:
        meta["annotations"] = annotations
    return {"apiVersion": GATEWAY_API, "kind": "HTTPRoute", "metadata": meta, "spec": spec}


def route_await_annotations(timeout_seconds: int) -> dict[str, str]:
    """An HTTPRoute's status is per parent (`status.parents[].conditions`), which
    `condition=` (top-level `status.conditions`) does not read: JSONPath on the first parent,
    the route's only parentRef. pulumi-kubernetes' JSONPath matches the first value selected
    (provider/pkg/jsonpath/jsonpath.go)."""
    expressions = [f'jsonpath={{.status.parents[0].conditions[?(@.type=="{t}")].status}}=True'
                   for t in ("Accepted", "ResolvedRefs")]
    return {contract.PULUMI_WAIT_FOR: json.dumps(expressions), contract.PULUMI_TIMEOUT_SECONDS: str(timeout_seconds)}


def canary_manifest(name: str, a: CanaryRouteArgs) -> dict:
    versions = a.get("pool_versions") or {}
    default = a.get("pool_api_version", "v1")

    def backend(pool: str, weight: int) -> dict:
        return _pool_backend(pool, versions.get(pool, default), weight)

    # Pinned requests match a header as well, which Gateway API ranks above path-only matches.
    rules = [{"matches": _matches(a, [{"type": "Exact", "name": pin["header"], "value": pin["value"]}]),
              "backendRefs": [backend(pin["backend"], 1)]} for pin in a.get("pins") or []]
    main: dict = {"matches": _matches(a),
                  "backendRefs": [backend(pool, weight) for pool, weight in a["backends"].items()]}
    mirror = a.get("mirror")
    if mirror and mirror.get("percent", 100):
        main["filters"] = [_mirror_filter(mirror, mirror.get("pool_api_version", "v1"), mirror.get("percent", 100))]
    rules.append(main)
    return _route(name, a, rules)


def _mirror_filter(target: MirrorTargetArgs, pool_version: str, percent: int) -> dict:
    if target.get("kind", "Service") == "Service":
        ref = {"group": "", "kind": "Service", "name": target["name"], "port": target.get("port") or 8000}
    else:
        ref = {"group": POOL_GROUPS[pool_version], "kind": "InferencePool", "name": target["name"]}
    return {"type": "RequestMirror", "requestMirror": {"backendRef": ref, "percent": percent}}


def mirror_manifest(name: str, a: MirrorRouteArgs) -> dict:
    version = a.get("mirror_pool_api_version", a.get("pool_api_version", "v1"))
    rule = {
        "matches": _matches(a),
        "backendRefs": [_pool_backend(a["backend"], a.get("pool_api_version", "v1"), 1)],
        "filters": [_mirror_filter(a["mirror_to"], version, a.get("percent", 100))],
    }
    return _route(name, a, [rule])


class CanaryRoute(pulumi.ComponentResource):
    """An HTTPRoute splitting requests by weight across InferencePools (plus header pins)."""

    route_name: pulumi.Output[str]
    """The HTTPRoute's name."""

    def __init__(self, name: str, args: CanaryRouteArgs, opts: pulumi.ResourceOptions | None = None):
        args = component_args(args, CanaryRouteArgs)
        check("CanaryRoute", name, args)  # before anything is declared
        super().__init__("infershift:index:CanaryRoute", name, None, opts)
        keep_options(self, opts)
        self.route_name = pulumi.Output.from_input(name)
        [(_, route)] = build_manifests(args, lambda a: [canary_manifest(name, a)])
        self.route = declare(f"{name}-httproute", route, child_opts(self))
        self.register_outputs({"route_name": name})


class MirrorRoute(pulumi.ComponentResource):
    """An HTTPRoute to a primary InferencePool that copies a share of requests to a mirror."""

    route_name: pulumi.Output[str]
    """The HTTPRoute's name."""

    def __init__(self, name: str, args: MirrorRouteArgs, opts: pulumi.ResourceOptions | None = None):
        args = component_args(args, MirrorRouteArgs)
        check("MirrorRoute", name, args)  # before anything is declared
        super().__init__("infershift:index:MirrorRoute", name, None, opts)
        keep_options(self, opts)
        self.route_name = pulumi.Output.from_input(name)
        [(_, route)] = build_manifests(args, lambda a: [mirror_manifest(name, a)])
        self.route = declare(f"{name}-httproute", route, child_opts(self))
        self.register_outputs({"route_name": name})
