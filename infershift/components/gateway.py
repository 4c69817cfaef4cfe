"""Gateway: the GatewayClass (Envoy Gateway) or a built-in GKE class, the Gateway and its listeners,
and on Envoy Gateway the traffic policies the guides use (buffer limit, request timeout)."""
from typing import Any, NotRequired, TypedDict

import pulumi

from infershift import contract, gateway_errors
from infershift.routing_headers import early_request_headers

from .api import ENVOY_GATEWAY_API, ENVOY_GATEWAY_CONTROLLER, GATEWAY_API, GATEWAY_GROUP
from .checks import check
from .enums import ServiceType, component_args
from .objects import build_manifests, child_opts, declare, keep_options


class ListenerArgs(TypedDict):
    name: str
    port: int
    protocol: NotRequired[str]
    hostname: NotRequired[str | None]


class GatewayArgs(TypedDict):
    class_name: str
    """GatewayClass: Envoy Gateway's (created here) or GKE's `gke-l7-regional-external-managed` / `gke-l7-rilb`."""
    listeners: list[ListenerArgs]
    namespace: NotRequired[pulumi.Input[str]]
    create_class: NotRequired[bool]
    """Create the GatewayClass with Envoy Gateway's controller (ACK, kubeconfig clusters)."""
    envoy_gateway: NotRequired[bool]
    """The gateway is Envoy Gateway: policies and EnvoyProxy apply."""
    buffer_limit: NotRequired[str | None]
    """ClientTrafficPolicy connection.bufferLimit, e.g. `20Mi` (large prompts)."""
    request_timeout: NotRequired[str | None]
    """BackendTrafficPolicy timeout.http.requestTimeout, e.g. `24h` (long generations)."""
    service_type: NotRequired[ServiceType | None]
    """Envoy proxy Service type, through an EnvoyProxy resource; default LoadBalancer."""
    await_timeout_seconds: NotRequired[int | None]
    """`pulumi up` waits this long for the Gateway to be Programmed (its address assigned); None: no wait."""
    name_prefix: NotRequired[str]
    """Prefix of the policies' and EnvoyProxy's names (`client-buffer-limit`, `backend-timeout`,
    `custom-proxy-config`, as the guides name them), for stacks sharing a namespace."""
    client_headers: NotRequired[list[str]]
    """Routing-namespace headers clients may send (the routes' pin headers): every other
    `x-gateway-*`, `x-llm-d-*`, `x-infershift-*`, `x-envoy-*` request header is removed before
    routing (ClientTrafficPolicy `headers.earlyRequestHeaders`), so a client cannot choose the
    target model or the endpoint (infershift/routing_headers.py; devstack strips the same set)."""
    strip_routing_headers: NotRequired[bool]
    """Default true (Envoy Gateway only)."""
    json_errors: NotRequired[bool]
    """Default true (Envoy Gateway only): Envoy's own plain-text replies (malformed requests,
    oversized bodies, failed upstreams ...) become OpenAI error JSON, through a
    BackendTrafficPolicy `responseOverride` (`json_error_overrides`)."""


def envoy_proxy_peers(gateway: str, namespace: pulumi.Input[str]) -> list[dict[str, Any]]:
    """NetworkPolicy peers matching Envoy Gateway's proxy pods for this Gateway (any namespace)."""
    return [{"namespaceSelector": {}, "podSelector": {"matchLabels": {
        "gateway.envoyproxy.io/owning-gateway-name": gateway,
        "gateway.envoyproxy.io/owning-gateway-namespace": namespace,
    }}}]


def manifests(name: str, a: GatewayArgs) -> list[dict]:
    ns = a.get("namespace", "default")
    envoy = a.get("envoy_gateway", True)
    target = [{"group": GATEWAY_GROUP, "kind": "Gateway", "name": name}]
    out = []
    if a.get("create_class"):
        out.append({"apiVersion": GATEWAY_API, "kind": "GatewayClass", "metadata": {"name": a["class_name"]},
                    "spec": {"controllerName": ENVOY_GATEWAY_CONTROLLER}})
    listeners = []
    for listener in a["listeners"]:
        entry = {"name": listener["name"], "port": listener["port"], "protocol": listener.get("protocol", "HTTP"),
                 "allowedRoutes": {"namespaces": {"from": "Same"}}}
        if listener.get("hostname"):
            entry["hostname"] = listener["hostname"]
        listeners.append(entry)
    spec: dict = {"gatewayClassName": a["class_name"], "listeners": listeners}
    if envoy and a.get("service_type"):
        proxy = a.get("name_prefix", "") + "custom-proxy-config"
        spec["infrastructure"] = {"parametersRef": {"group": "gateway.envoyproxy.io", "kind": "EnvoyProxy",
                                                    "name": proxy}}
        out.append({"apiVersion": ENVOY_GATEWAY_API, "kind": "EnvoyProxy",
                    "metadata": {"name": proxy, "namespace": ns},
                    "spec": {"provider": {"type": "Kubernetes", "kubernetes": {
                        "envoyService": {"type": a["service_type"]}}}}})
    meta: dict = {"name": name, "namespace": ns}
    if a.get("await_timeout_seconds"):
        meta["annotations"] = {contract.PULUMI_WAIT_FOR: "condition=Programmed",
                               contract.PULUMI_TIMEOUT_SECONDS: str(a["await_timeout_seconds"])}
    out.append({"apiVersion": GATEWAY_API, "kind": "Gateway", "metadata": meta, "spec": spec})
    strip = envoy and a.get("strip_routing_headers", True)
    if envoy:
        policy: dict = {"targetRefs": target}
        if a.get("buffer_limit"):
            policy["connection"] = {"bufferLimit": a["buffer_limit"]}
        # the request-header size limit (contract.GATEWAY_MAX_HEADERS_KB; Envoy Gateway's
        # maxRequestHeaderLimit, envoyproxy/gateway#9623, Aug 2026). A gateway whose CRD predates
        # it drops the field with a warning and keeps Envoy's 60 KiB: pulumi-kubernetes creates and
        # updates without fieldValidation (the API server's default, Warn) and upserts with Warn
        # (provider/pkg/await/await.go @ 9497796), so `up` does not fail on it.
        policy["headers"] = {"maxRequestHeaderLimit": f"{contract.GATEWAY_MAX_HEADERS_KB}Ki"}
        if strip:
            policy["headers"]["earlyRequestHeaders"] = early_request_headers(a.get("client_headers") or [])
        # The guides' name for the buffer-limit policy; one policy carries both.
        policy_name = "client-buffer-limit" if a.get("buffer_limit") else "client-headers"
        out.append({"apiVersion": ENVOY_GATEWAY_API, "kind": "ClientTrafficPolicy",
                    "metadata": {"name": a.get("name_prefix", "") + policy_name, "namespace": ns}, "spec": policy})
    json_errors = envoy and a.get("json_errors", True)
    if envoy and (a.get("request_timeout") or json_errors):
        # One BackendTrafficPolicy per Gateway: Envoy Gateway accepts only one policy of a kind
        # per target (a second one is Conflicted), so the timeout and the overrides share it.
        backend: dict = {"targetRefs": target}
        if a.get("request_timeout"):
            backend["timeout"] = {"http": {"requestTimeout": a["request_timeout"]}}
        if json_errors:
            backend["responseOverride"] = json_error_overrides()
        # The guides' name for the timeout policy; one policy carries both.
        backend_name = "backend-timeout" if a.get("request_timeout") else "gateway-errors"
        out.append({"apiVersion": ENVOY_GATEWAY_API, "kind": "BackendTrafficPolicy",
                    "metadata": {"name": a.get("name_prefix", "") + backend_name, "namespace": ns}, "spec": backend})
    return out


def json_error_overrides() -> list[dict]:
    """Envoy Gateway `responseOverride` rules: a reply Envoy generated itself (`source: Local`, Envoy
    Gateway docs "Response Override") with one of the gateway's error statuses and a plain-text body
    gets the error JSON of infershift/gateway_errors.py, the local stack's table. The content-type
    match keeps the picker's own answers (ext_proc immediate responses are local replies too, but
    JSON, with their specific messages and Retry-After) unchanged; a model server's answers are
    never touched. Codec errors Envoy answers before any filter runs (e.g. oversized headers on
    HTTP/1) may not be overridable this way; only a real Envoy Gateway shows which replies are
    covered."""
    out = []
    for r in gateway_errors.protocol_replies(contract.GATEWAY_MAX_HEADERS, contract.GATEWAY_MAX_HEADERS_KB):
        if r.status == 403:
            # the local Envoy's 403 is only its refusal of an upgrade; an Envoy Gateway's can be a
            # SecurityPolicy's authorization denial, which must stay a 403 with its own message
            continue
        override: dict = {"contentType": "application/json",
                          "body": {"type": "Inline", "inline": gateway_errors.openai_error(r.message, r.type, r.code)}}
        if r.retry_after:
            override["header"] = {"add": [{"name": "retry-after", "value": gateway_errors.RETRY_AFTER_SECONDS}]}
        out.append({"match": {"statusCodes": [{"type": "Value", "value": r.status}],
                              "responseHeaders": [{"name": "content-type",
                                                   "value": {"type": "Prefix", "value": "text/plain"}}]},
                    "response": override, "source": "Local"})
    return out


_ROLES = {"GatewayClass": "class", "Gateway": "gateway", "EnvoyProxy": "envoyproxy",
          "ClientTrafficPolicy": "client-policy", "BackendTrafficPolicy": "backend-policy"}


class Gateway(pulumi.ComponentResource):
    """A Gateway with its listeners (and its GatewayClass and Envoy Gateway policies). In Python,
    `proxy_peers` are the NetworkPolicy peers selecting its proxies (Envoy Gateway)."""

    gateway_name: pulumi.Output[str]
    """The Gateway object's name (what routes' `gateway` names)."""
    address: pulumi.Output[str | None]
    """The first address the controller reports (`status.addresses[0].value`); none until assigned."""

    def __init__(self, name: str, args: GatewayArgs, opts: pulumi.ResourceOptions | None = None):
        args = component_args(args, GatewayArgs)
        check("Gateway", name, args)  # before anything is declared
        super().__init__("infershift:index:Gateway", name, None, opts)
        keep_options(self, opts)
        ns = args.get("namespace", "default")
        self.gateway_name = pulumi.Output.from_input(name)
        # NetworkPolicy peers (plain data, for Python programs; the schema has no type for them)
        self.proxy_peers = envoy_proxy_peers(name, ns) if args.get("envoy_gateway", True) else []
        self.objects = {}
        for layout, m in build_manifests(args, lambda a: manifests(name, a)):
            role = _ROLES[layout["kind"]]
            self.objects[role] = declare(f"{name}-{role}", m, child_opts(self), with_status=layout["kind"] == "Gateway")
        self.address = self.objects["gateway"].status.apply(_first_address)  # type: ignore[attr-defined]
        self.register_outputs({"gateway_name": name, "address": self.address})


def _first_address(status) -> str | None:
    addresses = (status or {}).get("addresses") or []
    return addresses[0].get("value") if addresses else None
