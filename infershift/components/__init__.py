"""infershift's Pulumi components: compose them in any Pulumi program, or run the stack program.

Exports load on first use, so importing the package does not load Pulumi.
"""
from importlib import import_module

_EXPORTS = {
    "Cluster": "cluster", "ClusterArgs": "cluster",
    "EndpointPicker": "endpoint_picker", "EndpointPickerArgs": "endpoint_picker",
    "Gateway": "gateway", "GatewayArgs": "gateway", "ListenerArgs": "gateway",
    "InferencePool": "inference_pool", "InferencePoolArgs": "inference_pool",
    "InferenceService": "inference_service", "InferenceServiceArgs": "inference_service",
    "ModelRoutingArgs": "model_routing",
    "GpuNodePool": "node_pool", "GpuNodePoolArgs": "node_pool",
    "Images": "images", "ImagesArgs": "images", "Secrets": "secrets", "SecretsArgs": "secrets",
    "CanaryRoute": "routes", "CanaryRouteArgs": "routes", "MirrorRoute": "routes", "MirrorRouteArgs": "routes",
    "MirrorTargetArgs": "routes", "PinArgs": "routes",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
