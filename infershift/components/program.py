"""The Pulumi program: the stack's `infershift:` config -> validated StackSpec -> components.

`__main__.py` calls `main()`; `components.render` runs the same `main()` under mocks.
"""
from __future__ import annotations

import json

import pulumi

from infershift import contract
from infershift import spec as stackspec
from infershift.spec.base import duration_seconds
from infershift.spec.checks import recorded_services
from infershift.spec.config_path import weight_paths
from infershift.spec.model import StackSpec
from infershift.spec.prefix import with_prefix

from . import models_listing
from .cluster import Cluster, ClusterArgs
from .enums import Criticality, FailureMode, MirrorKind, PoolApiVersion, ServiceType
from .gateway import Gateway, GatewayArgs
from .images import Images, ImagesArgs
from .inference_pool import InferencePool, InferencePoolArgs
from .inference_service import InferenceService, InferenceServiceArgs
from .node_pool import NODE_POOL_LABEL, GpuNodePool, GpuNodePoolArgs
from .objects import declare, declare_patch
from .routes import CanaryRoute, CanaryRouteArgs, MirrorRoute, MirrorRouteArgs, MirrorTargetArgs, RouteMirrorArgs
from .secrets import Secrets
from .shadow_recorder import ShadowRecorder, ShadowRecorderArgs

NAMESPACE = "infershift"


def secret_config_keys(values: dict) -> set[str]:
    """The `infershift:` keys the engine marks secret (set with `pulumi config set --secret`)."""
    from pulumi.runtime.config import is_config_secret

    return {k for k in values if is_config_secret(f"{NAMESPACE}:{k}")}


def config_values() -> dict:
    """Every `infershift:` key the engine passed, parsed as the engine encodes structured config."""
    from pulumi.runtime.config import CONFIG, get_config_env

    keys = {k for k in {**get_config_env(), **CONFIG.get()} if k.startswith(f"{NAMESPACE}:")}
    cfg = pulumi.Config(NAMESPACE)
    values = {}
    for full in sorted(keys):
        key = full.split(":", 1)[1]
        raw = cfg.get(key)
        try:
            values[key] = json.loads(raw) if raw is not None else None
        except json.JSONDecodeError:
            values[key] = raw  # a plain string; validation names the key if that is wrong
    return values


def _cluster_args(spec: StackSpec) -> ClusterArgs:
    return spec.platform_plugin.cluster_args(spec.platform)  # type: ignore[return-value]


def node_pool_args(spec: StackSpec, name: str) -> GpuNodePoolArgs:
    np = spec.node_pools[name]
    p = spec.platform
    args: GpuNodePoolArgs = {
        "platform": p.kind, "cluster": "", "gpu_type": np.gpu_type, "gpus_per_node": np.gpus_per_node,
        "min_nodes": np.min_nodes, "max_nodes": np.max_nodes, "desired_nodes": np.desired_nodes,
        "labels": dict(np.labels), "taint": np.taint,
    }
    args.update(spec.platform_plugin.node_pool_args(p, np.block(p.kind)))  # type: ignore[typeddict-item]
    return args


def needed_images(spec: StackSpec) -> list[str]:
    """The images `images` must build: the picker unless every self-hosted pool names one, the
    simulator unless every simulated service does."""
    out = []
    ml = spec.gateway.models_listing
    if any(p.picker.mode == "self-hosted" and not p.picker.image for p in spec.pools.values()) or (
            # the /v1/models listing runs from the picker's image too
            ml.enabled and not ml.image
            and not any(p.picker.mode == "self-hosted" and p.picker.image for p in spec.pools.values())):
        out.append("picker")
    if "picker" not in out and recorded_services(spec) and _own_picker_image(spec) is None:
        out.insert(0, "picker")  # the shadow recorders run from the picker's image
    if any(s.simulated and not s.sim_image for s in spec.services.values()):
        out.append("sim")
    return out


def _own_picker_image(spec: StackSpec) -> str | None:
    return next((p.picker.image for p in spec.pools.values() if p.picker.mode == "self-hosted" and p.picker.image),
                None)


def _mirror_target(spec: StackSpec, kind: str, name: str, port: int | None, record: bool) -> MirrorTargetArgs:
    """A RequestMirror's target; a recorded Service's copies go to its recorder instead."""
    if kind == "Service" and record:
        return {"name": f"{name}-recorder", "kind": MirrorKind.SERVICE, "port": contract.RECORDER_PORT}
    if kind == "Service" and port is None:
        port = spec.services[name].port
    return {"name": name, "kind": MirrorKind(kind), "port": port}


def recorder_args(spec: StackSpec, service: str, image: pulumi.Input[str]) -> ShadowRecorderArgs:
    args: ShadowRecorderArgs = {"service": service, "service_port": spec.services[service].port, "image": image,
                                "namespace": spec.platform.namespace}
    pull = sorted({s for p in spec.pools.values() if p.picker.mode == "self-hosted" for s in p.picker.image_pull_secrets})
    if pull:
        args["image_pull_secrets"] = pull
    return args


def images_args(spec: StackSpec) -> ImagesArgs | None:
    if spec.images is None or not needed_images(spec):
        return None
    args: ImagesArgs = {"registry": spec.images.registry, "images": needed_images(spec), "tag": spec.images.tag,
                        "platforms": list(spec.images.platforms)}
    if spec.images.credential:
        cred = spec.registry_credentials[spec.images.credential]
        args["login"] = {"address": cred.server, "username": cred.username,
                         "password": pulumi.Output.secret(cred.password)}
    return args


def service_args(spec: StackSpec, name: str, built: dict | None = None) -> InferenceServiceArgs:
    built = built or {}
    s = spec.services[name]
    args: InferenceServiceArgs = {
        "model": s.model, "namespace": spec.platform.namespace, "served_model_name": s.served_model_name,
        "image": s.image, "replicas": s.replicas, "port": s.port, "labels": s.pod_labels(name),
        "gpus": s.gpus, "tensor_parallel_size": s.tensor_parallel_size,
        "gpu_memory_utilization": s.gpu_memory_utilization, "max_model_len": s.max_model_len,
        "max_num_seqs": s.max_num_seqs, "enforce_eager": s.enforce_eager, "trust_remote_code": s.trust_remote_code,
        "chat_template": s.chat_template, "shm_size": s.shm_size, "env": dict(s.env),
        "extra_args": list(s.extra_args), "simulated": s.simulated, "sim_image": s.sim_image or built.get("sim"),
        "sim_profile": s.sim_profile,
        "probe_period_seconds": int(duration_seconds(s.probes.period)),
        "startup_timeout_seconds": int(duration_seconds(s.probes.startup_timeout)),
        "readiness_timeout_seconds": int(duration_seconds(s.probes.readiness_timeout)),
        "liveness_timeout_seconds": int(duration_seconds(s.probes.liveness_timeout)),
        "await_timeout_seconds": int(duration_seconds(s.await_.timeout)),
        "skip_await": s.await_.skip,
        "secret_env": {k: {"secret": r.secret, "key": r.key} for k, r in s.secret_env.items()},
        "image_pull_secrets": list(s.image_pull_secrets),
    }
    if s.lora:
        args["lora_modules"] = dict(s.lora.modules)
        args["max_loras"] = s.lora.max_loras
        args["max_cpu_loras"] = s.lora.max_cpu_loras
        args["max_lora_rank"] = s.lora.max_lora_rank
    if s.model_volume and s.model_volume.pvc:
        args["model_pvc"] = s.model_volume.pvc
        args["model_mount_path"] = s.model_volume.mount_path
        args["model_read_only"] = s.model_volume.read_only
    if s.resources:
        if s.resources.cpu is not None:
            args["cpu"] = s.resources.cpu
        if s.resources.memory is not None:
            args["memory"] = s.resources.memory
    if s.node_pool:
        # Nodes of a pool this stack creates carry our label; existing nodes are selected by theirs.
        labels = spec.node_pools[s.node_pool].labels
        use_own = spec.platform.create_node_pools or not labels
        args["node_selector"] = {NODE_POOL_LABEL: s.node_pool} if use_own else dict(labels)
        args["tolerate_gpu_taint"] = spec.node_pools[s.node_pool].taint
    return args


def gateway_peers(spec: StackSpec) -> list[dict]:
    from .gateway import envoy_proxy_peers

    if spec.uses_envoy_gateway():
        return envoy_proxy_peers(spec.gateway.name, spec.platform.namespace)
    # GKE's managed proxies call the picker from the region's proxy-only subnet.
    cidrs = spec.gateway.proxy_subnets or ["0.0.0.0/0"]
    return [{"ipBlock": {"cidr": c}} for c in cidrs]


def pool_args(spec: StackSpec, name: str, built: dict | None = None) -> InferencePoolArgs:
    built = built or {}
    pool = spec.pools[name]
    return {
        "selector": dict(pool.selector), "api_version": PoolApiVersion(pool.api_version),
        "namespace": spec.platform.namespace,
        "target_ports": list(pool.target_ports), "failure_mode": FailureMode(pool.failure_mode),
        "models": {m: {"targets": dict(r.targets), "criticality": Criticality(r.criticality) if r.criticality else None,
                       "priority": r.priority}
                   for m, r in pool.models.items()},
        "picker_image": pool.picker.image or built.get("picker"), "picker_replicas": pool.picker.replicas,
        "picker_cpu": pool.picker.resources.cpu or "500m", "picker_memory": pool.picker.resources.memory or "512Mi",
        "picker_config": stackspec.picker_config(spec, name),
        "gateway_peers": gateway_peers(spec),
        "gke_policies": spec.platform_plugin.pool_policies,
        "picker_service": pool.picker.service if pool.picker.mode == "managed" else None,
        "picker_secure_serving": pool.picker.tls.enabled, "picker_cert_secret": pool.picker.tls.secret_name,
        "picker_image_pull_secrets": list(pool.picker.image_pull_secrets) or None,
        "picker_await_timeout_seconds": _picker_await(spec, name),
    }


def _picker_await(spec: StackSpec, pool: str) -> int | None:
    """The picker is ready once one of the pool's model servers is: `pulumi up` waits for it as
    long as for them (None: they are not awaited, neither is it)."""
    waits = [None if s.await_.skip else int(duration_seconds(s.await_.timeout))
             for s in spec.pool_services(pool).values()]
    if waits and all(w is None for w in waits):
        return None
    return max((w for w in waits if w is not None), default=2700)


def gateway_args(spec: StackSpec) -> GatewayArgs:
    g = spec.gateway
    return {
        "class_name": spec.class_name(), "namespace": spec.platform.namespace,
        "listeners": [{"name": li.name, "port": li.port, "protocol": li.protocol, "hostname": li.hostname}
                      for li in g.listeners],
        "create_class": spec.creates_class(), "envoy_gateway": spec.uses_envoy_gateway(),
        "buffer_limit": g.buffer_limit, "request_timeout": g.request_timeout, "service_type": ServiceType(g.service_type) if g.service_type else None,
        "json_errors": g.json_errors,
        "await_timeout_seconds": _status_await(spec),
        "name_prefix": spec.platform.name_prefix or "",
        "client_headers": sorted({pin.header for r in spec.routes.values() for pin in r.pins}
                                 | allowed_client_headers(spec)),
    }


_CLIENT_HEADER_NAMES = {"objective": contract.OBJECTIVE_HEADERS, "fairness-id": contract.FAIRNESS_HEADERS}


def route_client_headers(route) -> list[str]:
    return [h for choice in route.client_headers for h in _CLIENT_HEADER_NAMES[choice]]


def allowed_client_headers(spec: StackSpec) -> set[str]:
    """What any route lets clients send: the Gateway keeps these; routes not allowing them remove them."""
    return {h for r in [*spec.routes.values(), *spec.mirrors.values()] for h in route_client_headers(r)}


def _route_headers(spec: StackSpec, route) -> dict:
    own = route_client_headers(route)
    return {"client_headers": own, "remove_headers": sorted(allowed_client_headers(spec) - set(own))}


def _status_await(spec: StackSpec) -> int | None:
    """Seconds `pulumi up` waits for the Gateway's and routes' status conditions (None: not at all)."""
    return int(duration_seconds(spec.gateway.await_timeout)) if spec.gateway.await_status else None


def route_args(spec: StackSpec, name: str) -> CanaryRouteArgs:
    r = spec.routes[name]
    args: CanaryRouteArgs = {
        "gateway": spec.gateway.name, "namespace": spec.platform.namespace, "listener": r.listener,
        "hostnames": list(r.hostnames), "paths": list(r.paths), "backends": dict(r.backends),
        "pool_versions": {p: spec.pools[p].api_version for p in r.backends},
        "pins": [{"header": p.header, "value": p.value, "backend": p.backend} for p in r.pins],
        "await_timeout_seconds": _status_await(spec), **_route_headers(spec, r),
    }
    if r.mirror is not None:
        m = r.mirror
        mirror: RouteMirrorArgs = {**_mirror_target(spec, m.kind, m.name, m.port, m.record), "percent": m.percent}
        if m.kind == "InferencePool":
            mirror["pool_api_version"] = PoolApiVersion(spec.pools[m.name].api_version)
        args["mirror"] = mirror
    return args


def mirror_args(spec: StackSpec, name: str) -> MirrorRouteArgs:
    m = spec.mirrors[name]
    target = m.mirror_to
    args: MirrorRouteArgs = {
        "gateway": spec.gateway.name, "namespace": spec.platform.namespace, "listener": m.listener,
        "hostnames": list(m.hostnames), "paths": list(m.paths), "backend": m.backend,
        "mirror_to": _mirror_target(spec, target.kind, target.name, target.port, target.record), "percent": m.percent,
        "pool_api_version": PoolApiVersion(spec.pools[m.backend].api_version),
        "await_timeout_seconds": _status_await(spec), **_route_headers(spec, m),
    }
    if target.kind == "InferencePool":
        args["mirror_pool_api_version"] = PoolApiVersion(spec.pools[target.name].api_version)
    return args


def _namespace(spec: StackSpec, cluster: Cluster) -> pulumi.Resource | None:
    """The namespace, created (default, unless it is `default`) or read to assert it exists."""
    ns = spec.platform.namespace
    create = spec.platform.create_namespace
    if create is None:
        create = ns != "default"
    opts = pulumi.ResourceOptions(parent=cluster, provider=cluster.k8s_provider)
    if create:
        return declare("cluster-namespace", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}, opts)
    if ns == "default":
        return None
    import pulumi_kubernetes as k8s

    return k8s.core.v1.Namespace.get("cluster-namespace", ns, opts=opts)


def _keep(protect: bool, retain: bool, depends_on: list | None = None) -> pulumi.ResourceOptions:
    return pulumi.ResourceOptions(protect=protect or None, retain_on_delete=retain or None, depends_on=depends_on)


def build(spec: StackSpec, config: StackSpec | None = None) -> dict:
    """Declare every resource of the stack; return what the stack exports. `spec` carries the
    object names (namePrefix applied); `config` is the spec as the user wrote it (config paths)."""
    config = config or spec
    cluster = Cluster("cluster", _cluster_args(spec))
    k8s_opts = pulumi.ResourceOptions(providers=[cluster.k8s_provider])
    for patch in spec.platform_plugin.cluster_objects(spec):
        # The platform's own objects, patched: children of the cluster they belong to.
        meta = patch["metadata"]
        declare_patch(f"cluster-{meta['namespace']}-{meta['name']}-patch", patch,
                      pulumi.ResourceOptions(parent=cluster, provider=cluster.k8s_provider))
    namespace = _namespace(spec, cluster)
    if namespace is not None:
        k8s_opts = pulumi.ResourceOptions.merge(k8s_opts, pulumi.ResourceOptions(depends_on=[namespace]))
    node_pools = {}
    if spec.platform.create_node_pools:
        assert cluster.cloud_provider is not None  # the spec allows createNodePools only where there is one
        cloud = pulumi.ResourceOptions(providers=[cluster.cloud_provider])
        node_pools = {n: GpuNodePool(n, node_pool_args(spec, n), cloud) for n in spec.node_pools}
    if spec.secrets or spec.registry_credentials:
        Secrets("secrets", {
            "namespace": spec.platform.namespace,
            "secrets": {n: dict(keys) for n, keys in spec.secrets.items()},
            "registry_credentials": {n: {"server": c.server, "username": c.username, "password": c.password}
                                     for n, c in spec.registry_credentials.items()},
        }, k8s_opts)
    image_args = images_args(spec)
    built = Images("images", image_args).refs if image_args else {}
    services = {}
    for n, s in spec.services.items():
        deps = [node_pools[s.node_pool]] if s.node_pool in node_pools else None
        services[n] = InferenceService(n, service_args(spec, n, built), pulumi.ResourceOptions.merge(
            k8s_opts, _keep(s.protect, s.retain_on_delete, deps)))
    pools = {n: InferencePool(n, pool_args(spec, n, built), pulumi.ResourceOptions.merge(
        k8s_opts, _keep(p.protect, p.retain_on_delete))) for n, p in spec.pools.items()}
    gateway = Gateway(spec.gateway.name, gateway_args(spec), k8s_opts)
    routes = {n: CanaryRoute(n, route_args(spec, n), k8s_opts) for n in spec.routes}
    mirrors = {n: MirrorRoute(n, mirror_args(spec, n), k8s_opts) for n in spec.mirrors}
    recorder_image = built.get("picker") or _own_picker_image(spec)
    for svc in recorded_services(spec):
        assert recorder_image is not None, "checks: a recorded mirror needs the picker's image"
        ShadowRecorder(f"{svc}-recorder", recorder_args(spec, svc, recorder_image), k8s_opts)
    listing_args = models_listing.stack_args(spec, models_listing.stack_image(spec, built), _status_await(spec))
    if listing_args is not None:
        pull = sorted({s for p in spec.pools.values() if p.picker.mode == "self-hosted"
                       for s in p.picker.image_pull_secrets})
        if pull:
            listing_args["image_pull_secrets"] = pull
        models_listing.ModelsListing(f"{spec.gateway.name}-models", listing_args, k8s_opts)
    return {
        "gateway": gateway.gateway_name,
        "gatewayAddress": gateway.address,
        "gatewayClass": spec.class_name(),
        "routeWeights": {n: dict(r.backends) for n, r in config.routes.items()},
        "pickerModes": {n: p.picker.mode for n, p in config.pools.items()},
        "pools": sorted(pools),
        "services": sorted(services),
        "routes": sorted([*routes, *mirrors]),
        "nodePools": sorted(node_pools),
        "weightPaths": weight_paths(config),
    }


def main(values: dict | None = None) -> dict:
    """Validate the stack config and declare the stack; config errors stop before any resource."""
    values = config_values() if values is None else values
    try:
        spec = stackspec.validate(values, f"stack {pulumi.get_stack()}", secret_config_keys(values))
    except stackspec.StackConfigError as err:
        raise pulumi.RunError(str(err)) from None
    for warning in stackspec.warnings(spec):
        pulumi.log.warn(str(warning))
    exports = build(with_prefix(spec), config=spec)
    for key, value in exports.items():
        pulumi.export(key, value)
    return exports
