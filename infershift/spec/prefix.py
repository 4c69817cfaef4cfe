"""`platform.namePrefix`: several stacks in one namespace. Every object name the stack declares
carries the prefix (services, pools and their pickers, routes, the Gateway, a GatewayClass it
creates, node pools, secrets); client-facing model names, labels and listener names do not.

The prefix is applied to the validated spec (renaming its keys and every reference to them), so
the components see ordinary names and checks still report the paths the user wrote.
"""
from __future__ import annotations

from .model import StackSpec


def with_prefix(spec: StackSpec) -> StackSpec:
    prefix = spec.platform.name_prefix
    if not prefix:
        return spec

    def n(name: str) -> str:
        return prefix + name

    def secret(name: str) -> str:  # only the stack's own Secrets are renamed; existing ones keep their names
        return n(name) if name in spec.secrets or name in spec.registry_credentials else name

    services = {
        n(name): svc.model_copy(update={
            "labels": svc.pod_labels(name),  # the default `app: <name>` is what pools select: keep it
            "node_pool": n(svc.node_pool) if svc.node_pool else None,
            "secret_env": {var: ref.model_copy(update={"secret": secret(ref.secret)})
                           for var, ref in svc.secret_env.items()},
            "image_pull_secrets": [secret(s) for s in svc.image_pull_secrets],
        })
        for name, svc in spec.services.items()
    }
    routes = {
        n(name): route.model_copy(update={
            "backends": {n(pool): w for pool, w in route.backends.items()},
            "pins": [pin.model_copy(update={"backend": n(pin.backend)}) for pin in route.pins],
        })
        for name, route in spec.routes.items()
    }
    mirrors = {
        n(name): m.model_copy(update={"backend": n(m.backend),
                                      "mirror_to": m.mirror_to.model_copy(update={"name": n(m.mirror_to.name)})})
        for name, m in spec.mirrors.items()
    }
    gateway_update: dict = {"name": n(spec.gateway.name)}
    if spec.creates_class():  # a class this stack creates is its own; a shared one keeps its name
        gateway_update["class_name"] = n(spec.class_name())
    return spec.model_copy(update={
        "node_pools": {n(k): v for k, v in spec.node_pools.items()},
        "services": services,
        "pools": {n(k): v.model_copy(update={"picker": v.picker.model_copy(update={
            "image_pull_secrets": [secret(x) for x in v.picker.image_pull_secrets]})})
            for k, v in spec.pools.items()},
        "gateway": spec.gateway.model_copy(update=gateway_update),
        "routes": routes,
        "mirrors": mirrors,
        "secrets": {n(k): v for k, v in spec.secrets.items()},
        "registry_credentials": {n(k): v for k, v in spec.registry_credentials.items()},
    })
