"""Platform plug-ins, one module each; `REGISTRY` is the only list of them.

Adding a platform: a new module with a `Platform` subclass (its `platform:` block, node-pool
block, checks, GPU table, cluster and node-pool resources, gateway defaults, render mocks) and
one entry below. The stack spec's `platform:` is a union tagged by `kind` over these, so an
unknown kind is an error, never another platform's branch.
"""
from __future__ import annotations

from . import ack, gke, kubeconfig
from .base import Platform, PlatformSpec

REGISTRY: dict[str, Platform] = {p.kind: p for p in (ack.PLUGIN, gke.PLUGIN, kubeconfig.PLUGIN)}


def get(kind: str) -> Platform:
    try:
        return REGISTRY[kind]
    except KeyError:
        raise ValueError(f"unknown platform {kind!r} (platforms: {', '.join(sorted(REGISTRY))})") from None


__all__ = ["REGISTRY", "Platform", "PlatformSpec", "get"]
