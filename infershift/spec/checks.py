"""Rules that relate two parts of a stack. Each problem names its config path."""
from __future__ import annotations

import re

from infershift.platforms import REGISTRY

from .base import Problem
from .model import StackSpec


def _list(names) -> str:
    return ", ".join(sorted(names)) or "none"


def problems(spec: StackSpec) -> list[Problem]:
    out: list[Problem] = []
    out += _node_pools(spec)
    out += _services(spec)
    out += _pools(spec)
    out += _pickers(spec)
    out += spec.platform_plugin.stack_problems(spec)
    out += _object_names(spec)
    out += _routes(spec)
    out += _mirrors(spec)
    out += _rollouts(spec)
    out += _images(spec)
    both = sorted(set(spec.secrets) & set(spec.registry_credentials))
    for name in both:
        out.append(Problem(f"registryCredentials.{name}", f"a secret named {name!r} is also declared under secrets"))
    return out


def warnings(spec: StackSpec) -> list[Problem]:
    """Legal but likely surprising: a model one route backend serves and another does not;
    GKE pickers open to any address because the proxy-only subnet is not given."""
    out: list[Problem] = list(spec.platform_plugin.warnings(spec))
    for rname, route in spec.routes.items():
        live = [p for p, w in route.backends.items() if w > 0 and p in spec.pools]
        if len(live) < 2:
            continue
        routed = {p: set(spec.pools[p].models) | spec.pool_serves(p) for p in live}
        for pool in live:
            for model in sorted(set(spec.pools[pool].models) - set().union(*(routed[o] for o in live if o != pool))):
                others = [o for o in live if model not in routed[o]]
                out.append(Problem(
                    f"routes.{rname}.backends",
                    f"model {model!r} is routed only by pool {pool!r}; requests for it that the weights send to "
                    f"{_list(others)} will get 404 model_not_found",
                ))
    return out


def _node_pools(spec: StackSpec) -> list[Problem]:
    out = []
    kind = spec.platform.kind
    plugin = spec.platform_plugin
    for name, np in spec.node_pools.items():
        path = f"nodePools.{name}"
        for other in sorted(REGISTRY):
            if other != kind and np.block(other) is not None:
                out.append(Problem(f"{path}.{other}", f"platform kind is {kind!r}, not {other!r}"))
        if plugin.node_pool_block is not None:
            out += plugin.node_pool_problems(path, np, np.block(kind), spec)
    return out


# Config keys whose values may be secret: everything else would reach manifests in plaintext.
SECRET_KEYS = ("secrets", "registryCredentials")


def secret_key_problems(secret_keys: set[str]) -> list[Problem]:
    """`pulumi config set --secret` on another key: its value would land in a manifest as plaintext."""
    return [Problem(key, (
        "is stored as a secret (pulumi config set --secret), but its values go into Kubernetes objects as "
        "plaintext: put the secret values under `secrets.<name>.<key>` (or `registryCredentials`) and reference "
        "them (`secretEnv`, `imagePullSecrets`)")) for key in sorted(set(secret_keys) - set(SECRET_KEYS))]


def _secret_refs(spec: StackSpec, path: str, env: dict, pulls: list[str]) -> list[Problem]:
    out = []
    for var, ref in env.items():
        keys = spec.secrets.get(ref.secret)
        if keys is not None and ref.key not in keys:
            out.append(Problem(f"{path}.secretEnv.{var}.key",
                               f"secret {ref.secret!r} has no key {ref.key!r} (keys: {_list(keys)})"))
    for i, name in enumerate(pulls):
        if name in spec.secrets:
            out.append(Problem(f"{path}.imagePullSecrets[{i}]", (
                f"{name!r} is an Opaque secret; image pull secrets are `registryCredentials` "
                "(or an existing kubernetes.io/dockerconfigjson Secret)")))
    return out


def _services(spec: StackSpec) -> list[Problem]:
    out = []
    for name, svc in spec.services.items():
        path = f"services.{name}"
        out += _secret_refs(spec, path, svc.secret_env, svc.image_pull_secrets)
        clash = sorted(set(svc.env) & set(svc.secret_env))
        if clash:
            out.append(Problem(f"{path}.secretEnv", f"{', '.join(clash)} also set in env"))
        served = svc.served_model_name or svc.model
        for adapter in (svc.lora.modules if svc.lora else {}):
            if adapter == served:
                out.append(Problem(f"{path}.lora.modules.{adapter}", (
                    f"the adapter has the served model's name {served!r}: vLLM answers that name with the base "
                    "model, so the adapter can never be reached; rename it")))
        if svc.node_pool is not None:
            np = spec.node_pools.get(svc.node_pool)
            if np is None:
                out.append(Problem(f"{path}.nodePool", f"no node pool named {svc.node_pool!r} (nodePools: {_list(spec.node_pools)})"))
            else:
                if svc.tensor_parallel_size > np.gpus_per_node:
                    out.append(Problem(
                        f"{path}.tensorParallelSize",
                        f"tensor parallel size {svc.tensor_parallel_size} is larger than the {np.gpus_per_node} GPU(s) "
                        f"per node of node pool {svc.node_pool!r}",
                    ))
                if svc.gpus > np.gpus_per_node:
                    out.append(Problem(
                        f"{path}.gpus",
                        f"{svc.gpus} GPUs per replica do not fit on node pool {svc.node_pool!r} "
                        f"({np.gpus_per_node} per node)",
                    ))
        if svc.endpoints and not spec.platform_plugin.local_endpoints:
            out.append(Problem(f"{path}.endpoints", "endpoints (external servers) are for the local stack; use a kubeconfig platform"))
    return out


def _pools(spec: StackSpec) -> list[Problem]:
    out = []
    served_versions = spec.platform_plugin.pool_api_versions
    for name, pool in spec.pools.items():
        path = f"pools.{name}"
        if pool.api_version not in served_versions:
            out.append(Problem(
                f"{path}.apiVersion",
                f"{spec.platform.kind} cannot serve InferencePool {pool.api_version} (it serves {_list(served_versions)})",
            ))
        services = spec.pool_services(name)
        if not services:
            out.append(Problem(
                f"{path}.selector",
                f"selector {pool.selector} matches no service (labels: "
                + "; ".join(f"{s}={svc.pod_labels(s)}" for s, svc in spec.services.items()) + ")",
            ))
            continue
        for sname, svc in services.items():
            if svc.port not in pool.target_ports:
                out.append(Problem(
                    f"{path}.targetPorts",
                    f"service {sname!r} listens on {svc.port}, which is not among the pool's target ports {pool.target_ports}",
                ))
        adapters: dict[str, tuple[str, str]] = {}
        for sname, svc in services.items():
            for adapter, where in (svc.lora.modules if svc.lora else {}).items():
                first = adapters.setdefault(adapter, (sname, where))
                if first[1] != where:
                    out.append(Problem(f"services.{sname}.lora.modules.{adapter}", (
                        f"is {where!r} here but {first[1]!r} in services.{first[0]}; both serve pool {name!r}, so "
                        f"requests for {adapter!r} would get a different adapter depending on the replica")))
        served = spec.pool_serves(name)
        for model, routing in pool.models.items():
            live = [t for t, w in routing.targets.items() if w > 0]
            if pool.api_version == "v1alpha2" and len(live) > 10:
                out.append(Problem(
                    f"{path}.models.{model}.targets",
                    f"{len(live)} target models; an InferenceModel (v1alpha2) holds at most 10 (use apiVersion v1)",
                ))
            for target in routing.targets:
                if target not in served:
                    out.append(Problem(
                        f"{path}.models.{model}.targets.{target}",
                        f"target model {target!r} is not served by any server of pool {name!r} (served: {_list(served)})",
                    ))
            if not routing.targets and model not in served:
                out.append(Problem(
                    f"{path}.models.{model}",
                    f"model {model!r} has no targets and no server of pool {name!r} serves it (served: {_list(served)})",
                ))
    return out


_PICKER_PATH = re.compile(r"^([A-Za-z][\w.\[\]-]*): (.*)$", re.DOTALL)
_PLUGIN_PATH = re.compile(r"^scheduling plugin (\S+?)(\.parameters\S*): (.*)$", re.DOTALL)


def _pickers(spec: StackSpec) -> list[Problem]:
    """Each pool's picker config, parsed and built by the picker's own code: the file the
    cluster's picker will read (a misspelt plugin or parameter fails here, with its path)."""
    from infershift.picker.config import parse_config
    from infershift.picker.errors import ConfigError
    from infershift.picker.scheduling import check_scheduling

    from .picker_file import picker_config

    out = []
    for name, pool in spec.pools.items():
        path = f"pools.{name}.picker"
        out += _secret_refs(spec, path, {}, pool.picker.image_pull_secrets)
        if pool.picker.mode == "managed" and not spec.platform_plugin.managed_picker:
            out.append(Problem(f"{path}.mode", (
                f"platform {spec.platform.kind!r} runs no picker for a pool; managed pickers are "
                f"{', '.join(k for k, p in REGISTRY.items() if p.managed_picker) or 'nowhere'}'s (use self-hosted)")))
        try:
            if pool.picker.scheduling is not None:
                check_scheduling(pool.picker.scheduling)
            parse_config(picker_config(spec, name))
        except ConfigError as err:
            text = str(err)
            plugin = _PLUGIN_PATH.match(text)
            if plugin:
                names = [p.get("name", p.get("type")) if isinstance(p, dict) else None
                         for p in (pool.picker.scheduling or {}).get("plugins") or []]
                where = f"[{names.index(plugin.group(1))}]" if plugin.group(1) in names else f" {plugin.group(1)}"
                out.append(Problem(f"{path}.scheduling.plugins{where}{plugin.group(2)}", plugin.group(3)))
                continue
            m = _PICKER_PATH.match(text)
            if m and m.group(1).startswith("scheduling"):
                out.append(Problem(f"{path}.{m.group(1)}", m.group(2)))
            else:  # the rest of the file comes from fields checked above; say what the picker said
                out.append(Problem(path, f"the picker would reject its config: {text}"))
    return out


PICKER_KINDS = ("Deployment", "Service", "ConfigMap", "ServiceAccount", "Role", "RoleBinding", "NetworkPolicy")


def recorded_services(spec: StackSpec) -> dict[str, str]:
    """Services mirrors send their copies to through a recorder (`mirrorTo.record`), each with the
    config path of the first mirror that asks: one recorder per Service, shared."""
    out: dict[str, str] = {}
    for name, m in spec.mirrors.items():
        if m.mirror_to.kind == "Service" and m.mirror_to.record:
            out.setdefault(m.mirror_to.name, f"mirrors.{name}.mirrorTo.record")
    for name, r in spec.routes.items():
        # kept at percent 0 too: a mirror switched on again finds its recorder ready
        if r.mirror is not None and r.mirror.kind == "Service" and r.mirror.record:
            out.setdefault(r.mirror.name, f"routes.{name}.mirror.record")
    return out


def object_names(spec: StackSpec) -> list[tuple[str, str, str]]:
    """(kind, name, config path) of the namespaced objects the stack declares, with its prefix."""
    p = spec.platform.name_prefix or ""
    out = []
    for name, svc in spec.services.items():
        path = f"services.{name}"
        out += [("Deployment", p + name, path), ("Service", p + name, path),
                ("PodDisruptionBudget", p + name, path)]
        if svc.chat_template:
            out.append(("ConfigMap", f"{p}{name}-chat-template", f"{path}.chatTemplate"))
    for name, pool in spec.pools.items():
        out.append(("InferencePool", p + name, f"pools.{name}"))
        if pool.picker.mode == "self-hosted":
            out += [(kind, f"{p}{name}-epp", f"pools.{name}.picker") for kind in (*PICKER_KINDS, "PodDisruptionBudget")]
    out += [("HTTPRoute", p + name, f"routes.{name}") for name in spec.routes]
    out += [("HTTPRoute", p + name, f"mirrors.{name}") for name in spec.mirrors]
    out += [("Secret", p + name, f"secrets.{name}") for name in spec.secrets]
    out += [("Secret", p + name, f"registryCredentials.{name}") for name in spec.registry_credentials]
    out.append(("Gateway", p + spec.gateway.name, "gateway.name"))
    for recorded, where in recorded_services(spec).items():  # components/shadow_recorder.py
        out += [(kind, f"{p}{recorded}-recorder", where) for kind in ("Deployment", "Service")]
    if spec.gateway.models_listing.enabled:  # components/models_listing.py
        listing = f"{p}{spec.gateway.name}-models"
        out += [(kind, listing, "gateway.modelsListing") for kind in ("ConfigMap", "Deployment", "Service")]
    return out


def _object_names(spec: StackSpec) -> list[Problem]:
    """Two parts of the stack that would declare one object, and names Kubernetes refuses."""
    out: list[Problem] = []
    seen: dict[tuple[str, str], str] = {}
    for kind, name, path in object_names(spec):
        other = seen.setdefault((kind, name), path)
        if other != path:
            out.append(Problem(path, f"declares {kind} {name!r}, as {other} does: rename one of them"))
        if len(name) > 63:
            out.append(Problem(path, f"{kind} name {name!r} is longer than 63 characters"))
        elif kind == "Service" and not name[0].isalpha():
            out.append(Problem(path, f"Service name {name!r} must start with a letter (RFC 1035 label)"))
    return out


BUILD_HINT = "set `images.registry` (pulumi up builds and pushes it) or name an image you pushed"


def _images(spec: StackSpec) -> list[Problem]:
    """Every image a Deployment runs exists: built by the stack, or named."""
    out = []
    if spec.images is None:
        for name, pool in spec.pools.items():
            if pool.picker.mode == "self-hosted" and not pool.picker.image:
                out.append(Problem(f"pools.{name}.picker.image", (
                    f"no picker image: {BUILD_HINT} (docker build -f infershift/picker/Dockerfile .)")))
        ml = spec.gateway.models_listing
        if ml.enabled and not ml.image and not any(
                p.picker.mode == "self-hosted" and p.picker.image for p in spec.pools.values()):
            out.append(Problem("gateway.modelsListing.image", (
                f"no image to serve GET /v1/models with (infershift's picker image): {BUILD_HINT}, "
                "or set gateway.modelsListing.enabled: false")))
        for name, svc in spec.services.items():
            if svc.simulated and not svc.sim_image:
                out.append(Problem(f"services.{name}.simImage", (
                    f"no simulator image: {BUILD_HINT} (docker build -f infershift/sim/Dockerfile .)")))
    elif spec.images.credential and spec.images.credential not in spec.registry_credentials:
        out.append(Problem("images.credential", (
            f"no registryCredentials entry named {spec.images.credential!r} "
            f"(registryCredentials: {_list(spec.registry_credentials)})")))
    return out


def _listener(spec: StackSpec, path: str, listener: str | None) -> list[Problem]:
    names = [li.name for li in spec.gateway.listeners]
    if listener is not None and listener not in names:
        return [Problem(f"{path}.listener", f"no gateway listener named {listener!r} (listeners: {_list(names)})")]
    return []


def _overlap(a: list[str], b: list[str]) -> bool:
    return not a or not b or bool(set(a) & set(b))


def _route_conflicts(spec: StackSpec) -> list[Problem]:
    """Two routes matching the same listener, hostname and path with nothing else to tell them
    apart: Gateway API gives the request to the older route and the other silently serves nothing."""
    entries = [(f"routes.{n}", r) for n, r in spec.routes.items()] + [(f"mirrors.{n}", m) for n, m in spec.mirrors.items()]
    out = []
    for i, (path_a, a) in enumerate(entries):
        for path_b, b in entries[:i]:
            if a.listener is not None and b.listener is not None and a.listener != b.listener:
                continue
            if not _overlap(a.hostnames, b.hostnames):
                continue
            same = sorted(set(a.paths) & set(b.paths))
            if same:
                out.append(Problem(f"{path_a}.paths", (
                    f"{path_b} matches the same path(s) {same} on the same listener and hostnames: only the older "
                    "route would get these requests (Gateway API precedence), the other none; give them different "
                    "paths, hostnames or listeners")))
    return out


def _routes(spec: StackSpec) -> list[Problem]:
    out = _route_conflicts(spec)
    for name, route in spec.routes.items():
        path = f"routes.{name}"
        out += _listener(spec, path, route.listener)
        for pool in route.backends:
            if pool not in spec.pools:
                out.append(Problem(f"{path}.backends.{pool}", f"no pool named {pool!r} (pools: {_list(spec.pools)})"))
        for i, pin in enumerate(route.pins):
            if pin.backend not in route.backends:
                out.append(Problem(
                    f"{path}.pins[{i}].backend",
                    f"pinned backend {pin.backend!r} is not one of the route's backends ({_list(route.backends)})",
                ))
        if route.mirror is not None:
            out += _mirror_target(spec, f"{path}.mirror", route.mirror)
            target = route.mirror
            if target.kind == "InferencePool" and route.backends.get(target.name) and target.percent:
                out.append(Problem(
                    f"{path}.mirror.name",
                    f"pool {target.name!r} has weight {route.backends[target.name]} on this route: it would "
                    "mirror copies of its own requests to itself; mirror only to a pool with weight 0 here "
                    "(a canary before its first step), or set mirror.percent to 0"))
    return out


def _mirror_target(spec: StackSpec, path: str, target) -> list[Problem]:
    """`mirrorTo` of a mirror, or a route's `mirror`: the Service or pool exists, and the platform's
    gateway can copy to it."""
    out = []
    if target.kind == "Service" and target.name not in spec.services:
        out.append(Problem(f"{path}.name", f"no service named {target.name!r} (services: {_list(spec.services)})"))
    if target.record and target.kind != "Service":
        out.append(Problem(f"{path}.record", "a pool's picker records its answers itself: set "
                                             f"pools.{target.name}.picker.answerLog: true instead"))
    elif target.record and spec.images is None and not any(
            p.picker.mode == "self-hosted" and p.picker.image for p in spec.pools.values()):
        out.append(Problem(f"{path}.record", "the recorder runs from infershift's picker image: give `images` "
                                             "(built by the stack) or a self-hosted pool's picker.image"))
    if target.kind == "InferencePool":
        if target.name not in spec.pools:
            out.append(Problem(f"{path}.name", f"no pool named {target.name!r} (pools: {_list(spec.pools)})"))
        if not spec.platform_plugin.mirror_to_pool:
            out.append(Problem(
                f"{path}.kind",
                f"the {spec.platform.kind.upper()} gateway cannot mirror to an InferencePool; mirror to a Service",
            ))
    return out


def _mirrors(spec: StackSpec) -> list[Problem]:
    out = []
    for name, mirror in spec.mirrors.items():
        path = f"mirrors.{name}"
        out += _listener(spec, path, mirror.listener)
        if mirror.backend not in spec.pools:
            out.append(Problem(f"{path}.backend", f"no pool named {mirror.backend!r} (pools: {_list(spec.pools)})"))
        target = mirror.mirror_to
        out += _mirror_target(spec, f"{path}.mirrorTo", target)
        if target.name == mirror.backend and target.kind == "InferencePool":
            out.append(Problem(f"{path}.mirrorTo.name", "a pool cannot mirror to itself"))
    return out


def _rollouts(spec: StackSpec) -> list[Problem]:
    """A rollout moves weight between two sides of one route or one model's split; nothing else
    may hold weight there (the canary's percent is the whole story)."""
    out = []
    for name, ro in spec.rollouts.items():
        path = f"rollouts.{name}"
        if ro.route is not None:
            route = spec.routes.get(ro.route)
            if route is None:
                out.append(Problem(f"{path}.route", f"no route named {ro.route!r} (routes: {_list(spec.routes)})"))
                continue
            weights, what = route.backends, f"backends of route {ro.route!r}"
        else:
            assert ro.pool is not None and ro.model is not None
            pool = spec.pools.get(ro.pool)
            if pool is None:
                out.append(Problem(f"{path}.pool", f"no pool named {ro.pool!r} (pools: {_list(spec.pools)})"))
                continue
            routing = pool.models.get(ro.model)
            if routing is None:
                out.append(Problem(f"{path}.model",
                                   f"pool {ro.pool!r} has no model {ro.model!r} (models: {_list(pool.models)})"))
                continue
            weights, what = routing.targets, f"targets of pools.{ro.pool}.models.{ro.model}"
        for side in ("stable", "canary"):
            if getattr(ro, side) not in weights:
                out.append(Problem(f"{path}.{side}", f"{getattr(ro, side)!r} is not one of the {what} ({_list(weights)})"))
        others = sorted(k for k, w in weights.items() if w and k not in (ro.stable, ro.canary))
        if others:
            out.append(Problem(path, f"the {what} give weight to {_list(others)} too; a rollout moves weight "
                                     "between its stable and canary only"))
        if (ro.pin_first is not None and ro.route is not None
                and not any(p.backend == ro.canary for p in spec.routes[ro.route].pins)):
            out.append(Problem(f"{path}.pinFirst", f"route {ro.route!r} has no pin for the canary {ro.canary!r} "
                                                   "(routes.<route>.pins: header, value, backend)"))
        if ro.shadow_first is not None and ro.route is not None:
            out += _shadow_first(spec, name, ro)
    return out


def shadow_target(spec: StackSpec, ro) -> tuple[str, str]:
    """(kind, name) the shadow phase mirrors the route to: the canary pool where the gateway mirrors
    to pools, else (ACK, GKE; or `via: service`) the canary pool's one Service, through a shadow
    recorder. `name` is also the `pool` of the copies' answer lines."""
    via = ro.shadow_first.via or ("pool" if spec.platform_plugin.mirror_to_pool else "service")
    if via == "pool":
        return "InferencePool", ro.canary
    services = sorted(spec.pool_services(ro.canary)) if ro.canary in spec.pools else []
    return "Service", services[0] if len(services) == 1 else ""


def _shadow_first(spec: StackSpec, name: str, ro) -> list[Problem]:
    """The shadow phase mirrors the route's requests to the canary (its pool, or its Service through
    a recorder) and pairs the answer lines: the gateway must be able to mirror there, the pickers
    must log answers, and the route's own mirror (if any) must be that one."""
    path = f"rollouts.{name}.shadowFirst"
    out = []
    kind, target = shadow_target(spec, ro)
    if kind == "InferencePool" and not spec.platform_plugin.mirror_to_pool:
        out.append(Problem(f"{path}.via", (
            f"the {spec.platform.kind.upper()} gateway cannot mirror to an InferencePool: use via: service (the "
            "canary pool's Service, through a shadow recorder)")))
    if kind == "Service" and ro.canary in spec.pools and not target:
        services = sorted(spec.pool_services(ro.canary))
        out.append(Problem(path, (
            f"the shadow phase mirrors to the canary pool's Service, and pool {ro.canary!r} selects "
            f"{len(services)} ({_list(services) or 'none'}); it needs exactly one")))
    if kind == "Service" and spec.images is None and not any(
            p.picker.mode == "self-hosted" and p.picker.image for p in spec.pools.values()):
        out.append(Problem(path, "the shadow recorder runs from infershift's picker image: give `images` "
                                 "(built by the stack) or a self-hosted pool's picker.image"))
    for side in ((ro.stable, ro.canary) if kind == "InferencePool" else (ro.stable,)):
        pool = spec.pools.get(side)
        if pool is not None and not pool.picker.answer_log:
            out.append(Problem(path, f"the shadow gate pairs the pickers' answer lines: set "
                                     f"pools.{side}.picker.answerLog: true"))
    mirror = spec.routes[ro.route].mirror
    # a rollout in its shadow phase owns the route's mirror meanwhile
    running = any(r.route == ro.route and r.status is not None and r.status.phase == "Shadowing"
                  for r in spec.rollouts.values())
    if mirror is not None and mirror.percent and not running and (mirror.kind, mirror.name) != (kind, target):
        out.append(Problem(f"routes.{ro.route}.mirror", (
            f"the route already mirrors to {mirror.kind} {mirror.name!r}; the shadow phase of rollout {name!r} "
            f"mirrors it to {kind} {target!r}: remove the mirror or set its percent to 0")))
    return out
