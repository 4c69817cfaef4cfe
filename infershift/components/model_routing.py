"""A pool's model routing objects: client model name -> weighted target models / LoRA adapters.

v1alpha2: one InferenceModel per client model name (modelName, criticality, targetModels).
v1: one llm-d.ai InferenceObjective (priority) and, when the model has targets, one
InferenceModelRewrite (the body's `model` rewritten by weight) per client model name.
Each object holds one model's weights, so a weight change touches only that object.
"""
from typing import NotRequired, TypedDict

from infershift import contract

from .api import LLMD_API, pool_api_version, pool_ref
from .enums import Criticality
from .naming import dns_label

# Criticality <-> priority (llm-d's InferenceObjective has priority only).
CRITICALITY_PRIORITY = contract.CRITICALITY_PRIORITY
MODEL_ANNOTATION = contract.MODEL_NAME_ANNOTATION


class ModelRoutingArgs(TypedDict):
    targets: NotRequired[dict[str, int]]
    """Target model (base model or LoRA adapter) -> weight. Empty: served under its own name."""
    criticality: NotRequired[Criticality | None]
    """Critical, Standard or Sheddable (v1 pools: priority 1 / 0 / -1); give this or `priority`."""
    priority: NotRequired[int | None]
    """The InferenceObjective priority (higher is more important); give this or `criticality`."""


def object_name(pool: str, model: str) -> str:
    return dns_label(pool, model)


def _live_targets(routing: ModelRoutingArgs) -> list[tuple[str, int]]:
    # The CRDs require weight >= 1: a 0-weight target is left out rather than rejected.
    return [(t, w) for t, w in (routing.get("targets") or {}).items() if w > 0]


def _criticality(routing: ModelRoutingArgs) -> str:
    criticality = routing.get("criticality")
    if criticality:
        return str(criticality.value if isinstance(criticality, Criticality) else criticality)
    priority = routing.get("priority")
    if priority is None:
        return "Standard"
    return contract.criticality_of(priority)


def _priority(routing: ModelRoutingArgs) -> int:
    priority = routing.get("priority")
    if priority is not None:
        return priority
    criticality = routing.get("criticality") or "Standard"
    return CRITICALITY_PRIORITY[criticality.value if isinstance(criticality, Criticality) else criticality]


def manifests(pool: str, version: str, namespace: str, models: dict[str, ModelRoutingArgs]) -> list[dict]:
    out = []
    for model, routing in models.items():
        name = object_name(pool, model)
        meta = {"name": name, "namespace": namespace, "annotations": {MODEL_ANNOTATION: model}}
        targets = _live_targets(routing)
        if version == "v1alpha2":
            spec: dict = {"modelName": model, "criticality": _criticality(routing),
                          "poolRef": pool_ref(version, pool)}
            if targets:
                spec["targetModels"] = [{"name": t, "weight": w} for t, w in targets]
            out.append({"apiVersion": pool_api_version(version), "kind": "InferenceModel",
                        "metadata": meta, "spec": spec})
            continue
        out.append({"apiVersion": LLMD_API, "kind": "InferenceObjective", "metadata": meta,
                    "spec": {"priority": _priority(routing), "poolRef": pool_ref(version, pool)}})
        if targets:
            out.append({"apiVersion": LLMD_API, "kind": "InferenceModelRewrite", "metadata": meta, "spec": {
                "poolRef": pool_ref(version, pool),
                "rules": [{
                    "matches": [{"model": {"type": "Exact", "value": model}}],
                    "targets": [{"modelRewrite": t, "weight": w} for t, w in targets],
                }],
            }})
    return out


