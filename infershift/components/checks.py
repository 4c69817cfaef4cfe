"""Args checks for components composed in a program, as `spec/` checks a stack: each component
checks its args before it declares anything, and fails with its type, its name, the arg and
what is wrong. Values that are Outputs (another resource's) are not known yet and not checked.

Rules are about one component's own args (a component does not see the others): a pin or a
per-pool version naming a pool the route was not given, weights all zero, an adapter or model
the pool's servers do not serve (with `served_models`), criticality and priority both given.
"""
from typing import Any

import pulumi

from infershift import contract


class ComponentArgsError(ValueError):
    """Inconsistent args of one component: `problems` are `arg: what is wrong`."""

    def __init__(self, component: str, name: str, problems: list[str]):
        self.component, self.name, self.problems = component, name, problems
        super().__init__(f"{component} {name!r}: " + "; ".join(problems))


def _known(value: Any) -> bool:
    return not isinstance(value, pulumi.Output)


def _weights(path: str, weights: Any, what: str) -> list[str]:
    if not _known(weights) or weights is None:
        return []
    out = [f"{path}.{k}: weight {w} is negative" for k, w in weights.items() if _known(w) and w < 0]
    if weights and all(_known(w) and w == 0 for w in weights.values()):
        out.append(f"{path}: every weight is 0 (no {what} would get a request)")
    return out


def _paths(a: dict) -> list[str]:
    paths = a.get("paths") or []
    return [f"paths[{i}]: {p!r} {problem} (Gateway API's HTTPPathMatch rules)" for i, p in enumerate(paths)
            if _known(p) and (problem := contract.http_path_problem(str(p)))]


def canary_route(a: dict) -> list[str]:
    backends = a.get("backends") or {}
    out = [] if backends else ["backends: no pool (give InferencePool name -> weight)"]
    out += _weights("backends", backends, "pool")
    given = ", ".join(backends) or "none"
    for i, pin in enumerate(a.get("pins") or []):
        if pin.get("backend") not in backends:
            out.append(f"pins[{i}].backend: {pin.get('backend')!r} is not one of the route's backends ({given})")
    for pool in a.get("pool_versions") or {}:
        if pool not in backends:
            out.append(f"pool_versions.{pool}: {pool!r} is not one of the route's backends ({given})")
    mirror = a.get("mirror") or {}
    if mirror:
        percent = mirror.get("percent", 100)
        if _known(percent) and not 0 <= percent <= 100:
            out.append(f"mirror.percent: {percent} is not between 0 and 100")
        name = mirror.get("name")
        if (mirror.get("kind", "Service") == "InferencePool" and _known(percent) and percent
                and _known(backends.get(name)) and backends.get(name)):
            out.append(f"mirror.name: pool {name!r} has weight {backends[name]} on this route; it would get "
                       "copies of its own requests")
    return out + _paths(a)


def mirror_route(a: dict) -> list[str]:
    out = []
    percent = a.get("percent", 100)
    if _known(percent) and not 0 <= percent <= 100:
        out.append(f"percent: {percent} is not between 0 and 100")
    target = a.get("mirror_to") or {}
    if target.get("kind", "Service") == "InferencePool" and target.get("name") == a.get("backend"):
        out.append(f"mirror_to: mirrors to the route's own backend {a.get('backend')!r}")
    port = target.get("port")
    if port is not None and not 1 <= port <= 65535:
        out.append(f"mirror_to.port: {port} is not a port (1-65535)")
    return out + _paths(a)


def inference_pool(a: dict) -> list[str]:
    out = []
    selector = a.get("selector")
    if _known(selector) and not selector:
        out.append("selector: empty (the pool would span every pod of the namespace)")
    if a.get("api_version", "v1") == "v1alpha2" and len(a.get("target_ports") or []) > 1:
        out.append("target_ports: a v1alpha2 pool has one target port")
    if a.get("picker_cert_secret") and a.get("picker_secure_serving") is False:
        out.append("picker_cert_secret: a certificate Secret needs picker_secure_serving")
    served = a.get("served_models")
    for model, routing in (a.get("models") or {}).items():
        routing = routing or {}
        if routing.get("criticality") and routing.get("priority") is not None:
            out.append(f"models.{model}: give criticality or priority, not both")
        targets = routing.get("targets") or {}
        out += _weights(f"models.{model}.targets", targets, "target model")
        if served is None:
            continue
        for target in targets or [model]:
            if target not in served:
                path = f"models.{model}.targets.{target}" if targets else f"models.{model}"
                out.append(f"{path}: no server of the pool serves {target!r} (served_models: {', '.join(served)})")
    return out


def inference_service(a: dict) -> list[str]:
    out = []
    if not a.get("lora_modules"):
        out += [f"{k}: given without lora_modules" for k in ("max_loras", "max_cpu_loras", "max_lora_rank")
                if a.get(k)]
    if a.get("simulated") and not a.get("sim_image"):
        out.append("sim_image: `simulated` needs the simulator's image (build infershift/sim/Dockerfile, "
                   "or use the Images component, and pass its ref)")
    gpus, tp = a.get("gpus", 1), a.get("tensor_parallel_size", 1)
    if not a.get("simulated") and gpus and tp > gpus:
        out.append(f"tensor_parallel_size: {tp} is larger than gpus per replica ({gpus})")
    return out


def gateway(a: dict) -> list[str]:
    listeners = a.get("listeners") or []
    out = [] if listeners else ["listeners: none (a Gateway needs at least one listener)"]
    names = [li.get("name") for li in listeners]
    out += [f"listeners: the name {n!r} is used twice" for n in sorted({n for n in names if names.count(n) > 1})]
    return out


def gpu_node_pool(a: dict) -> list[str]:
    out = []
    lo, hi, desired = a.get("min_nodes", 0), a.get("max_nodes", 0), a.get("desired_nodes")
    if lo > hi:
        out.append(f"min_nodes: {lo} is larger than max_nodes ({hi})")
    if desired is not None and not lo <= desired <= hi:
        out.append(f"desired_nodes: {desired} is not between min_nodes ({lo}) and max_nodes ({hi})")
    return out


RULES = {"CanaryRoute": canary_route, "MirrorRoute": mirror_route, "InferencePool": inference_pool,
         "InferenceService": inference_service, "Gateway": gateway, "GpuNodePool": gpu_node_pool}


def problems(component: str, args: dict) -> list[str]:
    rule = RULES.get(component)
    return rule(args) if rule else []


def check(component: str, name: str, args: Any) -> None:
    """Raise ComponentArgsError for `component`'s args (called before the component declares anything)."""
    found = problems(component, dict(args))
    if found:
        raise ComponentArgsError(component, name, found)
