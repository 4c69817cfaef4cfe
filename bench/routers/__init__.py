"""Router launchers: every router the bench compares, by name."""
from __future__ import annotations

from .base import Router, Setup, wait_serving
from .envoy_lb import EnvoyLB
from .infershift import Infershift
from .omniscient import OmniscientRouter
from .rust_routers import RustRouter
from .upstream_epp import UpstreamEPP

FACTORIES = {
    "envoy-rr": lambda: EnvoyLB("ROUND_ROBIN", "envoy-rr"),
    "envoy-lr": lambda: EnvoyLB("LEAST_REQUEST", "envoy-lr"),
    "infershift": lambda: Infershift("default"),
    "infershift-load-only": lambda: Infershift("load-only"),
    "upstream-epp": UpstreamEPP,
    "sglang-cache-aware": lambda: RustRouter("sglang", "cache_aware"),
    "sglang-power-of-two": lambda: RustRouter("sglang", "power_of_two"),
    "vllm-cache-aware": lambda: RustRouter("vllm", "cache_aware"),
    "vllm-power-of-two": lambda: RustRouter("vllm", "power_of_two"),
    # Not in the plan: without a session key every request shares one "session", so it pins the
    # whole load on one worker (seen in the first full run); kept to reproduce that.
    "vllm-sticky-least-loaded": lambda: RustRouter("vllm", "sticky_least_loaded"),
    "omniscient": OmniscientRouter,
}


def make(name: str) -> Router:
    try:
        return FACTORIES[name]()
    except KeyError:
        raise ValueError(f"unknown router {name!r}; choose from {', '.join(FACTORIES)}") from None


__all__ = ["FACTORIES", "Router", "Setup", "make", "wait_serving"]
