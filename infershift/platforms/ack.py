"""Alibaba Cloud ACK: a managed cluster found by id, ECS GPU node pools, the Gateway with
Inference Extension add-on (Envoy Gateway) as the gateway."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, model_validator

from infershift.spec.base import Problem, Spec

from .base import Platform, PlatformSpec, cloud_sdk

if TYPE_CHECKING:
    import pulumi

    from infershift.spec.model import NodePoolBase

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


class AckPlatform(PlatformSpec):
    kind: Literal["ack"]
    ack: AckCluster | None = None

    @model_validator(mode="after")
    def _cluster(self) -> AckPlatform:
        if self.ack is None:
            raise ValueError("kind 'ack' needs `ack: {clusterId, region}`")
        return self


class AckNodePool(Spec):
    instance_types: list[str] = Field(min_length=1)
    """ECS GPU instance types, e.g. `ecs.gn7i-c8g1.2xlarge` (1×A10)."""
    vswitch_ids: list[str] = Field(min_length=1)
    system_disk_size: int = Field(200, ge=40)
    system_disk_category: str = "cloud_essd"


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

    def node_pool_problems(self, path: str, pool: NodePoolBase, block: Any) -> list[Problem]:
        if block is None:
            return [Problem(path, "an ACK node pool needs `ack: {instanceTypes, vswitchIds}`")]
        out = []
        for i, itype in enumerate(block.instance_types):
            known = INSTANCE_GPUS.get(itype)
            if known is not None and known != pool.gpus_per_node:
                out.append(Problem(f"{path}.ack.instanceTypes[{i}]",
                                   f"{itype} has {known} GPU(s) per node but gpusPerNode is {pool.gpus_per_node}"))
        return out

    def cluster_args(self, platform: Any) -> dict:
        return {"platform": "ack", "ack_cluster_id": platform.ack.cluster_id, "ack_region": platform.ack.region}

    def providers(self, parent: pulumi.Resource, name: str, args: dict):
        import pulumi
        import pulumi_kubernetes as k8s

        alicloud = cloud_sdk("pulumi_alicloud", self.kind)
        child = pulumi.ResourceOptions(parent=parent)
        cloud = alicloud.Provider(f"{name}-alicloud", region=args["ack_region"], opts=child)
        cred = alicloud.cs.get_cluster_credential_output(
            cluster_id=args["ack_cluster_id"], opts=pulumi.InvokeOutputOptions(parent=parent, provider=cloud))
        kubeconfig = pulumi.Output.secret(cred.kube_config)
        return k8s.Provider(f"{name}-provider", kubeconfig=kubeconfig, opts=child), cloud

    def node_pool_args(self, platform: Any, block: Any) -> dict:
        return {"cluster": platform.ack.cluster_id, "instance_types": list(block.instance_types),
                "vswitch_ids": list(block.vswitch_ids), "system_disk_size": block.system_disk_size,
                "system_disk_category": block.system_disk_category}

    def node_pool(self, parent: pulumi.Resource, name: str, args: dict, labels: dict[str, str],
                  taint: dict | None):
        import pulumi

        alicloud = cloud_sdk("pulumi_alicloud", self.kind)

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
            scaling_config={"enable": True, "min_size": args["min_nodes"], "max_size": args["max_nodes"]}
            if autoscale else None,
            desired_size=None if autoscale else str(args.get("desired_nodes") or args["min_nodes"]),
            opts=pulumi.ResourceOptions(parent=parent),
        )

    def mock_call(self, token: str, args: dict) -> dict | None:
        if token != CREDENTIAL_INVOKE:
            return None
        return {"id": args.get("clusterId"), "clusterId": args.get("clusterId"), "kubeConfig": MOCK_KUBECONFIG,
                "certificateAuthorities": []}


PLUGIN = Ack()
