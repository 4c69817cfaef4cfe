"""GpuNodePool: a node pool of GPU nodes, labelled and tainted for GPU workloads, declared by the
platform's plug-in (ACK `alicloud.cs.NodePool`, GKE `gcp.container.NodePool`)."""
from typing import NotRequired, TypedDict

import pulumi

from infershift import platforms

from .checks import check
from .enums import component_args

# Every node of a pool carries this label; InferenceService pods select their pool by it.
NODE_POOL_LABEL = "infershift.io/node-pool"
GPU_TAINT = {"key": "nvidia.com/gpu", "value": "present"}


class GpuNodePoolArgs(TypedDict):
    platform: str
    """A registered platform with a node-pool component (`ack`, `gke`)."""
    cluster: pulumi.Input[str]
    """ACK cluster id, or GKE cluster name (e.g. the cluster resource's output)."""
    gpu_type: str
    """`nvidia-a10` on ACK; the GKE accelerator type (e.g. `nvidia-l4`) on GKE."""
    gpus_per_node: int
    min_nodes: int
    max_nodes: int
    desired_nodes: NotRequired[int | None]
    """Fixed size when min_nodes == max_nodes (autoscaling is off); initial size on GKE."""
    labels: NotRequired[dict[str, str]]
    taint: NotRequired[bool]
    """Taint nodes `nvidia.com/gpu=present:NoSchedule` (default True)."""
    # ACK
    instance_types: NotRequired[list[str]]
    vswitch_ids: NotRequired[list[str]]
    system_disk_size: NotRequired[int]
    system_disk_category: NotRequired[str]
    scaling_type: NotRequired[str]
    """ACK scaling group instance classification (`gpu` default) when min_nodes < max_nodes."""
    # GKE
    location: NotRequired[str]
    project: NotRequired[str]
    machine_type: NotRequired[str]
    disk_size_gb: NotRequired[int]
    gpu_driver_version: NotRequired[str]
    spot: NotRequired[bool]
    zones: NotRequired[list[str]]
    """GKE `node_locations`; counts are totals across them."""


def node_labels(name: str, args: GpuNodePoolArgs) -> dict[str, str]:
    return {**args.get("labels", {}), NODE_POOL_LABEL: name}


class GpuNodePool(pulumi.ComponentResource):
    """`pool_name` is the pool's logical name (its nodes' `infershift.io/node-pool` label; the
    cloud name may carry a suffix, e.g. GKE's auto-named pools); `node_selector` selects its nodes."""

    pool_name: pulumi.Output[str]
    """The pool's logical name (its nodes' `infershift.io/node-pool` label)."""
    node_selector: pulumi.Output[dict[str, str]]
    """What an InferenceService's `node_selector` selects this pool's nodes by."""

    def __init__(self, name: str, args: GpuNodePoolArgs, opts: pulumi.ResourceOptions | None = None):
        args = component_args(args, GpuNodePoolArgs)
        check("GpuNodePool", name, args)  # before anything is declared
        super().__init__("infershift:index:GpuNodePool", name, None, opts)
        labels = node_labels(name, args)
        taint = args.get("taint", True)
        self.pool_name = pulumi.Output.from_input(name)
        self.node_selector = pulumi.Output.from_input({NODE_POOL_LABEL: name})
        plugin = platforms.get(args["platform"])
        self.node_pool = plugin.node_pool(self, name, dict(args), labels, GPU_TAINT if taint else None)
        self.register_outputs({"pool_name": name, "node_pool": self.node_pool.id})
