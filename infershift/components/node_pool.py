"""GpuNodePool: an ACK or GKE node pool of GPU nodes, labelled and tainted for GPU workloads."""
from __future__ import annotations

from typing import Literal, NotRequired, Optional, TypedDict

import pulumi
import pulumi_alicloud as alicloud
import pulumi_gcp as gcp

# Every node of a pool carries this label; InferenceService pods select their pool by it.
NODE_POOL_LABEL = "infershift.io/node-pool"
GPU_TAINT = {"key": "nvidia.com/gpu", "value": "present"}


class GpuNodePoolArgs(TypedDict):
    platform: Literal["ack", "gke"]
    cluster: str
    """ACK cluster id, or GKE cluster name."""
    gpu_type: str
    """`nvidia-a10` on ACK; the GKE accelerator type (e.g. `nvidia-l4`) on GKE."""
    gpus_per_node: int
    min_nodes: int
    max_nodes: int
    desired_nodes: NotRequired[Optional[int]]
    """Fixed size when min_nodes == max_nodes (autoscaling is off); initial size on GKE."""
    labels: NotRequired[dict[str, str]]
    taint: NotRequired[bool]
    """Taint nodes `nvidia.com/gpu=present:NoSchedule` (default True)."""
    # ACK
    instance_types: NotRequired[list[str]]
    vswitch_ids: NotRequired[list[str]]
    system_disk_size: NotRequired[int]
    system_disk_category: NotRequired[str]
    # GKE
    location: NotRequired[str]
    project: NotRequired[str]
    machine_type: NotRequired[str]
    disk_size_gb: NotRequired[int]
    gpu_driver_version: NotRequired[str]
    spot: NotRequired[bool]


def node_labels(name: str, args: GpuNodePoolArgs) -> dict[str, str]:
    return {**args.get("labels", {}), NODE_POOL_LABEL: name}


class GpuNodePool(pulumi.ComponentResource):
    """`pool_name` is the node pool's name in the cloud; `node_selector` selects its nodes."""

    pool_name: str
    node_selector: dict[str, str]

    def __init__(self, name: str, args: GpuNodePoolArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("infershift:index:GpuNodePool", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        labels = node_labels(name, args)
        taint = args.get("taint", True)
        self.pool_name = name
        self.node_selector = {NODE_POOL_LABEL: name}
        if args["platform"] == "ack":
            autoscale = args["min_nodes"] < args["max_nodes"]
            self.node_pool = alicloud.cs.NodePool(
                f"{name}-nodepool",
                cluster_id=args["cluster"],
                node_pool_name=name,
                instance_types=args["instance_types"],
                vswitch_ids=args["vswitch_ids"],
                system_disk_category=args.get("system_disk_category", "cloud_essd"),
                system_disk_size=args.get("system_disk_size", 200),
                labels=[{"key": k, "value": v} for k, v in sorted(labels.items())],
                taints=[{**GPU_TAINT, "effect": "NoSchedule"}] if taint else None,
                scaling_config={"enable": True, "min_size": args["min_nodes"], "max_size": args["max_nodes"]}
                if autoscale else None,
                desired_size=None if autoscale else str(args.get("desired_nodes") or args["min_nodes"]),
                opts=child,
            )
        else:
            desired = args.get("desired_nodes")
            self.node_pool = gcp.container.NodePool(
                f"{name}-nodepool",
                name=name,
                cluster=args["cluster"],
                location=args.get("location"),
                project=args.get("project"),
                initial_node_count=desired if desired is not None else args["min_nodes"],
                autoscaling={"min_node_count": args["min_nodes"], "max_node_count": args["max_nodes"]},
                management={"auto_repair": True, "auto_upgrade": True},
                node_config={
                    "machine_type": args["machine_type"],
                    "disk_size_gb": args.get("disk_size_gb", 200),
                    "spot": args.get("spot", False),
                    "labels": labels,
                    "taints": [{**GPU_TAINT, "effect": "NO_SCHEDULE"}] if taint else None,
                    "guest_accelerators": [{
                        "type": args["gpu_type"],
                        "count": args["gpus_per_node"],
                        "gpu_driver_installation_config": {
                            "gpu_driver_version": args.get("gpu_driver_version", "LATEST"),
                        },
                    }],
                    "oauth_scopes": ["https://www.googleapis.com/auth/cloud-platform"],
                },
                opts=child,
            )
        self.register_outputs({"pool_name": name, "node_pool": self.node_pool.id})
