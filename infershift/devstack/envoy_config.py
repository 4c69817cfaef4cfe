"""DataPlane -> Envoy configuration (a pure function; plain dicts ready for YAML).

Two tiers inside one Envoy, as gateways do for weighted InferencePools:
- a gateway listener per Gateway listener does the HTTPRoute part: path/host matches,
  pins (header matches), weights (weighted_clusters), the request timeout, and tags
  mirror routes. Its routes come from RDS files so they change live.
- a loopback listener per pool does the InferencePool part: ext_proc to the pool's own
  picker, then an ORIGINAL_DST cluster keyed on the header the picker set. Without that
  header (picker down) a FailOpen pool routes over all its endpoints and a FailClose pool
  answers 503. Tagged requests are mirrored here, after the picker rewrote the body, as a
  gateway's router mirrors after its ext_proc filter; a mirror to a pool goes to that
  pool's listener, so its own picker routes the copy. Routes come from RDS files too.
Keeping the weight decision in the first tier means the route-cache clear after the
picker's header mutation never re-rolls the weighted choice.
"""
from __future__ import annotations

import json
from pathlib import Path

from infershift import contract
from infershift.picker.envoy_config import RESTORE_HEADER, ext_proc_filters, picker_transport_socket

from . import ir
from .dataplane import ENDPOINT_HEADER, DataPlane, Pool

HCM = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
ROUTER = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
EXT_PROC = "type.googleapis.com/envoy.extensions.filters.http.ext_proc.v3.ExternalProcessor"
HTTP_OPTIONS = "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
ROUTE_CONFIG = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
HEADER_MUTATION = "type.googleapis.com/envoy.extensions.filters.http.header_mutation.v3.HeaderMutation"
MIRROR_HEADER = contract.MIRROR_HEADER
LOOPBACK = "127.0.0.1"
PICKER_MESSAGE_TIMEOUT = "10s"  # generous: on 2 busy cores a picker answer can be slow


def openai_error(message: str, type_: str, code: str) -> str:
    return json.dumps({"error": {"message": message, "type": type_, "param": None, "code": code}})


def _addr(host: str, port: int) -> dict:
    return {"socket_address": {"address": host, "port_value": port}}


def _endpoints(addresses: list[str]) -> dict:
    eps = []
    for a in addresses:
        host, _, port = a.rpartition(":")
        eps.append({"endpoint": {"address": _addr(host, int(port))}})
    return {"endpoints": [{"lb_endpoints": eps}]}


def _static_cluster(name: str, addresses: list[str], *, http2: bool = False, buffer: int | None = None,
                    tls: bool = False) -> dict:
    cluster: dict = {
        "name": name,
        "type": "STATIC",
        "connect_timeout": "2s",
        "lb_policy": "ROUND_ROBIN",
        "load_assignment": {"cluster_name": name, **_endpoints(addresses)},
    }
    if http2:
        cluster["typed_extension_protocol_options"] = {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": HTTP_OPTIONS,
                # Big windows: whole prompts travel to the picker in one message.
                "explicit_http_config": {"http2_protocol_options": {
                    "initial_stream_window_size": 16 << 20, "initial_connection_window_size": 64 << 20}},
            }
        }
    if tls:
        cluster["transport_socket"] = picker_transport_socket()
    if buffer:
        cluster["per_connection_buffer_limit_bytes"] = buffer
    return cluster


def _seconds(value: float) -> str:
    return f"{value:g}s"


# --- names shared with the runner (stats, files) ---------------------------------------


def gateway_route_name(listener: str) -> str:
    return f"gw-{listener.replace('/', '.')}"


def pool_cluster(pool: str) -> str:
    return f"pool-{pool}"


def service_cluster(service: str) -> str:
    return f"svc-{service}"


def pool_route_name(pool: str) -> str:
    return f"pool-{pool}"


def rds_file(xds_dir: Path, route_name: str) -> Path:
    return xds_dir / f"rds-{route_name}.yaml"


# --- first tier: HTTPRoutes ------------------------------------------------------------


def _path_match(m: ir.Match) -> dict:
    if m.path_type == "Exact":
        return {"path": m.path}
    if m.path_type == "RegularExpression":
        return {"safe_regex": {"regex": m.path}}
    # Gateway API PathPrefix matches whole segments: /v1/completions is not /v1/completionsX.
    if m.path == "/" or m.path.endswith("/"):
        return {"prefix": m.path}
    return {"path_separated_prefix": m.path}


def _string_match(kv: ir.KeyValueMatch) -> dict:
    return {"safe_regex": {"regex": kv.value}} if kv.type == "RegularExpression" else {"exact": kv.value}


def _route_match(m: ir.Match) -> dict:
    match = _path_match(m)
    headers = [{"name": h.name, "string_match": _string_match(h)} for h in m.headers]
    if m.method:
        headers.append({"name": ":method", "string_match": {"exact": m.method}})
    if headers:
        match["headers"] = headers
    if m.query:
        match["query_parameters"] = [{"name": q.name, "string_match": _string_match(q)} for q in m.query]
    return match


UNRESOLVED_CLUSTER = "unresolved-backend"


def _backend_cluster(b: ir.Backend) -> str:
    if b.kind == "InferencePool":
        return pool_cluster(b.name)
    if b.kind == "Service":
        return service_cluster(b.name)
    return UNRESOLVED_CLUSTER


def _route_action(rule: ir.Rule, timeout: float | None) -> dict:
    live = [(_backend_cluster(b), b.weight) for b in rule.backends if b.weight > 0]
    action: dict
    if len(live) == 1:
        action = {"cluster": live[0][0]}
    else:
        merged: dict[str, int] = {}
        for c, w in live:
            merged[c] = merged.get(c, 0) + w
        action = {"weighted_clusters": {"clusters": [{"name": c, "weight": w} for c, w in merged.items()]}}
    timeout = rule.timeout if rule.timeout is not None else timeout
    if timeout is not None:
        action["timeout"] = _seconds(timeout)
    return action


def _tag(rule: ir.Rule) -> dict:
    """A mirroring rule tags its requests so the pool tier mirrors them after the picker."""
    if rule.mirrors:
        return {"request_headers_to_add": [{"header": {"key": MIRROR_HEADER, "value": rule.name},
                                            "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}]}
    return {"request_headers_to_remove": [MIRROR_HEADER]}


def _mirror_policies(rule: ir.Rule) -> list[dict]:
    out = []
    for m in rule.mirrors:
        policy: dict = {"cluster": service_cluster(m.name) if m.kind == "Service" else pool_cluster(m.name)}
        if m.numerator < m.denominator:
            # Envoy's fractions are per hundred, ten thousand or million: the exact one that fits.
            for den, scale in (("HUNDRED", 100), ("TEN_THOUSAND", 10_000), ("MILLION", 1_000_000)):
                if (m.numerator * scale) % m.denominator == 0 or den == "MILLION":
                    policy["runtime_fraction"] = {"default_value": {
                        "numerator": m.numerator * scale // m.denominator, "denominator": den}}
                    break
        out.append(policy)
    return out


def _host_rank(host: str | None) -> tuple:
    """Gateway API precedence starts with the hostname: an exact name, then the longest
    wildcard, then any host."""
    if host is None:
        return (2, 0)
    return (1, -len(host)) if host.startswith("*.") else (0, -len(host))


def _path_rank(m: ir.Match) -> tuple:
    kind = {"Exact": 0, "PathPrefix": 1}.get(m.path_type, 2)
    return (kind, -len(m.path))


def _routes_for(rules: list[tuple[str | None, ir.Rule]], timeout: float | None) -> list[dict]:
    """Envoy routes in Gateway API precedence: hostname, exact path, longest prefix, method,
    most header matches, most query matches, then the oldest route, its name, rule and match order."""
    keyed = []
    for host, rule in rules:
        for i, m in enumerate(rule.matches):
            key = (_host_rank(host), _path_rank(m), 0 if m.method else 1, -len(m.headers), -len(m.query),
                   rule.order, rule.route, rule.index, i)
            name = rule.name if len(rule.matches) == 1 else f"{rule.name}.m{i}"
            route = {"name": name, "match": _route_match(m), **_tag(rule)}
            if any(b.weight > 0 for b in rule.backends):
                route["route"] = _route_action(rule, timeout)
            else:
                # No backendRefs, or all of weight 0: Gateway API answers 500.
                route["direct_response"] = {"status": 500, "body": {"inline_string": NO_BACKEND}}
                route["response_headers_to_add"] = [_json_header()]
            keyed.append((key, route))
    return [r for _, r in sorted(keyed, key=lambda kv: kv[0])]


def _covers(wild: str, host: str) -> bool:
    return wild.startswith("*.") and host.endswith(wild[1:]) and len(host) > len(wild) - 1


NO_ROUTE = openai_error("no route matches this request's host and path", "invalid_request_error", "route_not_found")
NO_BACKEND = openai_error("the route that matched this request has no usable backend", "server_error",
                          "backend_not_found")


def gateway_routes(plane: DataPlane, listener: str) -> dict:
    """The RouteConfiguration (RDS resource) of one gateway listener: a virtual host per
    hostname the attached rules serve, each with every rule that serves a request for that
    host (its own, covering wildcards', any-host rules), in Gateway API precedence."""
    lst = next(x for x in plane.listeners if x.key == listener)
    hosts = sorted({h for r in lst.rules for h in r.hostnames})
    vhosts = []
    for host in hosts:
        applicable: list[tuple[str | None, ir.Rule]] = []
        for r in lst.rules:
            if host in r.hostnames:
                applicable.append((host, r))
            elif any(_covers(h, host) for h in r.hostnames):
                applicable.append((max((h for h in r.hostnames if _covers(h, host)), key=len), r))
            elif not r.hostnames:
                applicable.append((None, r))
        vhosts.append({"name": host, "domains": [host],
                       "routes": _routes_for(applicable, plane.request_timeout) + [_no_route()]})
    vhosts.append({"name": "any-host", "domains": ["*"],
                   "routes": _routes_for([(None, r) for r in lst.rules if not r.hostnames], plane.request_timeout)
                   + [_no_route()]})
    return {
        "name": gateway_route_name(listener),
        # Clients must not choose the endpoint: only the pool's picker sets this header.
        "request_headers_to_remove": [ENDPOINT_HEADER],
        "virtual_hosts": vhosts,
    }


def _no_route() -> dict:
    return {
        "name": "no-route",
        "match": {"prefix": "/"},
        "direct_response": {"status": 404, "body": {"inline_string": NO_ROUTE}},
        "response_headers_to_add": [_json_header()],
    }


def _json_header() -> dict:
    return {"header": {"key": "content-type", "value": "application/json"},
            "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}


CEL_FILTER = "type.googleapis.com/envoy.extensions.access_loggers.filters.cel.v3.ExpressionFilter"


# Envoy's own upstream failures (timeout, connect failure, no healthy host, reset).
UPSTREAM_FLAGS = ["UT", "UF", "UH", "UO", "URX", "UC", "UR"]


def _upstream_failure_mapper() -> dict:
    """Envoy answers its own upstream failures in plain text; clients of an OpenAI API
    expect the error JSON. Keyed on response flags, so direct responses and answers
    that came from upstream (the picker's, the servers') pass unchanged."""
    return {
        "filter": {"response_flag_filter": {"flags": UPSTREAM_FLAGS}},
        "body_format_override": {"json_format": {"error": {
            "message": "%LOCAL_REPLY_BODY%", "type": "upstream_error", "param": None,
            "code": "%RESPONSE_FLAGS%"}}},
    }


def _gateway_reply() -> dict:
    # In the gateway tier a 413 reply is always Envoy's own (bufferLimit exceeded).
    too_large = {
        "filter": {"status_code_filter": {"comparison": {"op": "EQ", "value": {
            "default_value": 413, "runtime_key": "devstack.gateway_413"}}}},
        "body_format_override": {"json_format": {"error": {
            "message": "request body is larger than the gateway's bufferLimit", "type": "invalid_request_error",
            "param": None, "code": "request_too_large"}}},
    }
    # A backendRef that does not resolve: Gateway API wants its share answered with 500.
    unresolved = {
        "filter": {"extension_filter": {
            "name": "envoy.access_loggers.extension_filters.cel",
            "typed_config": {"@type": CEL_FILTER, "expression": f"xds.cluster_name == '{UNRESOLVED_CLUSTER}'"},
        }},
        "status_code": 500,
        "body": {"inline_string": NO_BACKEND},
        "body_format_override": {"text_format": "%LOCAL_REPLY_BODY%", "content_type": "application/json"},
    }
    return {"mappers": [too_large, unresolved, _upstream_failure_mapper()]}


def _picker_failure_reply(pool: str, fail_close: bool) -> dict:
    """Envoy's own reply when a FailClose pool's picker cannot be reached is an empty 500 or
    503; make it a 503 in the OpenAI error shape. Only that reply: the picker's own error answers
    (which already carry OpenAI JSON) have other response code details."""
    if not fail_close:
        return {"mappers": [_upstream_failure_mapper()]}
    return {"mappers": [{
        "filter": {"extension_filter": {
            "name": "envoy.access_loggers.extension_filters.cel",
            "typed_config": {"@type": CEL_FILTER, "expression": "response.code_details.startsWith('ext_proc')"},
        }},
        # Unavailable whichever way the stream broke (some ext_proc paths answer 500).
        "status_code": 503,
        "body": {"inline_string": openai_error(
            f"the endpoint picker of InferencePool {pool} is unavailable (failureMode FailClose)",
            "service_unavailable", "picker_unavailable")},
        "body_format_override": {"text_format": "%LOCAL_REPLY_BODY%", "content_type": "application/json"},
    }, _upstream_failure_mapper()]}


def _hcm(stat_prefix: str, routes: dict, http_filters: list[dict], local_reply: dict | None = None,
         **options) -> dict:
    extra = {"local_reply_config": local_reply} if local_reply else {}
    extra.update(options)
    return {
        "name": "envoy.filters.network.http_connection_manager",
        "typed_config": {
            "@type": HCM,
            "stat_prefix": stat_prefix,
            "codec_type": "AUTO",
            **routes,
            **extra,
            "http_filters": http_filters + [{"name": "envoy.filters.http.router", "typed_config": {"@type": ROUTER}}],
        },
    }


def _routes_source(name: str, inline: dict, xds_dir: Path | None) -> dict:
    if xds_dir is None:  # inline variant, used to validate the routes with the bootstrap
        return {"route_config": inline}
    return {"rds": {
        "route_config_name": name,
        "config_source": {
            "resource_api_version": "V3",
            "path_config_source": {"path": str(rds_file(xds_dir, name)), "watched_directory": {"path": str(xds_dir)}},
        },
    }}


def _gateway_listener(plane: DataPlane, name: str, port: int, xds_dir: Path | None) -> dict:
    # Hosts match without their port (Host: example.com:8080 is example.com).
    routes = _routes_source(gateway_route_name(name), gateway_routes(plane, name), xds_dir)
    listener: dict = {
        "name": f"gateway-{name}",
        "address": _addr(LOOPBACK, port),
        "enable_reuse_port": False,  # a second devstack on the same port must fail, not share it
        "filter_chains": [{"filters": [_hcm(f"gw_{name.replace('/', '.')}", routes, [], _gateway_reply(),
                                            strip_any_host_port=True)]}],
    }
    if plane.buffer_limit:
        listener["per_connection_buffer_limit_bytes"] = plane.buffer_limit
    return listener


# --- second tier: one listener, picker and ORIGINAL_DST cluster per pool ----------------


def picker_cluster(pool: str) -> str:
    return f"picker-{pool}"


def endpoints_cluster(pool: str) -> str:
    return f"pool-{pool}-endpoints"


def fallback_cluster(pool: str) -> str:
    return f"pool-{pool}-fallback"


def pool_routes(plane: DataPlane, pool: Pool) -> dict:
    """The pool tier's RouteConfiguration (RDS resource): to the picked endpoint, else
    the failure mode; mirrors happen here, after the picker rewrote the body, as a
    gateway's router mirrors after its ext_proc filter."""
    mirrors = sorted((r for r in plane.rules
                      if r.mirrors and any(b.kind == "InferencePool" and b.name == pool.name for b in r.backends)),
                     key=lambda r: r.name)
    picked_header = {"name": ENDPOINT_HEADER, "present_match": True}

    def tagged(rule: ir.Rule) -> dict:
        return {"name": MIRROR_HEADER, "string_match": {"exact": rule.name}}

    routes: list[dict] = []
    for rule in mirrors:
        routes.append({
            "name": f"picked-endpoint-{rule.name}",
            "match": {"prefix": "/", "headers": [picked_header, tagged(rule)]},
            "route": {"cluster": endpoints_cluster(pool.name), "timeout": "0s",
                      "request_mirror_policies": _mirror_policies(rule)},
        })
    routes.append({"name": "picked-endpoint", "match": {"prefix": "/", "headers": [picked_header]},
                   "route": {"cluster": endpoints_cluster(pool.name), "timeout": "0s"}})
    if pool.failure_mode == "FailOpen":
        for rule in mirrors:
            routes.append({
                "name": f"fail-open-{rule.name}",
                "match": {"prefix": "/", "headers": [tagged(rule)]},
                "route": {"cluster": fallback_cluster(pool.name), "timeout": "0s",
                          "request_mirror_policies": _mirror_policies(rule)},
            })
        routes.append({"name": "fail-open", "match": {"prefix": "/"},
                       "route": {"cluster": fallback_cluster(pool.name), "timeout": "0s"}})
    else:
        routes.append({
            "name": "fail-close",
            "match": {"prefix": "/"},
            "direct_response": {"status": 503, "body": {"inline_string": openai_error(
                f"the endpoint picker of InferencePool {pool.name} chose no endpoint (failureMode FailClose)",
                "service_unavailable", "picker_unavailable")}},
            "response_headers_to_add": [_json_header()],
        })
    return {
        "name": pool_route_name(pool.name),
        # The picker's request-to-itself marker (picker/envoy_config.py) never goes upstream.
        "request_headers_to_remove": [RESTORE_HEADER],
        "virtual_hosts": [{"name": pool.name, "domains": ["*"], "routes": routes}],
    }


def _pool_listener(plane: DataPlane, pool: Pool, xds_dir: Path | None) -> dict:
    # Only this pool's picker may choose the endpoint: drop any header that came with the
    # request (from a client, or from another pool's picker on a mirrored copy).
    strip = {
        "name": "envoy.filters.http.header_mutation",
        "typed_config": {"@type": HEADER_MUTATION, "mutations": {"request_mutations": [
            {"remove": ENDPOINT_HEADER}]}},
    }
    # The picker's own recommended filters (one round trip per request; responses come back
    # to it only when it asks), so devstack and the picker's tests run the same Envoy setup.
    picker_filters = ext_proc_filters(
        picker_cluster(pool.name), fail_open=pool.failure_mode == "FailOpen",
        message_timeout=PICKER_MESSAGE_TIMEOUT, max_request_bytes=pool.max_body_bytes)
    routes = _routes_source(pool_route_name(pool.name), pool_routes(plane, pool), xds_dir)
    return {
        "name": f"pool-{pool.name}",
        "address": _addr(LOOPBACK, pool.port),
        "enable_reuse_port": False,
        "per_connection_buffer_limit_bytes": pool.max_body_bytes,
        "filter_chains": [{"filters": [_hcm(f"pool_{pool.name}", routes, [strip, *picker_filters],
                                            _picker_failure_reply(pool.name, pool.failure_mode == "FailClose"))]}],
    }


def _pool_clusters(pool: Pool) -> list[dict]:
    clusters = [
        # The first tier reaches the pool's listener through this cluster (also as a mirror).
        _static_cluster(pool_cluster(pool.name), [f"{LOOPBACK}:{pool.port}"], buffer=pool.max_body_bytes),
        # TLS to the picker as a cluster's gateway talks to it (ALPN h2, its self-signed
        # certificate not verified); plaintext only for a picker run with --secure-serving=false.
        _static_cluster(picker_cluster(pool.name), [f"{LOOPBACK}:{pool.picker_port}"], http2=True,
                        tls=pool.picker_tls),
        {
            "name": endpoints_cluster(pool.name),
            "type": "ORIGINAL_DST",
            "lb_policy": "CLUSTER_PROVIDED",
            "connect_timeout": "2s",
            "original_dst_lb_config": {"use_http_header": True, "http_header_name": ENDPOINT_HEADER},
            "per_connection_buffer_limit_bytes": pool.max_body_bytes,
        },
    ]
    if pool.failure_mode == "FailOpen":
        clusters.append(_static_cluster(
            fallback_cluster(pool.name), [e.address for e in pool.endpoints], buffer=pool.max_body_bytes))
    return clusters


def bootstrap(plane: DataPlane, admin_port: int, xds_dir: Path | None) -> dict:
    """The Envoy bootstrap. With `xds_dir`, gateway routes come from RDS files there
    (see `route_files`); without, they are inline (the variant `envoy --mode validate`
    checks, since validation does not read dynamic resources)."""
    listeners = [_gateway_listener(plane, lst.key, lst.port, xds_dir) for lst in plane.listeners]
    listeners += [_pool_listener(plane, p, xds_dir) for p in plane.pools]
    clusters = [c for p in plane.pools for c in _pool_clusters(p)]
    if any(b.kind == "Unresolved" for r in plane.rules for b in r.backends):
        clusters.append(_static_cluster(UNRESOLVED_CLUSTER, []))
    clusters += [
        _static_cluster(service_cluster(s.name), [e.address for e in s.endpoints])
        for s in plane.services
    ]
    return {
        "node": {"id": "devstack", "cluster": "devstack"},
        "admin": {"address": _addr(LOOPBACK, admin_port)},
        "static_resources": {"listeners": listeners, "clusters": clusters},
    }


def route_files(plane: DataPlane, xds_dir: Path, version: str) -> dict[Path, dict]:
    """RDS files (filesystem xDS DiscoveryResponses): one per gateway listener, one per pool."""
    configs = [gateway_routes(plane, lst.key) for lst in plane.listeners]
    configs += [pool_routes(plane, p) for p in plane.pools]
    return {
        rds_file(xds_dir, c["name"]): {"version_info": version, "resources": [{"@type": ROUTE_CONFIG, **c}]}
        for c in configs
    }


def route_names(plane: DataPlane) -> list[str]:
    return [gateway_route_name(lst.key) for lst in plane.listeners] + [pool_route_name(p.name) for p in plane.pools]
