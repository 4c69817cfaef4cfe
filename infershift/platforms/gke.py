"""Google GKE: a cluster found by project/location/name (auth by gke-gcloud-auth-plugin), GPU
node pools, and GKE's managed Inference Gateway (its GatewayClasses, HealthCheckPolicy and
GCPBackendPolicy per pool)."""
from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field

from infershift.spec.base import Problem, Spec

from .base import Platform, PlatformSpec, cloud_sdk, k8s_provider_options

if TYPE_CHECKING:
    import pulumi

    from infershift.spec.model import NodePoolBase, StackSpec

_REGION = re.compile(r"^[a-z]+-[a-z]+[0-9]+$")  # us-central1; a zone adds "-a"


def is_region(location: str) -> bool:
    return bool(_REGION.match(location))

# GKE accelerator machine types with a fixed GPU count (A3/A2/G2 families).
MACHINE_GPUS: dict[str, int] = {
    "g2-standard-4": 1,
    "g2-standard-8": 1,
    "g2-standard-12": 1,
    "g2-standard-16": 1,
    "g2-standard-24": 2,
    "g2-standard-32": 1,
    "g2-standard-48": 4,
    "g2-standard-96": 8,
    "a2-highgpu-1g": 1,
    "a2-highgpu-2g": 2,
    "a2-highgpu-4g": 4,
    "a2-highgpu-8g": 8,
    "a3-highgpu-1g": 1,
    "a3-highgpu-2g": 2,
    "a3-highgpu-4g": 4,
    "a3-highgpu-8g": 8,
}

CLUSTER_INVOKE = "gcp:container/getCluster:getCluster"
# A syntactically valid, obviously fake CA for the render's kubeconfig.
MOCK_CA = "TU9DSy1DQQ=="


class GkeCluster(Spec):
    project: str = Field(min_length=1)
    location: str = Field(min_length=1)
    """Region or zone of the cluster, e.g. `us-central1`."""
    cluster: str = Field(min_length=1)


class GkePlatform(PlatformSpec):
    kind: Literal["gke"]
    gke: GkeCluster | None = None
    required_block: ClassVar[str | None] = "{project, location, cluster}"


class GkeNodePool(Spec):
    machine_type: str = Field(min_length=1)
    """e.g. `g2-standard-8` (L4) or `a3-highgpu-8g` (H100)."""
    disk_size_gb: int = Field(200, ge=10)
    gpu_driver_version: Literal["DEFAULT", "LATEST", "INSTALLATION_DISABLED"] = "LATEST"
    spot: bool = False
    zones: list[str] = []
    """The zones the pool's nodes run in (`node_locations`). Required when the cluster's location
    is a region: GKE would otherwise put the pool in each of the region's zones and multiply
    every count by their number. minNodes/maxNodes count the whole pool across the zones."""


def kubeconfig(name: str, endpoint: str, ca: str) -> str:
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


class Gke(Platform):
    kind = "gke"
    spec = GkePlatform
    node_pool_block = GkeNodePool
    # GKE Inference Gateway serves the GA API only.
    pool_api_versions = frozenset({"v1"})
    gateway_class = "gke-l7-regional-external-managed"
    creates_gateway_class = False
    envoy_gateway = False
    pool_policies = True
    mirror_to_pool = False

    def node_pool_problems(self, path: str, pool: NodePoolBase, block: Any, spec: StackSpec) -> list[Problem]:
        if block is None:
            return [Problem(path, "a GKE node pool needs `gke: {machineType}`")]
        out = []
        known = MACHINE_GPUS.get(block.machine_type)
        if known is not None and known != pool.gpus_per_node:
            out.append(Problem(f"{path}.gke.machineType",
                               f"{block.machine_type} has {known} GPU(s) per node but gpusPerNode is {pool.gpus_per_node}"))
        location = spec.platform.gke.location  # type: ignore[attr-defined]
        for i, zone in enumerate(block.zones):
            if not zone.startswith(location if is_region(location) else location[:-2]):
                out.append(Problem(f"{path}.gke.zones[{i}]", f"{zone!r} is not a zone of the cluster's location {location!r}"))
        if not spec.platform.create_node_pools:
            return out
        if is_region(location) and not block.zones:
            out.append(Problem(f"{path}.gke.zones", (
                f"the cluster's location {location!r} is a region: name the zones of this pool (e.g. "
                f"[{location}-a]); without them GKE creates the pool in every zone of the region and each count "
                "applies per zone")))
        zones = len(block.zones) or 1
        if pool.min_nodes == pool.max_nodes and pool.min_nodes % zones:
            out.append(Problem(f"{path}.minNodes", (
                f"a fixed-size pool of {pool.min_nodes} node(s) cannot be spread evenly over {zones} zones "
                f"(GKE sizes fixed pools per zone): use a multiple of {zones}")))
        return out

    def warnings(self, spec: StackSpec) -> list[Problem]:
        if spec.gateway.proxy_subnets:
            return []
        return [Problem("gateway.proxySubnets",
                        "not set: the endpoint pickers' NetworkPolicy admits port 9002 from any address; "
                        "set the region's proxy-only subnet CIDR")]

    def cluster_args(self, platform: Any) -> dict:
        return {"platform": "gke", "gke_project": platform.gke.project, "gke_location": platform.gke.location,
                "gke_cluster": platform.gke.cluster}

    def providers(self, parent: pulumi.Resource, name: str, args: dict):
        import pulumi
        import pulumi_kubernetes as k8s

        gcp = cloud_sdk("pulumi_gcp", self.kind)
        child = pulumi.ResourceOptions(parent=parent)
        cloud = gcp.Provider(f"{name}-gcp", project=args["gke_project"], opts=child)
        info = gcp.container.get_cluster_output(
            name=args["gke_cluster"], location=args["gke_location"], project=args["gke_project"],
            opts=pulumi.InvokeOutputOptions(parent=parent, provider=cloud),
        )
        context = f"gke_{args['gke_project']}_{args['gke_location']}_{args['gke_cluster']}"
        config = pulumi.Output.all(info.endpoint, info.master_auths).apply(
            lambda v: kubeconfig(context, v[0], _ca_certificate(v[1][0])))
        return k8s.Provider(f"{name}-provider", kubeconfig=config, opts=child,
                            **k8s_provider_options(context)), cloud

    def node_pool_args(self, platform: Any, block: Any) -> dict:
        return {"cluster": platform.gke.cluster, "location": platform.gke.location, "project": platform.gke.project,
                "machine_type": block.machine_type, "disk_size_gb": block.disk_size_gb,
                "gpu_driver_version": block.gpu_driver_version, "spot": block.spot, "zones": list(block.zones)}

    def node_pool(self, parent: pulumi.Resource, name: str, args: dict, labels: dict[str, str],
                  taint: dict | None):
        import pulumi

        gcp = cloud_sdk("pulumi_gcp", self.kind)

        # Counts given per zone by GKE's API are totals here: autoscaling limits are total_*, and a
        # fixed size is split over the zones. initial_node_count forces a new pool when it
        # changes (google provider: ForceNew), so it is set once and then ignored; the pool's
        # name is left to Pulumi's auto-naming (`<name>-<suffix>`), so a change that does need a
        # new pool (machine type, accelerators) creates it before deleting the old one.
        zones = list(args.get("zones") or [])
        per_zone = max(1, len(zones))
        autoscale = args["min_nodes"] < args["max_nodes"]
        desired = args.get("desired_nodes")
        start = desired if desired is not None else args["min_nodes"]
        sizing: dict = {"initial_node_count": -(-start // per_zone)}
        if autoscale:
            sizing["autoscaling"] = {"total_min_node_count": args["min_nodes"],
                                     "total_max_node_count": args["max_nodes"], "location_policy": "ANY"}
        else:
            sizing = {"node_count": args["min_nodes"] // per_zone}
        return gcp.container.NodePool(
            f"{name}-nodepool",
            cluster=args["cluster"],
            location=args.get("location"),
            project=args.get("project"),
            node_locations=zones or None,
            **sizing,
            management={"auto_repair": True, "auto_upgrade": True},
            node_config={
                "machine_type": args["machine_type"],
                "disk_size_gb": args.get("disk_size_gb", 200),
                "spot": args.get("spot", False),
                "labels": labels,
                "taints": [{**taint, "effect": "NO_SCHEDULE"}] if taint else None,
                "guest_accelerators": [{
                    "type": args["gpu_type"],
                    "count": args["gpus_per_node"],
                    "gpu_driver_installation_config": {
                        "gpu_driver_version": args.get("gpu_driver_version", "LATEST"),
                    },
                }],
                "oauth_scopes": ["https://www.googleapis.com/auth/cloud-platform"],
            },
            opts=pulumi.ResourceOptions(parent=parent, ignore_changes=["initialNodeCount"]),
        )

    def mock_call(self, token: str, args: dict) -> dict | None:
        if token != CLUSTER_INVOKE:
            return None
        return {"name": args.get("name"), "location": args.get("location"), "project": args.get("project"),
                "endpoint": "192.0.2.10", "masterAuths": [{"clusterCaCertificate": MOCK_CA}]}


PLUGIN = Gke()
