"""`envoy --mode validate` on a generated config: every config is checked before use
(infershift.envoy does the work; this adds the YAML form devstack writes)."""
from __future__ import annotations

import yaml

from infershift.envoy import EnvoyConfigError, binary, validate

__all__ = ["EnvoyConfigError", "dump", "envoy_binary", "validate"]


def envoy_binary() -> str:
    return binary()


def dump(config: dict) -> str:
    return yaml.safe_dump(config, sort_keys=False, default_flow_style=False)
