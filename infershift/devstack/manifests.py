"""Kubernetes objects in: multi-document YAML files or folders (as `kubectl apply -f` reads them),
or a stack rendered by the same pure manifest builders the Pulumi components use.

Whatever the source, the local stack runs from the resulting list of plain objects, so what it
serves is a translation of what a cluster gets, not a second reading of the stack file.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from infershift.spec import strict_yaml


class ManifestError(ValueError):
    """A manifest that cannot be read (names the file and the document)."""


@dataclass
class Objects:
    """Objects in apply order: a later object of the same kind, namespace and name replaced an
    earlier one in place, as `kubectl apply` does."""

    items: list[dict]
    sources: list[str] = field(default_factory=list)
    """Where each object came from ("file.yaml#3"), parallel to `items`."""
    warnings: list[str] = field(default_factory=list)
    """What the source said about the objects (the render's routing warnings)."""


def key(obj: dict) -> tuple[str, str, str, str]:
    """(API group, kind, namespace, name): what `kubectl apply` identifies an object by."""
    group = str(obj.get("apiVersion", "")).rpartition("/")[0]
    meta = obj.get("metadata") or {}
    return group, str(obj.get("kind", "")), str(meta.get("namespace") or "default"), str(meta.get("name", ""))


def _files(path: Path) -> list[Path]:
    if path.is_dir():
        return sorted(p for p in path.rglob("*") if p.suffix in (".yaml", ".yml", ".json") and p.is_file())
    if not path.exists():
        raise ManifestError(f"{path}: no such file or directory")
    return [path]


def _documents(path: Path) -> list[tuple[str, dict]]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ManifestError(f"{path}: cannot read: {e}") from None
    out = []
    try:
        for i, doc in enumerate(strict_yaml.load_all(text), 1):
            if doc is None:
                continue
            where = f"{path}#{i}"
            if not isinstance(doc, dict):
                raise ManifestError(f"{where}: expected a Kubernetes object (a mapping), got {type(doc).__name__}")
            if doc.get("kind") == "List" and isinstance(doc.get("items"), list):
                out += [(f"{where}.items[{j}]", item) for j, item in enumerate(doc["items"])]
            else:
                out.append((where, doc))
    except yaml.YAMLError as e:
        raise ManifestError(f"{path}: not valid YAML: {e}") from None
    return out


def load(paths: Sequence[str | Path]) -> Objects:
    """Every object of the files and folders, in order; later same-named objects replace earlier."""
    index: dict[tuple, int] = {}
    objs = Objects([], [])
    for raw in paths:
        for path in _files(Path(raw)):
            for where, doc in _documents(path):
                for field_name in ("apiVersion", "kind"):
                    if not isinstance(doc.get(field_name), str) or not doc[field_name]:
                        raise ManifestError(f"{where}: {field_name} is missing")
                if not isinstance((doc.get("metadata") or {}).get("name"), str):
                    raise ManifestError(f"{where}: metadata.name is missing ({doc['kind']})")
                k = key(doc)
                if k in index:
                    objs.items[index[k]] = doc
                    objs.sources[index[k]] = where
                else:
                    index[k] = len(objs.items)
                    objs.items.append(doc)
                    objs.sources.append(where)
    if not objs.items:
        raise ManifestError(f"no Kubernetes objects in {', '.join(str(p) for p in paths)}")
    return objs


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def render_stack_file(path: Path) -> Objects:
    """The stack's Kubernetes objects, rendered by the Pulumi program under Pulumi's mock runtime
    (the components' own manifest builders), with the program's warnings."""
    from infershift import spec
    from infershift.components import render

    spec.load_file(path)  # the validation message, before the runtime starts
    document = strict_yaml.load(path.read_text(encoding="utf-8"))
    collect = _Collect()
    render.LOG.addHandler(collect)
    try:
        result = render.render_values(spec.config_values(document), stack=stack_name(path),
                                      secret_keys=spec.secret_config_keys(document))
    finally:
        render.LOG.removeHandler(collect)
    # Pulumi registers resources from worker threads, so the render's order varies between runs;
    # objects go in `kubectl apply`'s usual order instead (kind, then namespace and name).
    items = sorted(result.objects, key=apply_order)
    return Objects(items, [f"{path.name} (rendered)"] * len(items), collect.messages)


KIND_ORDER = ("Namespace", "ServiceAccount", "Role", "RoleBinding", "ConfigMap", "Secret", "Service",
              "Deployment", "NetworkPolicy", "GatewayClass", "EnvoyProxy", "Gateway", "ClientTrafficPolicy",
              "BackendTrafficPolicy", "InferencePool", "InferenceModel", "InferenceObjective",
              "InferenceModelRewrite", "HTTPRoute")


def apply_order(obj: dict) -> tuple:
    kind = str(obj.get("kind", ""))
    rank = KIND_ORDER.index(kind) if kind in KIND_ORDER else len(KIND_ORDER)
    _, _, namespace, name = key(obj)
    return rank, kind, namespace, name


def stack_name(path: Path) -> str:
    name = path.name
    for prefix, suffix in (("Pulumi.", ".yaml"), ("Pulumi.", ".yml")):
        if name.startswith(prefix) and name.endswith(suffix):
            return name[len(prefix):-len(suffix)]
    return path.stem
