"""Cluster: the Kubernetes provider for a cluster of any registered platform (and its cloud provider).

What each platform declares lives in its plug-in (`infershift/platforms/<kind>.py`); this
component only asks it, so a platform's cloud SDK is imported only when that platform is used.
"""
from typing import NotRequired, TypedDict, cast

import pulumi
import pulumi_kubernetes as k8s

from infershift import platforms

from .checks import check
from .enums import component_args


class ClusterArgs(TypedDict):
    platform: str
    """Which kind of cluster the provider talks to: a registered platform (`ack`, `gke`, `kubeconfig`)."""
    ack_cluster_id: NotRequired[str]
    """ACK cluster id; credentials come from `alicloud.cs.get_cluster_credential`."""
    ack_region: NotRequired[str]
    gke_project: NotRequired[str]
    gke_location: NotRequired[str]
    gke_cluster: NotRequired[str]
    kubeconfig: NotRequired[str]
    """kubeconfig file path or contents (kubeconfig platform); default `KUBECONFIG` / `~/.kube/config`."""
    context: NotRequired[str]
    """kubeconfig context (kubeconfig platform)."""
    ack_private_endpoint: NotRequired[str]
    """ACK: the API server address to use instead of the credential's (a private endpoint)."""


class Cluster(pulumi.ComponentResource):
    """The providers for one cluster: `k8s_provider` for every Kubernetes object, and
    `cloud_provider` (alicloud or gcp) for node pools, or None on a kubeconfig cluster."""

    k8s_provider: k8s.Provider
    """The cluster's Kubernetes provider: pass it to the other components (`providers` option)."""

    def __init__(self, name: str, args: ClusterArgs, opts: pulumi.ResourceOptions | None = None):
        args = component_args(args, ClusterArgs)
        check("Cluster", name, args)  # before anything is declared
        super().__init__("infershift:index:Cluster", name, None, opts)
        plugin = platforms.get(args["platform"])  # an unknown platform is an error, not another's branch
        # The cloud provider's type depends on the platform: a Python attribute, not a schema output.
        self.cloud_provider: pulumi.ProviderResource | None
        k8s_provider, self.cloud_provider = plugin.providers(self, name, dict(args))
        self.k8s_provider = cast(k8s.Provider, k8s_provider)
        self.register_outputs({"k8s_provider": self.k8s_provider.urn})
