"""What a platform plug-in provides. One module per platform (`ack.py`, `gke.py`,
`kubeconfig.py`) subclasses `Platform`; `__init__.py` registers them. Nothing outside a platform's
module branches on its name: the stack spec, the checks, the Pulumi program and the render's
mocks ask the registered plug-in.

A plug-in module may import its cloud SDK only inside the methods that declare cloud resources,
so validating or rendering a stack of one platform never needs another platform's SDK.
"""
from __future__ import annotations

import importlib
from types import ModuleType
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import Field, field_validator, model_validator

from infershift.spec.base import Problem, Spec, check_name

if TYPE_CHECKING:
    import pulumi

    from infershift.spec.model import NodePoolBase, StackSpec


# Options every platform's Kubernetes provider gets (pulumi-kubernetes provider.py documents both):
# - cluster_identifier: the provider is replaced only when this changes, so a rotated CA or a
#   refreshed credential in the kubeconfig is an update, not a replacement of every object;
# - enable_config_map_mutable: ConfigMaps are updated in place rather than replaced (the picker
#   reloads its mounted config; a chat-template change rolls the pods through a hash annotation).
def k8s_provider_options(cluster_identifier: str) -> dict:
    return {"cluster_identifier": cluster_identifier, "enable_config_map_mutable": True}


def cloud_sdk(module: str, platform: str) -> ModuleType:
    """The platform's cloud SDK, or an error that says which extra installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        dist = module.replace("_", "-")
        raise ImportError(f"platform {platform!r} needs the {dist} package: pip install 'infershift[{platform}]' "
                          f"({err})") from None


class PlatformSpec(Spec):
    """The `platform:` block's keys every platform has; each plug-in narrows `kind` to its name
    (the union's tag) and adds its own block."""

    kind: str

    create_node_pools: bool = False
    """Create the GPU node pools in `nodePools` (platforms with a node-pool component only)."""
    namespace: str = "default"
    create_namespace: bool | None = None
    """Create the namespace (default: yes unless it is `default`); false: it must exist already
    (another stack created it; `pulumi up` reads it and fails if it is missing)."""
    name_prefix: str | None = Field(None, pattern=r"^[a-z][-a-z0-9]{0,19}$")
    """Several stacks in one namespace: every object name this stack declares starts with this
    (e.g. `team-a-`); model names, labels and listener names do not change."""

    @field_validator("namespace")
    @classmethod
    def _ns(cls, v: str) -> str:
        return check_name(v, "namespace")

    required_block: ClassVar[str | None] = None
    """The keys of this platform's own block (`ack:`, `gke:`), named in the error when it is
    missing; None: the block is optional."""

    @model_validator(mode="after")
    def _own_block(self) -> PlatformSpec:
        kind = getattr(self, "kind", None)
        if self.required_block and getattr(self, str(kind), None) is None:
            raise ValueError(f"kind {kind!r} needs `{kind}: {self.required_block}`")
        return self

    @model_validator(mode="before")
    @classmethod
    def _other_platforms_blocks(cls, data: Any) -> Any:
        # `platform: {kind: ack, gke: {...}}` names the other platform's block: say so, rather
        # than "unknown key".
        if isinstance(data, dict):
            from . import REGISTRY

            kind = data.get("kind")
            extra = sorted(k for k in data if k in REGISTRY and k != kind)
            if extra:
                raise ValueError(f"kind {kind!r} does not use {', '.join(extra)}")
        return data


class Platform:
    """A platform plug-in. Class attributes describe it; methods build what only it knows."""

    kind: ClassVar[str]
    spec: ClassVar[type[PlatformSpec]]
    """The `platform:` block for this kind (its `kind: Literal[...]` is the union's tag)."""
    node_pool_block: ClassVar[type[Spec] | None] = None
    """The `nodePools.<name>.<kind>:` block; None when the platform creates no node pools."""
    pool_api_versions: ClassVar[frozenset[str]] = frozenset({"v1", "v1alpha2"})
    """InferencePool API versions the platform's gateway serves."""
    gateway_class: ClassVar[str] = "inference-gateway"
    """Default GatewayClass name."""
    creates_gateway_class: ClassVar[bool] = True
    """Whether the stack declares the GatewayClass (False when the platform provides it)."""
    envoy_gateway: ClassVar[bool] = True
    """The gateway is Envoy Gateway (its policies, its proxies as the picker's peers)."""
    pool_policies: ClassVar[bool] = False
    """Render GKE's HealthCheckPolicy / GCPBackendPolicy next to each pool."""
    mirror_to_pool: ClassVar[bool] = True
    """The gateway can mirror to an InferencePool (not only to a Service)."""
    local_endpoints: ClassVar[bool] = False
    """Services may name external `endpoints` (the local stack's real servers)."""
    managed_picker: ClassVar[bool] = False
    """The platform can run a pool's picker itself (`picker.mode: managed`)."""

    # --- the spec -------------------------------------------------------------------------

    def node_pool_problems(self, path: str, pool: NodePoolBase, block: Any, spec: StackSpec) -> list[Problem]:
        """Checks of one node pool against this platform (block: its `<kind>:` block); sizes
        matter only when the stack creates its node pools (`spec.platform.create_node_pools`)."""
        return []

    def warnings(self, spec: StackSpec) -> list[Problem]:
        return []

    def stack_problems(self, spec: StackSpec) -> list[Problem]:
        """Rules of this platform that involve the whole stack (picker modes and the like)."""
        return []

    # --- the Kubernetes objects -----------------------------------------------------------

    def cluster_objects(self, spec: StackSpec) -> list[dict]:
        """Patches of objects the platform owns (declared as pulumi-kubernetes `...Patch` resources,
        server-side apply): e.g. ACK's add-on controller switched to self-hosted pickers."""
        return []

    # --- the Pulumi program ---------------------------------------------------------------

    def cluster_args(self, platform: PlatformSpec) -> dict:
        """The Cluster component's args for this platform's `platform:` block."""
        return {"platform": self.kind}

    def providers(self, parent: pulumi.Resource, name: str, args: dict
                  ) -> tuple[pulumi.ProviderResource, pulumi.ProviderResource | None]:
        """(the Kubernetes provider, the cloud provider or None) for the Cluster component."""
        raise NotImplementedError

    def node_pool_args(self, platform: PlatformSpec, block: Any) -> dict:
        """The GpuNodePool component's platform-specific args from the node pool's block."""
        raise ValueError(f"platform {self.kind!r} creates no node pools")

    def node_pool(self, parent: pulumi.Resource, name: str, args: dict, labels: dict[str, str],
                  taint: dict | None) -> pulumi.CustomResource:
        """Declare the cloud node pool (child of `parent`); `taint` is the GPU taint or None."""
        raise ValueError(f"platform {self.kind!r} creates no node pools")

    # --- the offline render ---------------------------------------------------------------

    def mock_call(self, token: str, args: dict) -> dict | None:
        """The render's answer to an invoke this platform's components make; None: not ours."""
        return None
