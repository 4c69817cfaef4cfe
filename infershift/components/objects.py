"""Declare a Kubernetes object from a plain manifest dict.

Components build manifests as plain data (easy to read and to test) and declare them
here: core kinds get their typed pulumi_kubernetes class, everything else a CustomResource.
"""
from __future__ import annotations

from typing import Any

import pulumi
import pulumi_kubernetes as k8s

_TYPED = {
    ("apps/v1", "Deployment"): k8s.apps.v1.Deployment,
    ("v1", "Service"): k8s.core.v1.Service,
    ("v1", "ServiceAccount"): k8s.core.v1.ServiceAccount,
    ("v1", "ConfigMap"): k8s.core.v1.ConfigMap,
    ("rbac.authorization.k8s.io/v1", "Role"): k8s.rbac.v1.Role,
    ("rbac.authorization.k8s.io/v1", "RoleBinding"): k8s.rbac.v1.RoleBinding,
    ("networking.k8s.io/v1", "NetworkPolicy"): k8s.networking.v1.NetworkPolicy,
}

# Top-level manifest keys -> the typed classes' keyword arguments.
_FIELDS = {"metadata": "metadata", "spec": "spec", "data": "data", "rules": "rules",
           "roleRef": "role_ref", "subjects": "subjects"}


def declare(name: str, manifest: dict[str, Any], opts: pulumi.ResourceOptions) -> pulumi.CustomResource:
    api_version, kind = manifest["apiVersion"], manifest["kind"]
    cls = _TYPED.get((api_version, kind))
    if cls is not None:
        kwargs = {_FIELDS[k]: v for k, v in manifest.items() if k not in ("apiVersion", "kind")}
        return cls(name, opts=opts, **kwargs)
    other = {k: v for k, v in manifest.items() if k not in ("apiVersion", "kind", "metadata")}
    return k8s.apiextensions.CustomResource(
        name, api_version=api_version, kind=kind, metadata=manifest.get("metadata"), opts=opts, **other
    )


def child_opts(parent: pulumi.Resource, depends_on: list[pulumi.Resource] | None = None) -> pulumi.ResourceOptions:
    # Children inherit the cluster's Kubernetes provider from the component's `providers`.
    return pulumi.ResourceOptions(parent=parent, depends_on=depends_on or None)
