"""Envoy alone with a STATIC cluster over the pool: round robin (what a Kubernetes Service
gives) or least-request (Envoy's power-of-two-choices on active requests)."""
from __future__ import annotations

from .base import Router, Setup


def _addr(hostport: str) -> dict:
    host, _, port = hostport.rpartition(":")
    return {"socket_address": {"address": host, "port_value": int(port)}}


def lb_config(*, listen_port: int, admin_port: int, pool: list[str], lb_policy: str) -> dict:
    if lb_policy not in ("ROUND_ROBIN", "LEAST_REQUEST"):
        raise ValueError(f"lb_policy must be ROUND_ROBIN or LEAST_REQUEST, got {lb_policy!r}")
    hcm = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": "lb",
        "route_config": {"name": "r", "virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [
            {"match": {"prefix": "/"}, "route": {"cluster": "pool", "timeout": "300s"}}]}]},
        "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}],
    }
    return {
        "admin": {"address": _addr(f"127.0.0.1:{admin_port}")},
        "static_resources": {
            "listeners": [{"name": "lb", "address": _addr(f"127.0.0.1:{listen_port}"),
                           "per_connection_buffer_limit_bytes": 64 * 1024 * 1024,
                           "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager",
                                                           "typed_config": hcm}]}]}],
            "clusters": [{
                "name": "pool", "type": "STATIC", "lb_policy": lb_policy, "connect_timeout": "2s",
                # No circuit breaking: the default 1024-request cap would be a limit the others lack.
                "circuit_breakers": {"thresholds": [{"max_connections": 100000, "max_pending_requests": 100000,
                                                     "max_requests": 100000}]},
                "load_assignment": {"cluster_name": "pool", "endpoints": [
                    {"lb_endpoints": [{"endpoint": {"address": _addr(a)}} for a in pool]}]},
            }],
        },
    }


class EnvoyLB(Router):
    def __init__(self, lb_policy: str, name: str):
        super().__init__()
        self.lb_policy = lb_policy
        self.name = name
        self.description = f"Envoy 1.40, STATIC cluster, lb_policy {lb_policy}, 1 worker thread"

    def start(self, setup: Setup) -> str:
        return self.start_front_envoy(setup, lambda port, admin: lb_config(
            listen_port=port, admin_port=admin, pool=setup.addresses, lb_policy=self.lb_policy))
