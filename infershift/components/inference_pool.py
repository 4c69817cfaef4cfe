"""InferencePool: the pool object, its endpoint picker, its model routing and (GKE) backend policies."""
from typing import Any, NotRequired, TypedDict

import pulumi

from . import model_routing
from .api import GKE_NETWORKING_API, pool_api_version, pool_ref
from .checks import check
from .endpoint_picker import GRPC_PORT, EndpointPicker, EndpointPickerArgs, picker_name
from .enums import FailureMode, PoolApiVersion, component_args
from .model_routing import ModelRoutingArgs
from .objects import build_manifests, child_opts, declare, keep_options


class InferencePoolArgs(TypedDict):
    selector: pulumi.Input[dict[str, str]]
    """Pod labels of the model servers the pool spans (e.g. an InferenceService's `labels`)."""
    api_version: NotRequired[PoolApiVersion]
    """`v1` (inference.networking.k8s.io) or `v1alpha2` (inference.networking.x-k8s.io, ACK's add-on)."""
    namespace: NotRequired[pulumi.Input[str]]
    target_ports: NotRequired[list[int]]
    failure_mode: NotRequired[FailureMode]
    models: NotRequired[dict[str, ModelRoutingArgs]]
    """Client model name -> routing (weighted targets, criticality or priority)."""
    served_models: NotRequired[list[str]]
    """What the pool's servers serve (their InferenceServices' `served_models`): given, every
    target (or model without targets) must be one of them. Default: not checked."""
    picker_image: NotRequired[pulumi.Input[str] | None]
    picker_replicas: NotRequired[int]
    picker_cpu: NotRequired[str]
    picker_memory: NotRequired[str]
    picker_config: NotRequired[dict[str, Any]]
    """The picker's config file; default: pool, failure mode and the pool API version only."""
    picker_secure_serving: NotRequired[bool]
    """TLS on the picker's ext_proc port (default true; see EndpointPickerArgs.secure_serving)."""
    picker_cert_secret: NotRequired[str | None]
    """A kubernetes.io/tls Secret for the picker's certificate; default: self-signed."""
    picker_image_pull_secrets: NotRequired[list[str] | None]
    picker_await_timeout_seconds: NotRequired[int | None]
    """How long `pulumi up` waits for the picker to be ready (it is once a model server is); None:
    not at all. Default 2700."""
    gateway_peers: NotRequired[list[dict[str, Any]]]
    """NetworkPolicy peers that may call the picker (the gateway's proxies: NetworkPolicyPeer objects)."""
    picker_service: NotRequired[str | None]
    """A picker the platform runs (ACK's add-on): the pool references this Service and no picker
    objects are declared. None: the pool's own EndpointPicker (`<pool>-epp`)."""
    gke_policies: NotRequired[bool]
    """Also render GKE's HealthCheckPolicy and GCPBackendPolicy for the pool."""
    health_check_path: NotRequired[str]
    backend_timeout_sec: NotRequired[int]


def pool_manifest(name: str, a: InferencePoolArgs) -> dict:
    version = a.get("api_version", "v1")
    ports = a.get("target_ports") or [8000]
    failure_mode = a.get("failure_mode", "FailClose")
    meta = {"name": name, "namespace": a.get("namespace", "default")}
    picker = a.get("picker_service") or picker_name(name)
    if version == "v1alpha2":
        spec = {"selector": dict(a["selector"]), "targetPortNumber": ports[0],  # type: ignore[arg-type]
                "extensionRef": {"group": "", "kind": "Service", "name": picker,
                                 "portNumber": GRPC_PORT, "failureMode": failure_mode}}
    else:
        spec = {"selector": {"matchLabels": dict(a["selector"])},  # type: ignore[arg-type]
                "targetPorts": [{"number": p} for p in ports],
                "endpointPickerRef": {"group": "", "kind": "Service", "name": picker,
                                      "port": {"number": GRPC_PORT}, "failureMode": failure_mode}}
    return {"apiVersion": pool_api_version(version), "kind": "InferencePool", "metadata": meta, "spec": spec}


def gke_policy_manifests(name: str, a: InferencePoolArgs) -> list[dict]:
    """GKE's load balancer health check and backend settings for the pool (networking.gke.io/v1)."""
    ns = a.get("namespace", "default")
    target = pool_ref(a.get("api_version", "v1"), name)
    port = (a.get("target_ports") or [8000])[0]
    return [
        {"apiVersion": GKE_NETWORKING_API, "kind": "HealthCheckPolicy",
         "metadata": {"name": f"{name}-health", "namespace": ns},
         "spec": {"targetRef": target, "default": {"config": {
             "type": "HTTP", "httpHealthCheck": {"requestPath": a.get("health_check_path", "/health"),
                                                 "port": port}}}}},
        {"apiVersion": GKE_NETWORKING_API, "kind": "GCPBackendPolicy",
         "metadata": {"name": f"{name}-backend", "namespace": ns},
         "spec": {"targetRef": target, "default": {"timeoutSec": a.get("backend_timeout_sec", 300),
                                                   "logging": {"enabled": True}}}},
    ]


def default_picker_config(name: str, a: InferencePoolArgs) -> dict:
    return {"pool": {"name": name, "namespace": a.get("namespace", "default")},
            "failureMode": a.get("failure_mode", "FailClose"),
            "kubernetes": {"poolApiVersion": pool_api_version(a.get("api_version", "v1"))}}


def child_manifests(name: str, a: InferencePoolArgs) -> list[dict]:
    """The pool, its model routing objects and (GKE) backend policies: what the pool declares
    besides its EndpointPicker."""
    version = a.get("api_version", "v1")
    return [pool_manifest(name, a),
            *model_routing.manifests(name, version, a.get("namespace", "default"), a.get("models") or {}),  # type: ignore[arg-type]
            *(gke_policy_manifests(name, a) if a.get("gke_policies") else [])]


def _default_config(name: str, a: InferencePoolArgs) -> pulumi.Input[dict[str, Any]]:
    namespace = a.get("namespace")
    if isinstance(namespace, pulumi.Output):  # another resource's namespace: the config follows it
        return namespace.apply(lambda ns: default_picker_config(name, {**a, "namespace": ns}))
    return default_picker_config(name, a)


class InferencePool(pulumi.ComponentResource):
    """`pool_name`, `api_version` and `group` are what an HTTPRoute backendRef needs."""

    pool_name: pulumi.Output[str]
    """The InferencePool object's name (what routes' `backends` name)."""
    api_version: pulumi.Output[str]
    """`v1` or `v1alpha2`."""
    group: pulumi.Output[str]
    """The pool's API group (a backendRef's `group`)."""
    picker_service: pulumi.Output[str]
    """The endpoint picker's Service the pool references (its own `<pool>-epp`, or the platform's)."""

    def __init__(self, name: str, args: InferencePoolArgs, opts: pulumi.ResourceOptions | None = None):
        args = component_args(args, InferencePoolArgs)
        check("InferencePool", name, args)  # before anything is declared
        super().__init__("infershift:index:InferencePool", name, None, opts)
        keep_options(self, opts)
        version = args.get("api_version", "v1")
        ns = args.get("namespace", "default")
        self.pool_name = pulumi.Output.from_input(name)
        self.api_version = pulumi.Output.from_input(version)
        self.group = pulumi.Output.from_input(pool_ref(version, name)["group"])
        self.picker_service = pulumi.Output.from_input(args.get("picker_service") or picker_name(name))
        self.picker: EndpointPicker | None = None
        if not args.get("picker_service"):
            picker_args: EndpointPickerArgs = {
                "pool_name": name, "pool_api_version": PoolApiVersion(version), "namespace": ns,
                "config": args.get("picker_config") or _default_config(name, args),
                "gateway_peers": args.get("gateway_peers", []),
            }
            for key, arg in (("picker_image", "image"), ("picker_replicas", "replicas"), ("picker_cpu", "cpu"),
                             ("picker_memory", "memory"), ("picker_secure_serving", "secure_serving"),
                             ("picker_cert_secret", "cert_secret"),
                             ("picker_image_pull_secrets", "image_pull_secrets")):
                value = dict(args).get(key)
                if value is not None:
                    picker_args[arg] = value  # type: ignore[literal-required]
            if "picker_await_timeout_seconds" in args:  # None: not awaited
                picker_args["await_timeout_seconds"] = args["picker_await_timeout_seconds"]
            self.picker = EndpointPicker(f"{name}-picker", picker_args, child_opts(self))
        (_, pool), *others = build_manifests(args, lambda a: child_manifests(name, a), ("namespace", "selector"))
        self.pool = declare(f"{name}-pool", pool, child_opts(self))
        self.routing = {}
        for layout, m in others:
            if layout["apiVersion"] == GKE_NETWORKING_API:
                declare(f"{name}-{layout['kind'].lower()}", m, child_opts(self, [self.pool]))
                continue
            role = f"{layout['kind'].lower()}-{layout['metadata']['name'].removeprefix(name + '-')}"
            self.routing[role] = declare(f"{name}-{role}", m, child_opts(self, [self.pool]))
        self.register_outputs({"pool_name": name, "api_version": version})
