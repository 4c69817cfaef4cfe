"""Validate rendered objects: custom resources against the upstream CRDs' served-version
openAPIV3Schema (../shared/crds) and its CEL rules, core objects with kubernetes-validate."""
from __future__ import annotations

import copy
import os
from functools import lru_cache
from pathlib import Path

import jsonschema
import kubernetes_validate
import yaml

REPO = Path(__file__).resolve().parents[2]
CRDS_DIR = Path(os.environ.get("INFERSHIFT_CRDS", REPO.parent / "shared" / "crds"))
K8S_VERSION = kubernetes_validate.latest_version()
# kubernetes-validate re-reads its JSON schema files on every call; read each once (read-only use).
kubernetes_validate.utils.schema_contents = lru_cache(maxsize=None)(kubernetes_validate.utils.schema_contents)
# Kinds with no public CRD here (GKE's): checked by hand-picked assertions instead.
NO_CRD = {("networking.gke.io/v1", "HealthCheckPolicy"), ("networking.gke.io/v1", "GCPBackendPolicy")}


def _strict(schema: dict) -> dict:
    """Reject unknown fields as the API server's strict field validation does: every object
    schema with properties and no additionalProperties / preserve-unknown-fields gets
    additionalProperties: false. Kubernetes' x-kubernetes-* keywords are ignored by jsonschema
    except int-or-string, which has no type and so accepts both already."""
    schema = copy.deepcopy(schema)

    def walk(node):
        if isinstance(node, dict):
            if ("properties" in node and "additionalProperties" not in node
                    and not node.get("x-kubernetes-preserve-unknown-fields")):
                node["additionalProperties"] = False
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(schema)
    # metadata is validated by the API server's ObjectMeta, not by the CRD schema.
    schema.get("properties", {}).get("metadata", {}).pop("additionalProperties", None)
    return schema


@lru_cache(maxsize=None)
def crd_schemas() -> dict[tuple[str, str], dict]:
    """(apiVersion, kind) -> strict openAPIV3Schema of every served version."""
    out = {}
    for path in sorted(CRDS_DIR.glob("*/*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if not doc or doc.get("kind") != "CustomResourceDefinition":
                continue
            group, kind = doc["spec"]["group"], doc["spec"]["names"]["kind"]
            for version in doc["spec"]["versions"]:
                if version.get("served"):
                    out[(f"{group}/{version['name']}", kind)] = _strict(version["schema"]["openAPIV3Schema"])
    return out


def cel_available() -> bool:
    try:
        import celpy  # noqa: F401  (cel-python, a test dependency)
    except ImportError:
        return False
    return True


@lru_cache(maxsize=None)
def _validator(key: tuple[str, str]) -> jsonschema.Draft7Validator:
    return jsonschema.Draft7Validator(crd_schemas()[key])


def crd_errors(obj: dict) -> list[str]:
    key = (obj["apiVersion"], obj["kind"])
    schema = crd_schemas()[key]
    validator = _validator(key)
    errors = [f"{'.'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}" for e in validator.iter_errors(obj)]
    if not errors and cel_available():
        from k8s_cel import cel_errors

        errors = cel_errors(schema, obj)
    return errors


def is_custom(obj: dict) -> bool:
    group = obj["apiVersion"].rpartition("/")[0]
    return "." in group and not group.endswith(".k8s.io") or group.endswith("x-k8s.io") or group in (
        "gateway.networking.k8s.io", "inference.networking.k8s.io")


def validate(obj: dict) -> list[str]:
    """Problems with one rendered object; empty when it is valid."""
    key = (obj["apiVersion"], obj["kind"])
    if key in NO_CRD:
        return []
    if key in crd_schemas():
        return crd_errors(obj)
    if is_custom(obj):
        return [f"no CRD for {key} under {CRDS_DIR}"]
    try:
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
    except kubernetes_validate.ValidationError as err:
        return [f"{'.'.join(map(str, err.path))}: {err.message}"]
    return []
