"""Declare a Kubernetes object from a plain manifest dict.

Components build manifests as plain data (easy to read and to test) and declare them
here: core kinds get their typed pulumi_kubernetes class, everything else a CustomResource.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

_TYPED = {
    ("apps/v1", "Deployment"): k8s.apps.v1.Deployment,
    ("v1", "Service"): k8s.core.v1.Service,
    ("v1", "ServiceAccount"): k8s.core.v1.ServiceAccount,
    ("v1", "ConfigMap"): k8s.core.v1.ConfigMap,
    ("v1", "Secret"): k8s.core.v1.Secret,
    ("rbac.authorization.k8s.io/v1", "Role"): k8s.rbac.v1.Role,
    ("rbac.authorization.k8s.io/v1", "RoleBinding"): k8s.rbac.v1.RoleBinding,
    ("networking.k8s.io/v1", "NetworkPolicy"): k8s.networking.v1.NetworkPolicy,
    ("policy/v1", "PodDisruptionBudget"): k8s.policy.v1.PodDisruptionBudget,
    ("v1", "Namespace"): k8s.core.v1.Namespace,
}

# Top-level manifest keys -> the typed classes' keyword arguments.
_FIELDS = {"metadata": "metadata", "spec": "spec", "data": "data", "rules": "rules",
           "roleRef": "role_ref", "subjects": "subjects", "stringData": "string_data", "type": "type"}


class _ObjectWithStatus(pulumi.CustomResource):
    """A custom-kind object whose live `status` is an output too (`CustomResource` declares only
    apiVersion, kind, metadata and spec as outputs): the provider returns the live object, so
    declaring `status` as an output property exposes it (e.g. a Gateway's addresses)."""

    status: pulumi.Output[Any]

    def __init__(self, name: str, manifest: dict[str, Any], opts: pulumi.ResourceOptions):
        from pulumi_kubernetes import _utilities

        props = {k: v for k, v in manifest.items() if k != "status"}
        props["status"] = None
        opts = pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(version=_utilities.get_version()))
        super().__init__(f"kubernetes:{manifest['apiVersion']}:{manifest['kind']}", name, props, opts)


def declare(name: str, manifest: dict[str, Any], opts: pulumi.ResourceOptions,
            with_status: bool = False) -> pulumi.CustomResource:
    api_version, kind = manifest["apiVersion"], manifest["kind"]
    if with_status:
        return _ObjectWithStatus(name, manifest, opts)
    cls = _TYPED.get((api_version, kind))
    if cls is not None:
        kwargs = {_FIELDS[k]: v for k, v in manifest.items() if k not in ("apiVersion", "kind")}
        return cls(name, opts=opts, **kwargs)
    other = {k: v for k, v in manifest.items() if k not in ("apiVersion", "kind", "metadata")}
    return k8s.apiextensions.CustomResource(
        name, api_version=api_version, kind=kind, metadata=manifest.get("metadata"), opts=opts, **other
    )


def keep_options(component: pulumi.Resource, opts: pulumi.ResourceOptions | None) -> None:
    """Remember the component's `retain_on_delete` for its children: the engine passes `protect`
    down to children, but the Python SDK does not pass `retain_on_delete` (pulumi/resource.py
    inherits only protect from the parent)."""
    component._infershift_retain = opts.retain_on_delete if opts else None  # type: ignore[attr-defined]
    # Children do not inherit a component's depends_on either (it orders the component itself):
    # pass it on, so e.g. every object waits for the namespace it lives in.
    deps = opts.depends_on if opts else None
    component._infershift_deps = list(deps) if isinstance(deps, list) else ([deps] if deps else [])  # type: ignore[attr-defined]


_PATCHES = {("apps/v1", "Deployment"): k8s.apps.v1.DeploymentPatch}


def declare_patch(name: str, manifest: dict[str, Any], opts: pulumi.ResourceOptions) -> pulumi.CustomResource:
    """A server-side-apply patch of an object someone else owns (pulumi-kubernetes' `...Patch`
    resources): only the fields in `manifest` become this stack's, and they are removed again when
    the patch is deleted."""
    cls = _PATCHES[(manifest["apiVersion"], manifest["kind"])]
    kwargs = {_FIELDS[k]: v for k, v in manifest.items() if k not in ("apiVersion", "kind")}
    return cls(name, opts=opts, **kwargs)


def child_opts(parent: pulumi.Resource, depends_on: list[pulumi.Resource] | None = None) -> pulumi.ResourceOptions:
    # Children inherit the cluster's Kubernetes provider from the component's `providers`.
    deps = [*getattr(parent, "_infershift_deps", []), *(depends_on or [])]
    return pulumi.ResourceOptions(parent=parent, depends_on=deps or None,
                                  retain_on_delete=getattr(parent, "_infershift_retain", None))


# Shapes standing in for an Output arg while a builder lays out which objects a component
# declares (the layout never depends on these values, only the objects' fields do).
_LABELS = {"placeholder": "placeholder"}
PLACEHOLDERS: dict[str, Any] = {"namespace": "placeholder", "selector": _LABELS, "node_selector": _LABELS,
                                 "config": {}}


def build_manifests(args: Mapping[str, Any], build: Callable[[Any], list[dict]],
                    keys: tuple[str, ...] = ("namespace",)) -> list[tuple[dict, dict]]:
    """`(layout, manifest)` per object `build(args)` returns. With plain args both are the same
    plain manifest. When an arg of `keys` is an Output (another resource's value), `layout` is
    built with a placeholder in its place (kinds and names, to declare the objects now) and each
    top-level field of `manifest` other than apiVersion and kind is an Output of the real build."""
    deferred = {k: args[k] for k in keys if isinstance(args.get(k), pulumi.Output)}
    if not deferred:
        built = build(dict(args))
        return [(m, m) for m in built]
    layout = build({**args, **{k: PLACEHOLDERS[k] for k in deferred}})
    real = pulumi.Output.all(**deferred).apply(lambda resolved: build({**args, **resolved}))

    def field(i: int, key: str) -> pulumi.Output[Any]:
        return real.apply(lambda built: built[i][key])

    return [(m, {k: (v if k in ("apiVersion", "kind") else field(i, k)) for k, v in m.items()})
            for i, m in enumerate(layout)]


def restricted_security_context() -> dict[str, Any]:
    """The containers infershift runs from its own images (picker, /v1/models listing, shadow
    recorder): what Pod Security's "restricted" profile asks (no privilege escalation, non-root,
    every capability dropped), and a read-only root filesystem. A fresh dict per container."""
    return {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
            "runAsNonRoot": True, "capabilities": {"drop": ["ALL"]}}


def http_health_probes(port: int, path: str = "/healthz") -> dict[str, Any]:
    """Readiness (every 5 s) and liveness (every 10 s, after 5 s) on one HTTP health path."""
    return {"readinessProbe": {"httpGet": {"path": path, "port": port}, "periodSeconds": 5},
            "livenessProbe": {"httpGet": {"path": path, "port": port}, "initialDelaySeconds": 5,
                              "periodSeconds": 10}}
