"""infershift: real Envoy with ext_proc to one endpoint picker (its default scheduling profile,
or a named variant), in the gateway shape picker/envoy_config.py builds for the local stack."""
from __future__ import annotations

import yaml

from infershift.picker.envoy_config import gateway_config

from ..procs import PICKER_PY, Proc, free_port, http_ok
from .base import Router, Setup

_NO_LIMITS = {"thresholds": [{"max_connections": 100000, "max_pending_requests": 100000,
                              "max_requests": 100000}]}

# Variants worth showing next to the default profile (None = the picker's built-in default).
VARIANTS: dict[str, dict | None] = {
    "default": None,
    # Load only: what the picker does with prefix-cache awareness turned off.
    "load-only": {
        "plugins": [{"type": "model-filter"},
                    {"type": "saturation-filter", "parameters": {"queueDepthThreshold": 5, "kvCacheThreshold": 0.8}},
                    {"type": "queue-scorer"}, {"type": "kv-cache-scorer"}, {"type": "lora-affinity-scorer"},
                    {"type": "max-score-picker"}],
        "profile": {"filters": ["model-filter", "saturation-filter"],
                    "scorers": [{"plugin": "queue-scorer", "weight": 2}, {"plugin": "kv-cache-scorer", "weight": 2},
                                {"plugin": "lora-affinity-scorer", "weight": 1}],
                    "picker": "max-score-picker"},
    },
}


def picker_config(setup: Setup, scheduling: dict | None) -> dict:
    cfg: dict = {
        "pool": {"name": "bench", "namespace": "default"},
        "endpoints": [{"address": a, "name": f"ep{i}"} for i, a in enumerate(setup.addresses)],
        "models": {name: {"criticality": crit, "targets": [{"model": setup.base_model, "weight": 1}]}
                   for name, crit in setup.classes.items()},
    }
    if scheduling is not None:
        cfg["scheduling"] = scheduling
    return cfg


def envoy_config(*, listen_port: int, admin_port: int, picker_port: int, pool: list[str], **gateway) -> dict:
    """`gateway`: further gateway_config options (the upstream-epp router's ext_proc shape)."""
    cfg = gateway_config(listen_port=listen_port, admin_port=admin_port, picker_port=picker_port, pool=pool,
                         **gateway)
    # Same generous route timeout and no circuit breaking as the plain Envoy baselines.
    for vh in cfg["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"][
            "route_config"]["virtual_hosts"]:
        for r in vh["routes"]:
            r["route"]["timeout"] = "300s"
    for c in cfg["static_resources"]["clusters"]:
        if c["name"] in ("pool", "pool_fallback"):
            c["circuit_breakers"] = _NO_LIMITS
    return cfg


class Infershift(Router):
    def __init__(self, variant: str = "default"):
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"unknown infershift variant {variant!r}; choose one of {', '.join(VARIANTS)}")
        self.variant = variant
        self.name = "infershift" if variant == "default" else f"infershift-{variant}"
        self.picker_process = f"{self.name}-picker"
        self.description = (f"Envoy 1.40 + ext_proc endpoint picker ({variant} scheduling profile), "
                            "1 Envoy worker thread, 1 picker process")

    def start(self, setup: Setup) -> str:
        grpc, health, metrics = free_port(), free_port(), free_port()
        pcfg = setup.workdir / f"{self.name}-picker.yaml"
        pcfg.write_text(yaml.safe_dump(picker_config(setup, VARIANTS[self.variant]), sort_keys=False))
        picker = Proc(f"{self.name}-picker",
                      [str(PICKER_PY), "-m", "infershift.picker", "--config", str(pcfg), "--grpc-port", str(grpc),
                       "--health-port", str(health), "--metrics-port", str(metrics), "--log-level", "warning",
                       "--seed", "0"],
                      setup.workdir / f"{self.name}-picker.log")
        self.procs.append(picker)
        picker.wait_for(lambda: http_ok(f"http://127.0.0.1:{metrics}/metrics"), 60, "serving metrics")
        return self.start_front_envoy(setup, lambda port, admin: envoy_config(
            listen_port=port, admin_port=admin, picker_port=grpc, pool=setup.addresses))
