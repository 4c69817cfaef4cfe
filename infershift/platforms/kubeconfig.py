"""Any cluster a kubeconfig reaches (kind, k3s, an existing managed cluster, the local stack's
objects): Kubernetes objects only, no node pools, Envoy Gateway as the gateway."""
from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any, Literal

from pydantic import model_validator

from infershift.spec.base import Spec

from .base import Platform, PlatformSpec, k8s_provider_options

if TYPE_CHECKING:
    import pulumi


class KubeconfigCluster(Spec):
    context: str | None = None
    """kubeconfig context; the current context when omitted."""
    path: str | None = None
    """kubeconfig file; `KUBECONFIG` / `~/.kube/config` when omitted."""


class KubeconfigPlatform(PlatformSpec):
    kind: Literal["kubeconfig"]
    kubeconfig: KubeconfigCluster | None = None

    @model_validator(mode="after")
    def _no_node_pools(self) -> KubeconfigPlatform:
        if self.create_node_pools:
            from . import REGISTRY

            able = [k for k, p in REGISTRY.items() if p.node_pool_block is not None]
            raise ValueError(f"createNodePools needs kind {' or '.join(repr(k) for k in able)}: "
                             "a kubeconfig cluster's nodes are not managed here")
        return self


class Kubeconfig(Platform):
    kind = "kubeconfig"
    spec = KubeconfigPlatform
    local_endpoints = True

    def cluster_args(self, platform: Any) -> dict:
        args: dict = {"platform": "kubeconfig"}
        if platform.kubeconfig and platform.kubeconfig.path:
            args["kubeconfig"] = platform.kubeconfig.path
        if platform.kubeconfig and platform.kubeconfig.context:
            args["context"] = platform.kubeconfig.context
        return args

    def providers(self, parent: pulumi.Resource, name: str, args: dict):
        import pulumi
        import pulumi_kubernetes as k8s

        source = args.get("kubeconfig") or "~"
        if "\n" in source:  # kubeconfig contents, not a path: never put credentials in an identifier
            source = "inline-" + hashlib.sha256(source.encode()).hexdigest()[:12]
        identifier = f"kubeconfig/{source}/{args.get('context') or 'current-context'}"
        provider = k8s.Provider(f"{name}-provider", kubeconfig=args.get("kubeconfig"), context=args.get("context"),
                                opts=pulumi.ResourceOptions(parent=parent), **k8s_provider_options(identifier))
        return provider, None


PLUGIN = Kubeconfig()
