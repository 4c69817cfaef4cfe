"""Bring your own cluster: a base-model canary composed from infershift's components.

A stable and a canary model server, one InferencePool (with its endpoint picker) each, and an
HTTPRoute splitting traffic between the pools on a Gateway the cluster already has. No stack
config schema: plain Pulumi config of this project.

    pulumi config set canaryWeight 25      # share of requests for the canary pool
    pulumi config set simulated true       # GPU-less cluster: the project's simulator
    pulumi config set registry localhost:5001/infershift   # build + push the picker/simulator images
    pulumi up                              # (or name them: pickerImage, simImage)
"""
import pulumi
import pulumi_kubernetes as k8s

from infershift.components import CanaryRoute, Images, InferencePool, InferenceService
from infershift.components.gateway import envoy_proxy_peers


def main() -> dict:
    config = pulumi.Config()
    namespace = config.get("namespace") or "default"
    gateway = config.get("gateway") or "inference-gateway"
    weight = config.get_int("canaryWeight")
    weight = 10 if weight is None else weight
    simulated = config.get_bool("simulated") or False

    provider = k8s.Provider("cluster", context=config.get("context"))
    opts = pulumi.ResourceOptions(providers=[provider])
    registry = config.get("registry")
    if registry:  # built from this package's Dockerfiles and pushed; referenced by digest
        wanted = ["picker", "sim"] if simulated else ["picker"]
        refs = Images("images", {"registry": registry, "images": wanted, "tag": "0.1.0"}).refs
        picker_image, sim_image = refs["picker"], refs.get("sim")
    else:
        picker_image, sim_image = config.require("pickerImage"), config.get("simImage")

    models = {
        "stable": ("Qwen/Qwen2.5-7B-Instruct", "qwen/travel-helper-v1"),
        "canary": ("Qwen/Qwen3-8B", "qwen3/travel-helper-v1"),
    }
    pools = {}  # track -> the pool's name (what the route's backends name)
    for track, (model, adapter) in models.items():
        labels = {"app": "chat", "track": track}
        InferenceService(f"chat-{track}", {
            "model": model, "served_model_name": "chat", "namespace": namespace, "labels": labels,
            "replicas": 2, "max_model_len": 8192, "lora_modules": {"travel-helper": f"/adapters/{adapter}"},
            "max_loras": 2, "simulated": simulated, "sim_image": sim_image,
        }, opts)
        pools[track] = f"chat-{track}"
        InferencePool(pools[track], {
            "selector": labels, "namespace": namespace, "api_version": "v1",
            "models": {"chat": {"criticality": "Critical"}, "travel-helper": {"criticality": "Standard"}},
            "gateway_peers": envoy_proxy_peers(gateway, namespace), "picker_image": picker_image,
        }, opts)

    route = CanaryRoute("chat", {
        "gateway": gateway, "namespace": namespace, "paths": ["/v1/completions", "/v1/chat/completions"],
        "backends": {pools["stable"]: 100 - weight, pools["canary"]: weight},
        "pins": [{"header": "x-canary", "value": "true", "backend": pools["canary"]}],
    }, opts)

    exports = {"route": route.route_name, "pools": list(pools.values())}
    for key, value in exports.items():
        pulumi.export(key, value)
    return exports


if __name__ == "__main__":
    main()
