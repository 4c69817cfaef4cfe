"""Envoy configuration for the picker: the recommended ext_proc filters (the single source other
generators import) and a whole bootstrap shaped like a gateway in front of an InferencePool (used by
the tests and the benchmark). Pure dicts, no gRPC or protobuf imports, so the Pulumi virtualenv can
import it too.

Gateway shape (what Envoy Gateway / GIE's conformance setups do, reduced to one listener):
  listener -> HCM -> [header_to_metadata (test-only subset hint)] -> ext_proc (picker, request path)
           -> [ext_proc (picker, response path; only when the picker asked for it)] -> router
  route "has x-gateway-destination-endpoint" -> ORIGINAL_DST cluster that dials that header's ip:port
  otherwise (picker down with FailOpen)      -> fallback cluster: plain round robin over the pool
ext_proc clears the route cache after it mutates headers, so the header set by the picker selects the
ORIGINAL_DST route.

Why two filters: Envoy only honours a processing-mode override while it waits for a *headers*
answer, and the picker only knows after the body whether the response needs it (the client's model
name restored, or a sampled response for telemetry). So the request-path filter never sees responses,
and a second filter, skipped unless the picker set RESTORE_HEADER on the request, handles them.
"""
from __future__ import annotations

from infershift import contract

DEST = contract.DESTINATION_HEADER
# Set on the request by the picker when the response must come back to it (the response filter's
# matcher reads it); the routes remove it before the request goes upstream.
RESTORE_HEADER = contract.RESTORE_HEADER
# What the response stream needs to know (picker/restore_header.py) travels as dynamic metadata the
# picker sets on the request stream; the response filter forwards this namespace to the picker.
HANDOVER_NS, HANDOVER_KEY = "infershift.picker", "handover"
# One-round-trip mode: Envoy's message timer starts with the headers, so a slow upload would time out.
# For a big (or unsized) body the picker extends the timer to this, which the filter allows as its max.
UPLOAD_TIMEOUT_S = 60
BIG_BODY_BYTES = 64 * 1024
EXT_PROC = "envoy.filters.http.ext_proc"
_EXT_PROC_TYPE = "type.googleapis.com/envoy.extensions.filters.http.ext_proc.v3.ExternalProcessor"


def picker_transport_socket() -> dict:
    """TLS to the picker, as a cluster's gateway connects to it (the picker serves TLS by default,
    picker/tls.py): ALPN h2, and the certificate is not verified, so the picker's self-signed one
    works. The same shape as Envoy AI Gateway's cluster for an InferencePool's picker (an
    UpstreamTlsContext with an empty validation context, envoyproxy/ai-gateway
    internal/extensionserver/inferencepool.go) and the upstream standalone chart's ext_proc cluster
    (config/charts/standalone/values.yaml)."""
    return {"name": "envoy.transport_sockets.tls", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
        "common_tls_context": {"alpn_protocols": ["h2"], "validation_context": {}}}}


def _addr(hostport: str) -> dict:
    host, _, port = hostport.rpartition(":")
    return {"socket_address": {"address": host, "port_value": int(port)}}


def ext_proc_filter(cluster_name: str, *, fail_open: bool, message_timeout: str = "5s",
                    full_duplex: bool = False, classic: bool = False) -> dict:
    """The picker's request-path ext_proc filter (the HCM http_filters entry).

    Default: one round trip per request. Envoy sends the headers and, without waiting for their answer,
    the body in STREAMED chunks; the picker answers all of them at once when the body is complete
    (headers: destination, content-length, request id; body: the rewritten `model`). Responses skip
    this filter; put `response_filter()` right after it.
    classic=True: today's GIE shape (headers, then the BUFFERED body, then response headers, two to
    three round trips); needs no response filter.
    full_duplex=True: FULL_DUPLEX_STREAMED both ways (every response chunk goes through the picker;
    Envoy requires trailers SEND); needs no response filter.
    """
    if full_duplex:
        mode = {"request_header_mode": "SEND", "response_header_mode": "SEND",
                "request_body_mode": "FULL_DUPLEX_STREAMED", "response_body_mode": "FULL_DUPLEX_STREAMED",
                "request_trailer_mode": "SEND", "response_trailer_mode": "SEND"}
    elif classic:
        mode = {"request_header_mode": "SEND", "response_header_mode": "SEND",
                "request_body_mode": "BUFFERED", "response_body_mode": "NONE",
                "request_trailer_mode": "SKIP", "response_trailer_mode": "SKIP"}
    else:
        mode = {"request_header_mode": "SEND", "response_header_mode": "SKIP",
                "request_body_mode": "STREAMED", "response_body_mode": "NONE",
                "request_trailer_mode": "SKIP", "response_trailer_mode": "SKIP"}
    cfg = {
        "@type": _EXT_PROC_TYPE,
        "grpc_service": {"envoy_grpc": {"cluster_name": cluster_name}, "timeout": "10s"},
        "failure_mode_allow": fail_open,
        "message_timeout": message_timeout,
        "route_cache_action": "CLEAR",  # the destination header the picker sets re-selects the route
        "processing_mode": mode,
        "metadata_options": {"forwarding_namespaces": {"untyped": ["envoy.lb", "envoy.lb.subset_hint"]},
                             # what the picker may set: the destination (GIE) and the hand-over
                             "receiving_namespaces": {"untyped": ["envoy.lb", HANDOVER_NS]}},
    }
    if classic:
        cfg["allow_mode_override"] = True  # the picker turns on the response body only to restore `model`
        cfg["response_attributes"] = ["upstream.address"]
    elif not full_duplex:
        # Envoy holds the headers until the picker answers them, after the last body chunk
        cfg["send_body_without_waiting_for_header_response"] = True
        cfg["max_message_timeout"] = f"{UPLOAD_TIMEOUT_S}s"
    else:
        cfg["response_attributes"] = ["upstream.address"]
    return {"name": EXT_PROC, "typed_config": cfg}


def response_filter(cluster_name: str, *, fail_open: bool, message_timeout: str = "5s",
                    report_failures: bool = False) -> dict:
    """The response-path filter that goes right after `ext_proc_filter()` (default mode): it runs only
    for requests the picker marked with RESTORE_HEADER (a rewritten model name to restore, or a response
    sampled for per-target telemetry); every other request skips it and opens no second stream.

    `report_failures`: it also runs for every 5xx response and every response to a request the
    gateway retried (`x-envoy-attempt-count` above 1: the route needs `include_attempt_count_in_response`),
    so the picker's error tracking sees failing endpoints (picker/ejection.py)."""
    ext = {
        "@type": _EXT_PROC_TYPE,
        "grpc_service": {"envoy_grpc": {"cluster_name": cluster_name}, "timeout": "10s"},
        "failure_mode_allow": fail_open,
        "message_timeout": message_timeout,
        "allow_mode_override": True,  # the response body is turned on only for JSON/SSE model restore
        "processing_mode": {"request_header_mode": "SKIP", "response_header_mode": "SEND",
                            "request_body_mode": "NONE", "response_body_mode": "NONE",
                            "request_trailer_mode": "SKIP", "response_trailer_mode": "SKIP"},
        "metadata_options": {"forwarding_namespaces": {"untyped": ["envoy.lb", HANDOVER_NS]}},
        "response_attributes": ["upstream.address"],
    }
    absent: dict = {"not_matcher": {"single_predicate": {
        "input": {"name": "restore-header", "typed_config": {
            "@type": "type.googleapis.com/envoy.type.matcher.v3.HttpRequestHeaderMatchInput",
            "header_name": RESTORE_HEADER}},
        "value_match": {"safe_regex": {"google_re2": {}, "regex": ".*"}}}}}
    if report_failures:
        def response_header(name: str, regex: str) -> dict:
            return {"not_matcher": {"single_predicate": {
                "input": {"name": name, "typed_config": {
                    "@type": "type.googleapis.com/envoy.type.matcher.v3.HttpResponseHeaderMatchInput",
                    "header_name": name}},
                "value_match": {"safe_regex": {"google_re2": {}, "regex": regex}}}}}
        absent = {"and_matcher": {"predicate": [
            absent, response_header(":status", "5[0-9][0-9]"),
            response_header("x-envoy-attempt-count", "[2-9]|[1-9][0-9]+")]}}
    return {"name": "infershift.picker.response", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.common.matching.v3.ExtensionWithMatcher",
        "extension_config": {"name": EXT_PROC, "typed_config": ext},
        "xds_matcher": {"matcher_list": {"matchers": [{"predicate": absent, "on_match": {"action": {
            "name": "skip", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.common.matcher.action.v3.SkipFilter"}}}}]}},
    }}


def buffer_filter(max_request_bytes: int) -> dict:
    """Envoy's buffer filter ahead of the picker: the body reaches ext_proc whole, as ONE STREAMED chunk
    (else a 220 KB prompt arrives in ~14 chunks and each costs a gRPC message both ways). Bigger bodies
    get Envoy's own 413, so keep it above the picker's limits.maxBodyBytes."""
    return {"name": "envoy.filters.http.buffer", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.buffer.v3.Buffer",
        "max_request_bytes": max_request_bytes}}


def ext_proc_filters(cluster_name: str, *, fail_open: bool, message_timeout: str = "5s",
                     full_duplex: bool = False, classic: bool = False,
                     max_request_bytes: int = 64 * 1024 * 1024, report_failures: bool = False) -> list[dict]:
    """The http_filters entries for the picker, in order (see above): buffer, request filter, response
    filter by default; the request filter alone in the classic and full-duplex setups."""
    first = ext_proc_filter(cluster_name, fail_open=fail_open, message_timeout=message_timeout,
                            full_duplex=full_duplex, classic=classic)
    if full_duplex or classic:
        return [first]
    return [buffer_filter(max_request_bytes), first,
            response_filter(cluster_name, fail_open=fail_open, message_timeout=message_timeout,
                            report_failures=report_failures)]


def gateway_config(*, listen_port: int, admin_port: int, picker_port: int, pool: list[str],
                   fail_open: bool = True, full_duplex: bool = False, classic: bool = False,
                   message_timeout: str = "5s", buffer_limit: int = 64 * 1024 * 1024,
                   override_host: bool = False, generate_request_id: bool = True, picker_tls: bool = True) -> dict:
    """`pool` lists the pool's endpoints (ip:port) for the FailOpen fallback cluster. `picker_tls`:
    TLS to the picker (its default); False for a picker run with `--secure-serving=false`."""
    picker_filters = ext_proc_filters("picker", fail_open=fail_open, message_timeout=message_timeout,
                                      full_duplex=full_duplex, classic=classic, max_request_bytes=buffer_limit)
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
         "route": {"cluster": "pool", "timeout": "60s"}, "request_headers_to_remove": [RESTORE_HEADER]},
        {"match": {"prefix": "/"}, "route": {"cluster": "pool_fallback", "timeout": "60s"},
         "request_headers_to_remove": [RESTORE_HEADER]},
    ]
    hcm = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": "gw",
        "codec_type": "AUTO",
        "generate_request_id": generate_request_id,
        "route_config": {"name": "r", "virtual_hosts": [{"name": "all", "domains": ["*"], "routes": routes}]},
        "http_filters": [subset_hint, *picker_filters, router],
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
                 **({"transport_socket": picker_transport_socket()} if picker_tls else {}),
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
