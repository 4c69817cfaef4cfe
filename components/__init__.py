"""infershift's Pulumi components: compose them in any Pulumi program, or run the stack program."""
from .cluster import Cluster, ClusterArgs
from .endpoint_picker import EndpointPicker, EndpointPickerArgs
from .gateway import Gateway, GatewayArgs, ListenerArgs
from .inference_pool import InferencePool, InferencePoolArgs
from .inference_service import InferenceService, InferenceServiceArgs
from .model_routing import ModelRoutingArgs
from .node_pool import GpuNodePool, GpuNodePoolArgs
from .routes import CanaryRoute, CanaryRouteArgs, MirrorRoute, MirrorRouteArgs, MirrorTargetArgs, PinArgs

__all__ = [
    "Cluster", "ClusterArgs", "EndpointPicker", "EndpointPickerArgs", "Gateway", "GatewayArgs", "ListenerArgs",
    "InferencePool", "InferencePoolArgs", "InferenceService", "InferenceServiceArgs", "ModelRoutingArgs",
    "GpuNodePool", "GpuNodePoolArgs", "CanaryRoute", "CanaryRouteArgs", "MirrorRoute", "MirrorRouteArgs",
    "MirrorTargetArgs", "PinArgs",
]
