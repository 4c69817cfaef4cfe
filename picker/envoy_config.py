"""Envoy bootstrap configured like a gateway in front of an InferencePool (used by tests and the benchmark).

Shape (what Envoy Gateway / GIE's conformance setups do, reduced to one listener):
  listener -> HCM -> [header_to_metadata (test-only subset hint)] -> ext_proc (picker) -> router
  route "has x-gateway-destination-endpoint" -> ORIGINAL_DST cluster that dials that header's ip:port
  otherwise (picker down with FailOpen)      -> fallback cluster: plain round robin over the pool
ext_proc clears the route cache after it mutates headers, so the header set by the picker selects the
ORIGINAL_DST route.
"""
from __future__ import annotations

DEST = "x-gateway-destination-endpoint"


def _addr(hostport: str) -> dict:
    host, _, port = hostport.rpartition(":")
    return {"socket_address": {"address": host, "port_value": int(port)}}


def gateway_config(*, listen_port: int, admin_port: int, picker_port: int, pool: list[str],
                   fail_open: bool = True, full_duplex: bool = False, message_timeout: str = "5s",
                   buffer_limit: int = 64 * 1024 * 1024, override_host: bool = False,
                   generate_request_id: bool = True) -> dict:
    """`pool` lists the pool's endpoints (ip:port) for the FailOpen fallback cluster."""
    body_mode = "FULL_DUPLEX_STREAMED" if full_duplex else "BUFFERED"
    ext_proc = {
        "name": "envoy.filters.http.ext_proc",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.ext_proc.v3.ExternalProcessor",
            "grpc_service": {"envoy_grpc": {"cluster_name": "picker"}, "timeout": "10s"},
            "failure_mode_allow": fail_open,
            "message_timeout": message_timeout,
            "allow_mode_override": True,
            "route_cache_action": "CLEAR",
            "processing_mode": {
                "request_header_mode": "SEND", "response_header_mode": "SEND",
                "request_body_mode": body_mode,
                # full duplex: every response chunk goes through the picker (mode overrides don't apply)
                "response_body_mode": body_mode if full_duplex else "NONE",
                "request_trailer_mode": "SEND" if full_duplex else "SKIP",
                "response_trailer_mode": "SEND" if full_duplex else "SKIP",
            },
            "metadata_options": {"forwarding_namespaces": {"untyped": ["envoy.lb", "envoy.lb.subset_hint"]}},
            "response_attributes": ["upstream.address"],
        },
    }
    subset_hint = {  # test hook: a header carries the subset hint the way a gateway's metadata would
        "name": "envoy.filters.http.header_to_metadata",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.header_to_metadata.v3.Config",
            "request_rules": [{"header": "x-test-subset", "remove": True, "on_header_present": {
                "metadata_namespace": "envoy.lb.subset_hint", "key": "x-gateway-destination-endpoint-subset",
                "type": "STRING"}}],
        },
    }
    router = {"name": "envoy.filters.http.router",
              "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}
    routes = [
        {"match": {"prefix": "/", "headers": [{"name": DEST, "present_match": True}]},
         "route": {"cluster": "pool", "timeout": "60s"}},
        {"match": {"prefix": "/"}, "route": {"cluster": "pool_fallback", "timeout": "60s"}},
    ]
    hcm = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": "gw",
        "codec_type": "AUTO",
        "generate_request_id": generate_request_id,
        "route_config": {"name": "r", "virtual_hosts": [{"name": "all", "domains": ["*"], "routes": routes}]},
        "http_filters": [subset_hint, ext_proc, router],
    }
    h2 = {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
        "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
        "explicit_http_config": {"http2_protocol_options": {
            # big prompts cross this link twice (to the picker and back); the 64 KiB default windows
            # would make every 220 KB body wait on several flow-control round trips
            "initial_stream_window_size": 16 * 1024 * 1024,
            "initial_connection_window_size": 64 * 1024 * 1024}}}}
    if override_host:
        # Alternative to ORIGINAL_DST that understands a comma-separated list with fallbacks.
        pool_cluster = {
            "name": "pool", "type": "STATIC", "connect_timeout": "2s",
            "load_assignment": {"cluster_name": "pool", "endpoints": [
                {"lb_endpoints": [{"endpoint": {"address": _addr(a)}} for a in pool]}]},
            "load_balancing_policy": {"policies": [{"typed_extension_config": {
                "name": "envoy.load_balancing_policies.override_host",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.load_balancing_policies.override_host.v3.OverrideHost",
                    "override_host_sources": [{"header": DEST},
                                              {"metadata": {"key": "envoy.lb", "path": [{"key": DEST}]}}],
                    "fallback_policy": {"policies": [{"typed_extension_config": {
                        "name": "envoy.load_balancing_policies.round_robin",
                        "typed_config": {"@type": "type.googleapis.com/envoy.extensions.load_balancing_policies.round_robin.v3.RoundRobin"}}}]},
                }}}]},
        }
    else:
        pool_cluster = {
            "name": "pool", "type": "ORIGINAL_DST", "lb_policy": "CLUSTER_PROVIDED", "connect_timeout": "2s",
            "original_dst_lb_config": {"use_http_header": True, "http_header_name": DEST},
        }
    return {
        "admin": {"address": _addr(f"127.0.0.1:{admin_port}")},
        "static_resources": {
            "listeners": [{
                "name": "gw", "address": _addr(f"127.0.0.1:{listen_port}"),
                "per_connection_buffer_limit_bytes": buffer_limit,
                "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager",
                                                "typed_config": hcm}]}],
            }],
            "clusters": [
                pool_cluster,
                {"name": "pool_fallback", "type": "STATIC", "lb_policy": "ROUND_ROBIN", "connect_timeout": "2s",
                 "load_assignment": {"cluster_name": "pool_fallback", "endpoints": [
                     {"lb_endpoints": [{"endpoint": {"address": _addr(a)}} for a in pool]}]}},
                {"name": "picker", "type": "STATIC", "connect_timeout": "1s",
                 "typed_extension_protocol_options": h2,
                 "load_assignment": {"cluster_name": "picker", "endpoints": [
                     {"lb_endpoints": [{"endpoint": {"address": _addr(f"127.0.0.1:{picker_port}")}}]}]}},
            ],
        },
    }


def direct_config(*, listen_port: int, admin_port: int, upstream: str) -> dict:
    """Baseline for benchmarks: the same listener straight to one server, no picker."""
    router = {"name": "envoy.filters.http.router",
              "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}
    return {
        "admin": {"address": _addr(f"127.0.0.1:{admin_port}")},
        "static_resources": {
            "listeners": [{"name": "gw", "address": _addr(f"127.0.0.1:{listen_port}"),
                           "per_connection_buffer_limit_bytes": 64 * 1024 * 1024,
                           "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager",
                                                           "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                "stat_prefix": "gw", "route_config": {"name": "r", "virtual_hosts": [
                    {"name": "all", "domains": ["*"], "routes": [{"match": {"prefix": "/"},
                                                                  "route": {"cluster": "up", "timeout": "60s"}}]}]},
                "http_filters": [router]}}]}]}],
            "clusters": [{"name": "up", "type": "STATIC", "connect_timeout": "2s",
                          "load_assignment": {"cluster_name": "up", "endpoints": [
                              {"lb_endpoints": [{"endpoint": {"address": _addr(upstream)}}]}]}}],
        },
    }
