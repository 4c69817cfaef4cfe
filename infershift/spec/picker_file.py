"""A pool's endpoint-picker config (the format picker/README.md documents), from the spec.

The Pulumi program puts it in the pool's ConfigMap: endpoints and model routing then come
from the cluster (pods, InferenceModel / InferenceObjective + InferenceModelRewrite), so a
weight change touches only those objects, never the picker's ConfigMap or Deployment.
The local stack writes it to a file with a static endpoint list and the model routing.
"""
from __future__ import annotations

from infershift import contract

from .base import quantity_bytes
from .model import StackSpec


def picker_config(spec: StackSpec, pool_name: str, endpoints: list[dict] | None = None) -> dict:
    pool = spec.pools[pool_name]
    config: dict = {
        "pool": {"name": pool_name, "namespace": spec.platform.namespace},
        "failureMode": pool.failure_mode,
        "limits": {"maxBodyBytes": quantity_bytes(pool.picker.max_body_size)},
        "metrics": {"pollInterval": pool.picker.poll_interval, "staleAfter": pool.picker.stale_after},
        "telemetry": {"responseSampleRate": pool.picker.response_sample_rate},
        "responseModel": pool.picker.response_model,
    }
    if pool.picker.answer_log:
        config["answerLog"] = {"enabled": True}
    if pool.picker.session_header:
        config["sessionHeader"] = pool.picker.session_header
    if pool.picker.scheduling:
        config["scheduling"] = pool.picker.scheduling
    if endpoints is None:
        version = f"{contract.POOL_GROUPS[pool.api_version]}/{pool.api_version}"
        config["kubernetes"] = {"poolApiVersion": version}
        return config
    config["endpoints"] = endpoints
    config["models"] = {
        model: {
            "criticality": routing.effective_criticality,
            **({"priority": routing.priority} if routing.priority is not None else {}),
            # No targets: the model is served under its own name (an objective only).
            "targets": [{"model": t, "weight": w} for t, w in (routing.targets or {model: 100}).items()],
        }
        for model, routing in pool.models.items()
    }
    return config
