"""Alibaba Cloud ACK: a managed cluster found by id, ECS GPU node pools, the Gateway with
Inference Extension add-on (Envoy Gateway) as the gateway."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Literal

import yaml
from pydantic import Field

from infershift import contract
from infershift.spec.base import Problem, Spec

from .base import Platform, PlatformSpec, cloud_sdk, k8s_provider_options

if TYPE_CHECKING:
    import pulumi

    from infershift.spec.model import NodePoolBase, StackSpec

# Alibaba Cloud ecs.gn7i family (NVIDIA A10, 24 GB): instance type -> GPUs per node, to catch
# impossible layouts before `pulumi up`.
INSTANCE_GPUS: dict[str, int] = {
    "ecs.gn7i-c8g1.2xlarge": 1,
    "ecs.gn7i-c16g1.4xlarge": 1,
    "ecs.gn7i-c32g1.8xlarge": 1,
    "ecs.gn7i-c48g1.12xlarge": 1,
    "ecs.gn7i-c56g1.14xlarge": 1,
    "ecs.gn7i-c32g1.16xlarge": 2,
    "ecs.gn7i-c32g1.32xlarge": 4,
    "ecs.gn7i-2x.8xlarge": 2,
    "ecs.gn7i-4x.8xlarge": 4,
    "ecs.gn7i-4x.16xlarge": 4,
    "ecs.gn7i-8x.32xlarge": 8,
    "ecs.gn7i-8x.16xlarge": 8,
}

CREDENTIAL_INVOKE = "alicloud:cs/getClusterCredential:getClusterCredential"
# The render's answer to CREDENTIAL_INVOKE: a kubeconfig for a documentation address.
MOCK_KUBECONFIG = """apiVersion: v1
kind: Config
clusters: [{name: mock, cluster: {server: "https://192.0.2.1:6443"}}]
contexts: [{name: mock, context: {cluster: mock, user: mock}}]
current-context: mock
users: [{name: mock, user: {token: mock}}]
"""


class AckCluster(Spec):
    cluster_id: str = Field(min_length=1)
    """ACK managed cluster id (`c...`)."""
    region: str = Field(min_length=1)
    """Alibaba Cloud region, e.g. `cn-hangzhou`."""
    self_host_epp: bool | None = None
    """ACK's Gateway with Inference Extension add-on runs its own endpoint picker per pool and
    uses a self-hosted one (infershift's) only when its `envoy-gateway` controller runs with
    `SELF_HOST_EPP=true`. `true`: this stack sets it with a server-side-apply patch of
    envoy-gateway-system/envoy-gateway (removed again on destroy); `false`: it is already set
    (by hand, or another stack). Required when any pool's picker is self-hosted."""
    controller_containers: list[str] = Field(["envoy-gateway"], min_length=1)
    """The envoy-gateway Deployment's containers to patch (the add-on's conformance steps patch
    every container; list them: `kubectl -n envoy-gateway-system get deploy envoy-gateway
    -o jsonpath='{.spec.template.spec.containers[*].name}'`)."""
    private_endpoint: str | None = Field(None, pattern=r"^https://[^/\s]+$")
    """The API server's VPC (intranet) URL, e.g. `https://192.168.0.10:6443` (cluster Basic
    Information → Connection Information): the credential's kubeconfig names the public endpoint,
    so for a cluster without one, and `pulumi up` running inside the VPC, its server is replaced by
    this (ACK's API server certificate covers both)."""


class AckPlatform(PlatformSpec):
    kind: Literal["ack"]
    ack: AckCluster | None = None
    required_block: ClassVar[str | None] = "{clusterId, region}"


class AckNodePool(Spec):
    instance_types: list[str] = Field(min_length=1)
    """ECS GPU instance types, e.g. `ecs.gn7i-c8g1.2xlarge` (1×A10)."""
    vswitch_ids: list[str] = Field(min_length=1)
    system_disk_size: int = Field(200, ge=40)
    system_disk_category: str = "cloud_essd"
    autoscaler: bool = False
    """The cluster's node autoscaling is enabled (ACK console: Node Pools → Configure Auto
    Scaling). Required for minNodes < maxNodes: the pool's scaling group then sizes itself between
    them; without an autoscaler such a pool would sit at 0 nodes."""
    scaling_type: Literal["gpu", "gpushare", "cpu", "spot"] = "gpu"
    """The scaling group's instance classification (`scaling_config.type`; the provider's default
    is `cpu`)."""


CONTROLLER_NAMESPACE, CONTROLLER_DEPLOYMENT = "envoy-gateway-system", "envoy-gateway"


def with_server(kubeconfig: str, server: str) -> str:
    """The kubeconfig with every cluster's `server` replaced (the VPC endpoint for the public one)."""
    doc = yaml.safe_load(kubeconfig)
    for entry in doc.get("clusters") or []:
        entry.setdefault("cluster", {})["server"] = server
    return yaml.safe_dump(doc, sort_keys=False)


def self_hosted_pools(spec: StackSpec) -> list[str]:
    return [n for n, p in spec.pools.items() if p.picker.mode == "self-hosted"]


def controller_patch(containers: list[str]) -> dict:
    """SELF_HOST_EPP=true on the add-on controller's containers, as a server-side-apply patch: only
    the fields named here are this stack's (containers and env merge by name), and patchForce takes
    them over from the add-on's field manager, as the conformance steps' `kubectl patch` does."""
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": CONTROLLER_DEPLOYMENT, "namespace": CONTROLLER_NAMESPACE,
                     "annotations": {contract.PULUMI_PATCH_FORCE: "true"}},
        "spec": {"template": {"spec": {"containers": [
            {"name": c, "env": [{"name": "SELF_HOST_EPP", "value": "true"}]} for c in containers]}}},
    }


class Ack(Platform):
    kind = "ack"
    spec = AckPlatform
    node_pool_block = AckNodePool
    # ACK's add-on documents v1alpha2 and serves v1 from its newer releases.
    pool_api_versions = frozenset({"v1alpha2", "v1"})
    gateway_class = "inference-gateway"
    creates_gateway_class = True
    envoy_gateway = True
    mirror_to_pool = False
    managed_picker = True

    def node_pool_problems(self, path: str, pool: NodePoolBase, block: Any, spec: StackSpec) -> list[Problem]:
        if block is None:
            return [Problem(path, "an ACK node pool needs `ack: {instanceTypes, vswitchIds}`")]
        out = []
        for i, itype in enumerate(block.instance_types):
            known = INSTANCE_GPUS.get(itype)
            if known is not None and known != pool.gpus_per_node:
                out.append(Problem(f"{path}.ack.instanceTypes[{i}]",
                                   f"{itype} has {known} GPU(s) per node but gpusPerNode is {pool.gpus_per_node}"))
        if spec.platform.create_node_pools and pool.min_nodes < pool.max_nodes:
            if not block.autoscaler:
                out.append(Problem(f"{path}.maxNodes", (
                    f"minNodes {pool.min_nodes} < maxNodes {pool.max_nodes} makes an auto-scaling pool, which starts "
                    "empty and grows only with ACK's node autoscaling: enable it for the cluster and set "
                    f"`{path}.ack.autoscaler: true`, or give a fixed size (minNodes = maxNodes)")))
            if pool.desired_nodes is not None:
                out.append(Problem(f"{path}.desiredNodes", (
                    "an auto-scaling ACK pool has no desired size (the autoscaler sets it between minNodes and "
                    "maxNodes); drop desiredNodes, or make the pool fixed-size (minNodes = maxNodes)")))
        return out

    def stack_problems(self, spec: StackSpec) -> list[Problem]:
        cluster = spec.platform.ack  # type: ignore[attr-defined]
        own = self_hosted_pools(spec)
        managed = [n for n in spec.pools if n not in own]
        out = []
        if own and cluster.self_host_epp is None:
            out.append(Problem("platform.ack.selfHostEpp", (
                f"pool(s) {', '.join(own)} use infershift's picker, which ACK's add-on calls only when its envoy-gateway "
                "controller runs with SELF_HOST_EPP=true (otherwise it deploys and uses its own picker): set true to "
                "have this stack patch the controller, false if it already runs so, or give the pools "
                "`picker: {mode: managed, service: <the add-on's picker Service>}`")))
        if own and managed:
            out.append(Problem(f"pools.{managed[0]}.picker.mode", (
                f"ACK's add-on runs either its own pickers or self-hosted ones, cluster-wide (SELF_HOST_EPP): "
                f"pools {', '.join(own)} are self-hosted and {', '.join(managed)} managed; use one mode")))
        if not own and cluster.self_host_epp:
            out.append(Problem("platform.ack.selfHostEpp", (
                "every pool's picker is managed by the add-on, which SELF_HOST_EPP=true would turn off; "
                "leave selfHostEpp unset or false")))
        return out

    def cluster_objects(self, spec: StackSpec) -> list[dict]:
        cluster = spec.platform.ack  # type: ignore[attr-defined]
        if self_hosted_pools(spec) and cluster.self_host_epp:
            return [controller_patch(list(cluster.controller_containers))]
        return []

    def cluster_args(self, platform: Any) -> dict:
        args = {"platform": "ack", "ack_cluster_id": platform.ack.cluster_id, "ack_region": platform.ack.region}
        if platform.ack.private_endpoint:
            args["ack_private_endpoint"] = platform.ack.private_endpoint
        return args

    def providers(self, parent: pulumi.Resource, name: str, args: dict):
        import pulumi
        import pulumi_kubernetes as k8s

        alicloud = cloud_sdk("pulumi_alicloud", self.kind)
        child = pulumi.ResourceOptions(parent=parent)
        cloud = alicloud.Provider(f"{name}-alicloud", region=args["ack_region"], opts=child)
        cred = alicloud.cs.get_cluster_credential_output(
            cluster_id=args["ack_cluster_id"], opts=pulumi.InvokeOutputOptions(parent=parent, provider=cloud))
        private = args.get("ack_private_endpoint")
        kubeconfig = pulumi.Output.secret(
            cred.kube_config.apply(lambda text: with_server(text, private)) if private else cred.kube_config)
        identifier = f"ack/{args['ack_region']}/{args['ack_cluster_id']}"
        return k8s.Provider(f"{name}-provider", kubeconfig=kubeconfig, opts=child,
                            **k8s_provider_options(identifier)), cloud

    def node_pool_args(self, platform: Any, block: Any) -> dict:
        return {"cluster": platform.ack.cluster_id, "instance_types": list(block.instance_types),
                "vswitch_ids": list(block.vswitch_ids), "system_disk_size": block.system_disk_size,
                "system_disk_category": block.system_disk_category, "scaling_type": block.scaling_type}

    def node_pool(self, parent: pulumi.Resource, name: str, args: dict, labels: dict[str, str],
                  taint: dict | None):
        import pulumi

        alicloud = cloud_sdk("pulumi_alicloud", self.kind)

        # ACK takes either a scaling group (min < max; max must exceed min) or a desired size,
        # not both (pulumi-alicloud cs.NodePool: scaling_config, desired_size).
        autoscale = args["min_nodes"] < args["max_nodes"]
        return alicloud.cs.NodePool(
            f"{name}-nodepool",
            cluster_id=args["cluster"],
            node_pool_name=name,
            instance_types=args["instance_types"],
            vswitch_ids=args["vswitch_ids"],
            system_disk_category=args.get("system_disk_category", "cloud_essd"),
            system_disk_size=args.get("system_disk_size", 200),
            labels=[{"key": k, "value": v} for k, v in sorted(labels.items())],
            taints=[{**taint, "effect": "NoSchedule"}] if taint else None,
            scaling_config={"enable": True, "min_size": args["min_nodes"], "max_size": args["max_nodes"],
                            "type": args.get("scaling_type", "gpu")} if autoscale else None,
            desired_size=None if autoscale else str(args["min_nodes"]),
            opts=pulumi.ResourceOptions(parent=parent),
        )

    def mock_call(self, token: str, args: dict) -> dict | None:
        if token != CREDENTIAL_INVOKE:
            return None
        return {"id": args.get("clusterId"), "clusterId": args.get("clusterId"), "kubeConfig": MOCK_KUBECONFIG,
                "certificateAuthorities": []}


PLUGIN = Ack()
