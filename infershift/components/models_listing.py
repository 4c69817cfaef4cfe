"""ModelsListing: `GET /v1/models` through the gateway, on a cluster as on the local stack.

A provider's gateway (ACK's Envoy Gateway, GKE's managed proxies) answers nothing itself, so the
listing is objects of the stack: a ConfigMap holding every listing (`listings.json`: listing key
-> OpenAI model list), a small Deployment serving it from the picker's image
(`python -m infershift.picker.listing`, picker/listing.py) and its Service, and per Gateway
listener (and per hostname its routes name) an HTTPRoute with one rule: Exact `/v1/models` (any
method: the server answers GET and HEAD, 405 otherwise), a RequestHeaderModifier setting
`x-infershift-listing: <key>`, the Service as backend — Core Gateway API features only.

A listing holds the client-facing model names of the pools the listener's routes send to (their
model routing objects' names, and base models served under their own name; adapters that are
only targets are not listed), each with the targets behind it: target model, pool, route, and
the share of that name's requests on that route the target gets (the route's pool weight times
the pool's target weight). `listings()` is the one computation; the local stack
(infershift/devstack) answers `/v1/models` with the rendered ConfigMap's listings, so a local run
and a cluster give the same answer. A listener whose routes name `/v1/models` themselves keeps
it (no listing rule is rendered there).
"""
from __future__ import annotations

import json
from typing import Any, NotRequired, TypedDict

import pulumi

from infershift import contract

from .api import GATEWAY_API, GATEWAY_GROUP
from .checks import check
from .enums import component_args
from .naming import dns_label
from .objects import build_manifests, child_opts, declare, http_health_probes, keep_options, restricted_security_context
from .routes import route_await_annotations

PATH = "/v1/models"
PORT = contract.MODELS_LISTING_PORT


class ListingListenerArgs(TypedDict):
    name: str
    hostname: NotRequired[str | None]


class ListingRouteArgs(TypedDict):
    name: str
    """The HTTPRoute's name (what a listing's targets name as `route`)."""
    backends: dict[str, int]
    """The route's weighted rule (pins left out): InferencePool -> weight."""
    listener: NotRequired[str | None]
    """The Gateway listener it attaches to; every listener when omitted."""
    hostnames: NotRequired[list[str]]
    paths: NotRequired[list[str]]
    """Its PathPrefix matches: a route naming `/v1/models` keeps it on its listener."""


class ModelsListingArgs(TypedDict):
    gateway: str
    """The Gateway the listing routes attach to."""
    listeners: list[ListingListenerArgs]
    routes: list[ListingRouteArgs]
    pool_models: dict[str, dict[str, dict[str, int]]]
    """Pool -> client model name -> target model -> weight (`client_models()`)."""
    image: pulumi.Input[str]
    """An image with infershift's picker (the listing server is one of its modules)."""
    namespace: NotRequired[pulumi.Input[str]]
    name: NotRequired[str]
    """The ConfigMap's, Deployment's and Service's name (routes: `<name>-<listener>[-<host>]`);
    default `<gateway>-models`."""
    replicas: NotRequired[int]
    image_pull_secrets: NotRequired[list[str]]
    await_timeout_seconds: NotRequired[int | None]
    """`pulumi up` waits this long for the routes to be Accepted with ResolvedRefs; None: no wait."""


def client_models(api_version: str, models: dict[str, dict[str, int]], served_names: list[str]) -> dict[str, dict[str, int]]:
    """The names clients send to a pool and their targets, as its picker reads the pool's model
    routing objects (model_routing.py renders them): v1alpha2, an InferenceModel per name (no live
    target: served under its own name); v1, an InferenceModelRewrite per name with live targets
    (0-weight targets are not rendered); then the base models its servers serve under their own
    names, unless a name already lists them (adapters that are only targets are not client-facing)."""
    out: dict[str, dict[str, int]] = {}
    for model, targets in models.items():
        live = {t: w for t, w in targets.items() if w > 0}
        if live:
            out[model] = live
        elif api_version == "v1alpha2":
            out[model] = {model: 1}
    listed = set(out) | {t for targets in out.values() for t in targets}
    for name in served_names:
        if name not in listed:
            listed.add(name)
            out[name] = {name: 1}
    return out


def _intersect(listener: str | None, route: list[str]) -> list[str] | None:
    """Gateway API hostname intersection: the hostnames a route serves on a listener; [] = any
    host; None = it does not attach there."""
    if not route:
        return [listener] if listener else []
    if not listener:
        return list(route)
    out = []
    for h in route:
        if h == listener or (listener.startswith("*.") and _covers(listener, h)):
            out.append(h)
        elif h.startswith("*.") and _covers(h, listener):
            out.append(listener)
    return list(dict.fromkeys(out)) or None


def _covers(wild: str, host: str) -> bool:
    return wild.startswith("*.") and host.endswith(wild[1:]) and len(host) > len(wild) - 1


def listing(routes: list[ListingRouteArgs], pool_models: dict[str, dict[str, dict[str, int]]]) -> dict:
    """The OpenAI model list for requests these routes serve."""
    by_model: dict[str, list[dict]] = {}
    for r in routes:
        total = sum(w for w in r["backends"].values() if w > 0)
        for pool, weight in r["backends"].items():
            if weight <= 0 or pool not in pool_models:
                continue
            for model, targets in pool_models[pool].items():
                weights = sum(targets.values()) or 1
                for target, w in targets.items():
                    if w > 0:
                        by_model.setdefault(model, []).append({
                            "model": target, "pool": pool, "route": r["name"],
                            "share": round(weight / total * w / weights, 4)})
    return {"object": "list", "data": [
        {"id": name, "object": "model", "created": 0, "owned_by": "infershift",
         "targets": sorted(targets, key=lambda t: (t["route"], t["pool"], t["model"]))}
        for name, targets in sorted(by_model.items())]}


def listings(a: ModelsListingArgs) -> list[dict]:
    """Per listener, and per hostname its routes serve there: `{"key", "listener", "hostname",
    "listing"}` (hostname None: requests for any host). As Gateway API matches a request, the
    routes of a hostname's listing are those naming it, a wildcard covering it, or no hostname.
    Left out: a listing with no model, and one where a route names `/v1/models` itself."""
    out = []
    for li in a["listeners"]:
        attached = []
        for r in a["routes"]:
            if r.get("listener") not in (None, li["name"]):
                continue
            eff = _intersect(li.get("hostname"), list(r.get("hostnames") or []))
            if eff is not None:
                attached.append((r, eff))
        groups: list[tuple[str | None, list[ListingRouteArgs]]] = []
        for name in sorted({h for _, eff in attached for h in eff}):
            groups.append((name, [r for r, eff in attached
                                  if name in eff or any(_covers(h, name) for h in eff) or not eff]))
        groups.append((None, [r for r, eff in attached if not eff]))
        for host, routes in groups:
            if any(p == PATH for r in routes for p in r.get("paths") or []):
                continue
            models = listing(routes, a["pool_models"])
            if models["data"]:
                out.append({"key": li["name"] if host is None else f"{li['name']}/{host}",
                            "listener": li["name"], "hostname": host, "listing": models})
    return out


def object_name(a: ModelsListingArgs) -> str:
    return a.get("name") or f"{a['gateway']}-models"


def route_name(base: str, listener: str, hostname: str | None) -> str:
    return dns_label(base, listener, *([hostname.replace("*", "wildcard")] if hostname else []))


def listings_file(entries: list[dict]) -> str:
    """The ConfigMap's `listings.json`: listing key -> OpenAI model list."""
    return json.dumps({e["key"]: e["listing"] for e in sorted(entries, key=lambda e: e["key"])}, indent=1) + "\n"


def manifests(a: ModelsListingArgs) -> list[dict]:
    """ConfigMap, Deployment, Service and one HTTPRoute per listing; nothing when no listener has one."""
    entries = listings(a)
    if not entries:
        return []
    name, ns = object_name(a), a.get("namespace", "default")
    labels = {"app": name, contract.LISTING_LABEL: a["gateway"]}
    meta = {"name": name, "namespace": ns, "labels": labels}
    container = {
        "name": "listing",
        "image": a["image"],
        "imagePullPolicy": "IfNotPresent",
        "command": ["python", "-m", contract.LISTING_MODULE],
        "args": ["--file", f"{contract.LISTING_DIR}/{contract.LISTING_FILE}", "--port", str(PORT),
                 "--host", "0.0.0.0"],
        "ports": [{"name": "http", "containerPort": PORT, "protocol": "TCP"}],
        **http_health_probes(PORT),
        "resources": {"requests": {"cpu": "10m", "memory": "32Mi"}, "limits": {"memory": "64Mi"}},
        "securityContext": restricted_security_context(),
        "volumeMounts": [{"name": "listings", "mountPath": contract.LISTING_DIR, "readOnly": True}],
    }
    pod: dict[str, Any] = {
        "automountServiceAccountToken": False,
        "securityContext": {"runAsNonRoot": True, "runAsUser": 65532, "runAsGroup": 65532,
                            "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [container],
        # the kubelet updates the mounted file in place when the listings change (weights): the
        # server reads it again, so a weight edit changes the ConfigMap, not the pods
        "volumes": [{"name": "listings", "configMap": {"name": name}}],
    }
    if a.get("image_pull_secrets"):
        pod["imagePullSecrets"] = [{"name": s} for s in a.get("image_pull_secrets") or []]
    out: list[dict] = [
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta,
         "data": {contract.LISTING_FILE: listings_file(entries)}},
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta, "spec": {
            "replicas": a.get("replicas", 1), "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": pod}}},
        {"apiVersion": "v1", "kind": "Service", "metadata": meta, "spec": {
            "type": "ClusterIP", "selector": labels,
            "ports": [{"name": "http", "port": PORT, "targetPort": PORT, "protocol": "TCP"}]}},
    ]
    for e in entries:
        route_meta: dict[str, Any] = {"name": route_name(name, e["listener"], e["hostname"]), "namespace": ns,
                                      "labels": labels}
        if a.get("await_timeout_seconds"):
            route_meta["annotations"] = route_await_annotations(int(a.get("await_timeout_seconds") or 0))
        spec: dict[str, Any] = {"parentRefs": [{"group": GATEWAY_GROUP, "kind": "Gateway", "name": a["gateway"],
                                                "sectionName": e["listener"]}]}
        if e["hostname"]:
            spec["hostnames"] = [e["hostname"]]
        spec.update({
            "rules": [{
                # no method match: HTTPRouteMethodMatching is Extended, and GKE's gateway does not
                # support it (gateway-api conformance/reports/v1.3.0/gke-gateway/*-report.yaml,
                # unsupportedFeatures); the server answers other methods with 405 itself
                "matches": [{"path": {"type": "Exact", "value": PATH}}],
                "filters": [{"type": "RequestHeaderModifier", "requestHeaderModifier": {
                    "set": [{"name": contract.LISTING_HEADER, "value": e["key"]}]}}],
                "backendRefs": [{"group": "", "kind": "Service", "name": name, "port": PORT}],
            }, {
                # the model servers' management endpoints: more specific than any route's
                # prefix, so they reach the listing server, which answers 404 (OpenAI's error JSON)
                "matches": [{"path": {"type": "Exact", "value": path}} for path in contract.MANAGEMENT_PATHS]
                + [{"path": {"type": "PathPrefix", "value": prefix}} for prefix in contract.MANAGEMENT_PREFIXES],
                "backendRefs": [{"group": "", "kind": "Service", "name": name, "port": PORT}],
            }],
        })
        out.append({"apiVersion": GATEWAY_API, "kind": "HTTPRoute", "metadata": route_meta, "spec": spec})
    return out


class ModelsListing(pulumi.ComponentResource):
    """`GET /v1/models` through the gateway: the listings ConfigMap, its server (Deployment +
    Service) and one HTTPRoute rule per listener (and hostname) whose routes serve pools."""

    def __init__(self, name: str, args: ModelsListingArgs, opts: pulumi.ResourceOptions | None = None):
        args = component_args(args, ModelsListingArgs)
        check("ModelsListing", name, args)  # before anything is declared
        super().__init__("infershift:index:ModelsListing", name, None, opts)
        keep_options(self, opts)
        self.objects = {}
        for layout, m in build_manifests(args, manifests):
            role = {"ConfigMap": "config", "Deployment": "deployment", "Service": "service"}.get(layout["kind"])
            key = role or f"route-{layout['metadata']['name']}"
            self.objects[key] = declare(f"{name}-{role}" if role else f"{name}-{layout['metadata']['name']}",
                                        m, child_opts(self))
        self.register_outputs({})


# --- from a stack spec (the stack program) ---------------------------------------------------

def stack_args(spec: Any, image: pulumi.Input[str] | None, await_timeout_seconds: int | None) -> ModelsListingArgs | None:
    """The listing of a validated stack (`StackSpec`, namePrefix applied), from the same spec
    values its routes and model routing objects are built from; None when it is turned off
    (`gateway.modelsListing.enabled: false`) or there is no image to serve it with."""
    ml = spec.gateway.models_listing
    if not ml.enabled or image is None:
        return None
    routes: list[ListingRouteArgs] = []
    for n, r in spec.routes.items():
        routes.append({"name": n, "backends": dict(r.backends), "listener": r.listener,
                       "hostnames": list(r.hostnames), "paths": list(r.paths)})
    for n, m in spec.mirrors.items():
        routes.append({"name": n, "backends": {m.backend: 1}, "listener": m.listener,
                       "hostnames": list(m.hostnames), "paths": list(m.paths)})
    pool_models = {
        p: client_models(pool.api_version, {m: dict(r.targets) for m, r in pool.models.items()},
                         list(dict.fromkeys(s.served_name for s in spec.pool_services(p).values())))
        for p, pool in spec.pools.items()}
    args: ModelsListingArgs = {
        "gateway": spec.gateway.name, "namespace": spec.platform.namespace,
        "listeners": [{"name": li.name, "hostname": li.hostname} for li in spec.gateway.listeners],
        "routes": routes, "pool_models": pool_models, "image": image, "replicas": ml.replicas,
        "await_timeout_seconds": await_timeout_seconds,
    }
    return args


def stack_image(spec: Any, built: dict) -> pulumi.Input[str] | None:
    """The listing's image: `gateway.modelsListing.image`, else the picker image the stack builds,
    else a self-hosted pool's picker image (infershift's picker)."""
    ml = spec.gateway.models_listing
    if ml.image:
        return ml.image
    if built.get("picker") is not None:
        return built["picker"]
    return next((p.picker.image for p in spec.pools.values() if p.picker.mode == "self-hosted" and p.picker.image),
                None)
