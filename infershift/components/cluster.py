"""Cluster: the Kubernetes provider for an ACK, GKE or kubeconfig cluster (and the cloud provider)."""
from __future__ import annotations

from typing import Literal, NotRequired, Optional, TypedDict

import pulumi
import pulumi_alicloud as alicloud
import pulumi_gcp as gcp
import pulumi_kubernetes as k8s


class ClusterArgs(TypedDict):
    platform: Literal["ack", "gke", "kubeconfig"]
    """Which kind of cluster the provider talks to."""
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


def gke_kubeconfig(name: str, endpoint: str, ca: str) -> str:
    """A kubeconfig that authenticates with `gke-gcloud-auth-plugin`, as `gcloud` writes it."""
    return f"""apiVersion: v1
kind: Config
clusters:
- name: {name}
  cluster:
    server: https://{endpoint}
    certificate-authority-data: {ca}
contexts:
- name: {name}
  context: {{cluster: {name}, user: {name}}}
current-context: {name}
users:
- name: {name}
  user:
    exec:
      apiVersion: client.authentication.k8s.io/v1beta1
      command: gke-gcloud-auth-plugin
      provideClusterInfo: true
      installHint: Install gke-gcloud-auth-plugin (gcloud components install gke-gcloud-auth-plugin)
"""


def _ca_certificate(auth) -> str:
    # A typed result object from the engine; a plain dict under some runtimes (mocks).
    if isinstance(auth, dict):
        return auth.get("cluster_ca_certificate") or auth["clusterCaCertificate"]
    return auth.cluster_ca_certificate


class Cluster(pulumi.ComponentResource):
    """The providers for one cluster: `k8s_provider` for every Kubernetes object, and
    `cloud_provider` (alicloud or gcp) for node pools, or None on a kubeconfig cluster."""

    k8s_provider: k8s.Provider
    cloud_provider: Optional[pulumi.ProviderResource]

    def __init__(self, name: str, args: ClusterArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("infershift:index:Cluster", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        platform = args["platform"]
        self.cloud_provider = None
        if platform == "ack":
            self.cloud_provider = alicloud.Provider(f"{name}-alicloud", region=args["ack_region"], opts=child)
            cred = alicloud.cs.get_cluster_credential_output(
                cluster_id=args["ack_cluster_id"],
                opts=pulumi.InvokeOutputOptions(parent=self, provider=self.cloud_provider),
            )
            kubeconfig: pulumi.Input[str] = pulumi.Output.secret(cred.kube_config)
            self.k8s_provider = k8s.Provider(f"{name}-provider", kubeconfig=kubeconfig, opts=child)
        elif platform == "gke":
            self.cloud_provider = gcp.Provider(f"{name}-gcp", project=args["gke_project"], opts=child)
            info = gcp.container.get_cluster_output(
                name=args["gke_cluster"], location=args["gke_location"], project=args["gke_project"],
                opts=pulumi.InvokeOutputOptions(parent=self, provider=self.cloud_provider),
            )
            context = f"gke_{args['gke_project']}_{args['gke_location']}_{args['gke_cluster']}"
            kubeconfig = pulumi.Output.all(info.endpoint, info.master_auths).apply(
                lambda v: gke_kubeconfig(context, v[0], _ca_certificate(v[1][0]))
            )
            self.k8s_provider = k8s.Provider(f"{name}-provider", kubeconfig=kubeconfig, opts=child)
        else:
            self.k8s_provider = k8s.Provider(
                f"{name}-provider", kubeconfig=args.get("kubeconfig"), context=args.get("context"), opts=child
            )
        self.register_outputs({"k8s_provider": self.k8s_provider.urn})
