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
import re
from pathlib import Path

from infershift import contract
from infershift.gateway_errors import RETRY_AFTER_SECONDS, openai_error, protocol_replies
from infershift.picker.envoy_config import EXT_PROC as EXT_PROC_FILTER
from infershift.picker.envoy_config import RESTORE_HEADER, ext_proc_filters, picker_transport_socket
from infershift.picker.listing import ALLOW as LISTING_ALLOW
from infershift.picker.listing import METHOD_NOT_ALLOWED
from infershift.routing_headers import strip_matchers

from . import ir
from .dataplane import ENDPOINT_HEADER, DataPlane, Pool

HCM = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
ROUTER = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
EXT_PROC = "type.googleapis.com/envoy.extensions.filters.http.ext_proc.v3.ExternalProcessor"
HTTP_OPTIONS = "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
ROUTE_CONFIG = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
HEADER_MUTATION = "type.googleapis.com/envoy.extensions.filters.http.header_mutation.v3.HeaderMutation"
EARLY_HEADER_MUTATION = ("type.googleapis.com/envoy.extensions.http.early_header_mutation.header_mutation.v3."
                         "HeaderMutation")
BUFFER = "type.googleapis.com/envoy.extensions.filters.http.buffer.v3.Buffer"
FILTER_CONFIG = "type.googleapis.com/envoy.config.route.v3.FilterConfig"
OVERRIDE_HOST = "type.googleapis.com/envoy.extensions.load_balancing_policies.override_host.v3.OverrideHost"
ROUND_ROBIN = "type.googleapis.com/envoy.extensions.load_balancing_policies.round_robin.v3.RoundRobin"
PREVIOUS_HOSTS = "type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate"
MIRROR_HEADER = contract.MIRROR_HEADER
LOOPBACK = "127.0.0.1"
PICKER_MESSAGE_TIMEOUT = "10s"  # generous: on 2 busy cores a picker answer can be slow

# Request-header limits. The gateway listener refuses more than contract.GATEWAY_MAX_HEADERS
# headers, or more KiB of them than the Gateway's ClientTrafficPolicy headers.maxRequestHeaderLimit
# (what infershift renders: contract.GATEWAY_MAX_HEADERS_KB; without one, Envoy's 60), with 431 (as
# JSON); the pool tier behind it takes more (the gateway and the picker add headers), and so do the
# model servers (the simulator: 256 headers, 64 KiB each; vLLM's uvicorn: 16 KiB in all), so no
# request the rendered gateway accepts is refused further in, where the answer would be plain text.
GATEWAY_MAX_HEADERS = contract.GATEWAY_MAX_HEADERS
POOL_MAX_HEADERS, POOL_MAX_HEADERS_KB = 200, 96

# The model servers' management API (contract.MANAGEMENT_PATHS, the list a cluster's listing routes
# send to a 404 too): never routed, whatever a route's path match says (a catch-all `/` would reach
# them). 404 as for no route. Four paths per regex keep each under Envoy's default RE2 program-size
# limit. Prefixes match as Gateway API's PathPrefix does (`/admin` and `/admin/...`).
MANAGEMENT_PATH_REGEXES = tuple(
    "|".join(re.escape(path) for path in contract.MANAGEMENT_PATHS[i:i + 4])
    for i in range(0, len(contract.MANAGEMENT_PATHS), 4))
MANAGEMENT_PREFIXES = contract.MANAGEMENT_PREFIXES
# The routes the gateway answers itself, ahead of every vhost's HTTPRoutes.
GATEWAY_OWN_ROUTES = ("models", "management-path", "connect")

# Routing-namespace headers no client may ever send, even named as a pin: the target model and the
# endpoint are the picker's (and the mirror tag and the restore mark the gateway's own).
NEVER_FROM_CLIENTS = frozenset({*contract.REWRITE_HEADERS, contract.DESTINATION_HEADER,
                                contract.DESTINATION_SERVED_HEADER, contract.SUBSET_KEY, contract.RESTORE_HEADER,
                                contract.MIRROR_HEADER, contract.TARGET_HEADER})

# Failing servers leave the candidate set. The picker does it (picker/ejection.py: 3 consecutive
# failures, fed by its response filter, which runs for every 5xx and every retried request): the
# override_host policy dials the picked endpoint whatever its health. Envoy's outlier detection
# (3 consecutive 5xx or connect failures/resets) does it for what Envoy picks itself: the FailOpen
# round robin and the fallback policy. A request whose server failed before answering is retried
# once, on the picker's fallback endpoint (it runs with --fallbacks 1), never on the same one.
OUTLIER_DETECTION = {"consecutive_5xx": 3, "interval": "1s", "base_ejection_time": "5s",
                     "max_ejection_time": "60s", "max_ejection_percent": 100}
RETRY_POLICY = {
    "retry_on": "connect-failure,refused-stream,reset,5xx",
    "num_retries": 1,
    "retry_host_predicate": [{"name": "envoy.retry_host_predicates.previous_hosts",
                              "typed_config": {"@type": PREVIOUS_HOSTS}}],
    "host_selection_retry_max_attempts": 5,
}
# Retries are cheap here (one per failed request, to the fallback): Envoy's default of 3 concurrent
# retries per cluster would let a burst of failures through unretried.
CIRCUIT_BREAKERS = {"thresholds": [{"priority": "DEFAULT", "max_retries": 1024}]}
PICKER_FALLBACKS = 1
# The paths whose bodies the picker reads (picker/request_body.py COMPLETION_PATHS): POST only.
COMPLETION_PATHS = ("/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/responses")


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
            refused = [h for h in CHOOSABLE if h not in rule.client_headers]
            if refused:
                route.setdefault("request_headers_to_remove", []).extend(refused)
            if rule.listing is not None:
                # the stack's rendered models listing (components/models_listing.py): what its server
                # (picker/listing.py) answers, answered here — the listing to GET and HEAD, 405 else
                get = json.loads(json.dumps(route))  # a copy sharing no list with the other route
                get["match"].setdefault("headers", []).append(
                    {"name": ":method", "string_match": {"safe_regex": {"regex": "GET|HEAD"}}})
                get["direct_response"] = {"status": 200, "body": {"inline_string": rule.listing}}
                get["response_headers_to_add"] = [_json_header()]
                keyed.append((key, get))
                route["name"] = f"{name}.other-methods"
                route["direct_response"] = {"status": 405, "body": {"inline_string": METHOD_NOT_ALLOWED.decode()}}
                route["response_headers_to_add"] = [_json_header(), {
                    "header": {"key": "allow", "value": LISTING_ALLOW}, "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}]
            elif rule.refused:
                # what the listing server answers on a path other than /v1/models
                route["direct_response"] = {"status": 404, "body": {"inline_string": NO_ROUTE}}
                route["response_headers_to_add"] = [_json_header()]
            elif any(b.weight > 0 for b in rule.backends):
                route["route"] = _route_action(rule, timeout)
            else:
                # No backendRefs, or all of weight 0: Gateway API answers 500.
                route["direct_response"] = {"status": 500, "body": {"inline_string": NO_BACKEND}}
                route["response_headers_to_add"] = [_json_header()]
            keyed.append((key, route))
    return [r for _, r in sorted(keyed, key=lambda kv: kv[0])]


CHOOSABLE = contract.CLIENT_CHOOSABLE_HEADERS


def client_headers(rules: tuple[ir.Rule, ...] | list[ir.Rule]) -> list[str]:
    """The routing-namespace headers a listener lets through: pin headers of its rules and the
    objective / fairness-id headers some rule allows; never the target model's or the endpoint's."""
    names = {h.name for r in rules for m in r.matches for h in m.headers}
    names |= {h for r in rules for h in r.client_headers}
    return sorted(n for n in names if n not in NEVER_FROM_CLIENTS
                  and n.startswith(contract.ROUTING_HEADER_PREFIXES))


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
                       "routes": _gateway_own(plane, [r for _, r in applicable])
                       + _routes_for(applicable, plane.request_timeout) + [_no_route()]})
    anyhost: list[tuple[str | None, ir.Rule]] = [(None, r) for r in lst.rules if not r.hostnames]
    vhosts.append({"name": "any-host", "domains": ["*"],
                   "routes": _gateway_own(plane, [r for _, r in anyhost])
                   + _routes_for(anyhost, plane.request_timeout) + [_no_route()]})
    return {
        "name": gateway_route_name(listener),
        # Clients must not choose the endpoint: only the pool's picker sets this header (the
        # listener's early header mutation removes it too, with the rest of the routing namespaces).
        "request_headers_to_remove": [ENDPOINT_HEADER],
        "response_headers_to_remove": ["x-envoy-attempt-count"],
        "virtual_hosts": vhosts,
    }


def _gateway_own(plane: DataPlane, rules: list[ir.Rule]) -> list[dict]:
    """What the gateway answers itself, ahead of the HTTPRoutes: GET /v1/models (the client-facing
    model names of the pools these rules route to; unless a rule matches exactly /v1/models), 404
    for the model servers' management paths, 405 for CONNECT."""
    own = [{"name": "management-path", "match": {"safe_regex": {"regex": rx}},
            "direct_response": {"status": 404, "body": {"inline_string": NO_ROUTE}},
            "response_headers_to_add": [_json_header()]} for rx in MANAGEMENT_PATH_REGEXES]
    own += [{"name": "management-path", "match": {"path_separated_prefix": p},
             "direct_response": {"status": 404, "body": {"inline_string": NO_ROUTE}},
             "response_headers_to_add": [_json_header()]} for p in MANAGEMENT_PREFIXES]
    # CONNECT (a tunnel) matches no path route; answered here, before the buffer filter would wait
    # for the end of a body a tunnel never sends
    own.append({"name": "connect", "match": {"connect_matcher": {}},
                "direct_response": {"status": 405, "body": {"inline_string": openai_error(
                    "CONNECT is not supported here", "invalid_request_error", "method_not_allowed")}},
                "response_headers_to_add": [_json_header()],
                "typed_per_filter_config": {"envoy.filters.http.buffer": {"@type": FILTER_CONFIG, "disabled": True}}})
    listing = models_list(plane, rules)
    # An HTTPRoute that names /v1/models itself keeps it: the stack's rendered listing rule, or a
    # route of the user's (components/models_listing.py renders no listing rule there either).
    routed = any(m.path_type in ("Exact", "PathPrefix") and m.path == "/v1/models" for r in rules for m in r.matches)
    if listing["data"] and not routed:
        own.insert(0, {"name": "models", "match": {"path": "/v1/models", "headers": [
            {"name": ":method", "string_match": {"exact": "GET"}}]},
            "direct_response": {"status": 200, "body": {"inline_string": json.dumps(listing)}},
            "response_headers_to_add": [_json_header()]})
    return own


def models_list(plane: DataPlane, rules: list[ir.Rule]) -> dict:
    """GET /v1/models through the gateway for objects WITHOUT the stack's rendered models listing
    (arbitrary upstream YAML): the fallback only. A stack rendered by infershift's components has
    the listing objects (components/models_listing.py: a ConfigMap, its server, an Exact
    /v1/models rule per listener), and the local gateway answers those rules with the ConfigMap's
    listing (`ir.Rule.listing`), as a cluster's listing server does; this is then not used.

    In OpenAI's shape: every client-facing model name the rules' pools serve (their routing
    objects' names, and base models served under their own name), each with the targets behind it
    (sorted by route, pool, model): target model, pool, route, and the share of the name's requests
    on that route it gets (the route's pool weight times the pool's target weight). Rules that only
    match a pin header are left out when the route has a rule without one (the split clients get).
    tests/devstack checks it agrees with the rendered listings of every stack."""
    by_model: dict[str, list[dict]] = {}
    routes_seen: dict[str, list[ir.Rule]] = {}
    for r in rules:
        routes_seen.setdefault(r.route, []).append(r)
    for route, rs in routes_seen.items():
        main = [r for r in rs if not any(m.headers for m in r.matches)] or rs
        rule = sorted(main, key=lambda r: r.index)[0]
        live = [b for b in rule.backends if b.kind == "InferencePool" and b.weight > 0]
        total = sum(b.weight for b in rule.backends if b.weight > 0)
        for b in live:
            pool = next((p for p in plane.pools if p.name == b.name), None)
            if pool is None:
                continue
            for m in pool.models:
                weights = sum(w for _, w in m.targets) or 1
                for target, w in m.targets:
                    if w > 0:
                        by_model.setdefault(m.name, []).append({
                            "model": target, "pool": pool.name, "route": route,
                            "share": round(b.weight / total * w / weights, 4)})
    data = [{"id": name, "object": "model", "created": 0, "owned_by": "infershift",
             "targets": sorted(targets, key=lambda t: (t["route"], t["pool"], t["model"]))}
            for name, targets in sorted(by_model.items())]
    return {"object": "list", "data": data}


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


def _cel(expression: str) -> dict:
    return {"extension_filter": {"name": "envoy.access_loggers.extension_filters.cel",
                                 "typed_config": {"@type": CEL_FILTER, "expression": expression}}}


def _status(code: int) -> dict:
    return {"status_code_filter": {"comparison": {"op": "EQ", "value": {
        "default_value": code, "runtime_key": f"devstack.local_reply_{code}"}}}}


def _json_body(message: str, type_: str, code: str) -> dict:
    return {"json_format": {"error": {"message": message, "type": type_, "param": None, "code": code}}}


def _retry_after() -> list[dict]:
    return [{"header": {"key": "retry-after", "value": RETRY_AFTER_SECONDS}, "append_action": "ADD_IF_ABSENT"}]


def _as_is() -> dict:
    # The reply already is the API's error JSON (a direct response, the picker's own answer): keep it.
    return {"text_format_source": {"inline_string": "%LOCAL_REPLY_BODY%"}, "content_type": "application/json"}


def _upstream_failure_mapper() -> list[dict]:
    """Envoy answers its own upstream failures in plain text; clients of an OpenAI API expect the
    error JSON. Keyed on response flags, so answers that came from upstream pass unchanged. A
    timeout (504) is not worth retrying at once; the others (503) say when to."""
    def mapper(flags: list[str], headers: bool) -> dict:
        m: dict = {"filter": {"response_flag_filter": {"flags": flags}},
             "body_format_override": _json_body("%LOCAL_REPLY_BODY%", "upstream_error", "%RESPONSE_FLAGS%")}
        if headers:
            m["headers_to_add"] = _retry_after()
        return m
    return [mapper(["UT"], False), mapper([f for f in UPSTREAM_FLAGS if f != "UT"], True)]


def _protocol_mappers(too_large: str, max_headers_kb: int | None) -> list[dict]:
    """Envoy's protocol-level replies by status, as the API's error JSON (infershift/gateway_errors.py:
    the same table a cluster's Envoy Gateway answers with); the 431 names the gateway's limits."""
    out = []
    replies = protocol_replies(GATEWAY_MAX_HEADERS, max_headers_kb) if max_headers_kb else protocol_replies()
    for status, rewrite, message, type_, code, retry in replies:
        m: dict = {"filter": _status(status),
                   "body_format_override": _json_body(too_large if status == 413 else message, type_, code)}
        if rewrite:
            m["status_code"] = rewrite
        if retry:
            m["headers_to_add"] = _retry_after()
        out.append(m)
    return out


def _local_reply(first: list[dict], too_large: str, max_headers_kb: int | None = None) -> dict:
    """Every answer Envoy produces itself, as the API's error JSON with a fitting status: the
    direct responses and the picker's answers as they are, then `first` (the tier's own), upstream
    failures by flag, protocol-level replies by status, and anything else as a generic error."""
    passthrough = {
        "filter": _cel("response.code_details == 'direct_response' || response.code_details.startsWith('picker_')"),
        "body_format_override": _as_is(),
    }
    return {
        "mappers": [passthrough, *first, *_upstream_failure_mapper(), *_protocol_mappers(too_large, max_headers_kb)],
        "body_format": _json_body("%LOCAL_REPLY_BODY% (%RESPONSE_CODE_DETAILS%)", "server_error",
                                  "%RESPONSE_CODE_DETAILS%"),
    }


def _gateway_reply(max_headers_kb: int) -> dict:
    # A backendRef that does not resolve: Gateway API wants its share answered with 500.
    unresolved = {
        "filter": _cel(f"xds.cluster_name == '{UNRESOLVED_CLUSTER}'"),
        "status_code": 500,
        "body": {"inline_string": NO_BACKEND},
        "body_format_override": _as_is(),
    }
    # In the gateway tier a 413 is always Envoy's own: the body is over the stack's bufferLimit.
    return _local_reply([unresolved], "request body is larger than the gateway's bufferLimit", max_headers_kb)


def _picker_failure_reply(pool: str, fail_close: bool) -> dict:
    """Envoy's own reply when a FailClose pool's picker cannot be reached is an empty 500 or
    503; make it a 503 in the OpenAI error shape. Only that reply: the picker's own error answers
    (which already carry OpenAI JSON) have other response code details."""
    first = []
    if fail_close:
        first.append({
            "filter": _cel("response.code_details.startsWith('ext_proc')"),
            # Unavailable whichever way the stream broke (some ext_proc paths answer 500).
            "status_code": 503,
            "body": {"inline_string": openai_error(
                f"the endpoint picker of InferencePool {pool} is unavailable (failureMode FailClose)",
                "service_unavailable", "picker_unavailable")},
            "body_format_override": _as_is(),
            "headers_to_add": _retry_after(),
        })
    return _local_reply(first, f"request body is larger than InferencePool {pool}'s picker accepts")


def _router() -> dict:
    # No x-envoy-* headers upstream (x-envoy-expected-rq-timeout-ms, x-envoy-attempt-count, ...):
    # what the picker sets is all the routing headers a model server sees.
    return {"name": "envoy.filters.http.router", "typed_config": {"@type": ROUTER, "suppress_envoy_headers": True}}


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
            "http_filters": http_filters + [_router()],
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


def strip_routing_headers(keep: list[str]) -> dict:
    """The gateway listener's early header mutation (before routing, the picker and Envoy's own
    header handling): every client-sent header of the routing namespaces goes, except `keep`."""
    mutations = []
    for m in strip_matchers(keep):
        key = {"prefix": m["prefix"]} if "prefix" in m else {"safe_regex": {"regex": m["regex"]}}
        mutations.append({"remove_on_match": {"key_matcher": key}})
    return {"name": "envoy.http.early_header_mutation.header_mutation",
            "typed_config": {"@type": EARLY_HEADER_MUTATION, "mutations": mutations}}


def _gateway_listener(plane: DataPlane, name: str, port: int, xds_dir: Path | None) -> dict:
    # Hosts match without their port (Host: example.com:8080 is example.com).
    routes = _routes_source(gateway_route_name(name), gateway_routes(plane, name), xds_dir)
    lst = next(x for x in plane.listeners if x.key == name)
    filters = []
    if plane.buffer_limit:
        # bufferLimit is enforced here, for every route: a bigger body gets 413 (JSON) before it
        # goes anywhere (a gateway buffers bodies for its ext_proc filter the same way).
        filters.append({"name": "envoy.filters.http.buffer",
                        "typed_config": {"@type": BUFFER, "max_request_bytes": plane.buffer_limit}})
    hcm = _hcm(f"gw_{name.replace('/', '.')}", routes, filters, _gateway_reply(plane.max_request_headers_kb),
               strip_any_host_port=True,
               # /a/../v1/load_lora_adapter, //admin/, %2F: matched as the server will read them
               normalize_path=True, merge_slashes=True, path_with_escaped_slashes_action="UNESCAPE_AND_FORWARD",
               early_header_mutation_extensions=[strip_routing_headers(client_headers(lst.rules))],
               common_http_protocol_options={"max_headers_count": GATEWAY_MAX_HEADERS},
               max_request_headers_kb=plane.max_request_headers_kb)
    listener: dict = {
        "name": f"gateway-{name}",
        "address": _addr(LOOPBACK, port),
        "enable_reuse_port": False,  # a second devstack on the same port must fail, not share it
        "filter_chains": [{"filters": [hcm]}],
    }
    if plane.buffer_limit:
        listener["per_connection_buffer_limit_bytes"] = plane.buffer_limit
    return listener


# --- second tier: one listener, picker and endpoints cluster per pool -------------------


def picker_cluster(pool: str) -> str:
    return f"picker-{pool}"


def endpoints_cluster(pool: str) -> str:
    return f"pool-{pool}-endpoints"


def fallback_cluster(pool: str) -> str:
    return f"pool-{pool}-fallback"


_NO_PICKER = {"typed_per_filter_config": {f: {"@type": FILTER_CONFIG, "disabled": True}
                                          for f in (EXT_PROC_FILTER, "infershift.picker.response")}}


def _method_not_allowed() -> list[dict]:
    """The completion paths take POST only: other methods get 405 here, without a picker round trip
    (vLLM's own 405 is FastAPI's {"detail": ...}, not the API's error shape)."""
    return [{
        "name": "method-not-allowed",
        "match": {"path": path, "headers": [{"name": ":method", "string_match": {"exact": "POST"},
                                             "invert_match": True}]},
        "direct_response": {"status": 405, "body": {"inline_string": openai_error(
            f"{path} takes POST", "invalid_request_error", "method_not_allowed")}},
        "response_headers_to_add": [_json_header(), {"header": {"key": "allow", "value": "POST"},
                                                     "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}],
        **_NO_PICKER,
    } for path in COMPLETION_PATHS]


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

    def to(cluster: str, rule: ir.Rule | None = None) -> dict:
        action: dict = {"cluster": cluster, "timeout": "0s", "retry_policy": RETRY_POLICY}
        if rule is not None:
            action["request_mirror_policies"] = _mirror_policies(rule)
        return action

    routes: list[dict] = _method_not_allowed()
    for rule in mirrors:
        routes.append({
            "name": f"picked-endpoint-{rule.name}",
            "match": {"prefix": "/", "headers": [picked_header, tagged(rule)]},
            "route": to(endpoints_cluster(pool.name), rule),
        })
    routes.append({"name": "picked-endpoint", "match": {"prefix": "/", "headers": [picked_header]},
                   "route": to(endpoints_cluster(pool.name))})
    if pool.failure_mode == "FailOpen":
        for rule in mirrors:
            routes.append({
                "name": f"fail-open-{rule.name}",
                "match": {"prefix": "/", "headers": [tagged(rule)]},
                "route": to(fallback_cluster(pool.name), rule),
            })
        routes.append({"name": "fail-open", "match": {"prefix": "/"}, "route": to(fallback_cluster(pool.name))})
    else:
        routes.append({
            "name": "fail-close",
            "match": {"prefix": "/"},
            "direct_response": {"status": 503, "body": {"inline_string": openai_error(
                f"the endpoint picker of InferencePool {pool.name} chose no endpoint (failureMode FailClose)",
                "service_unavailable", "picker_unavailable")}},
            "response_headers_to_add": [_json_header(), *_retry_after()],
        })
    return {
        "name": pool_route_name(pool.name),
        # The picker's request-to-itself marker (picker/envoy_config.py) and the gateway's mirror tag
        # never go upstream.
        "request_headers_to_remove": [RESTORE_HEADER, MIRROR_HEADER],
        # x-envoy-attempt-count on responses tells the picker's response filter a request was
        # retried (its pick failed); the gateway tier removes it before the client sees it
        "virtual_hosts": [{"name": pool.name, "domains": ["*"], "routes": routes,
                           "include_attempt_count_in_response": True}],
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
        message_timeout=PICKER_MESSAGE_TIMEOUT, max_request_bytes=pool.max_body_bytes, report_failures=True)
    routes = _routes_source(pool_route_name(pool.name), pool_routes(plane, pool), xds_dir)
    return {
        "name": f"pool-{pool.name}",
        "address": _addr(LOOPBACK, pool.port),
        "enable_reuse_port": False,
        "per_connection_buffer_limit_bytes": pool.max_body_bytes,
        "filter_chains": [{"filters": [_hcm(f"pool_{pool.name}", routes, [strip, *picker_filters],
                                            _picker_failure_reply(pool.name, pool.failure_mode == "FailClose"),
                                            common_http_protocol_options={"max_headers_count": POOL_MAX_HEADERS},
                                            max_request_headers_kb=POOL_MAX_HEADERS_KB)]}],
    }


def _endpoints_cluster(pool: Pool) -> dict:
    """The pool's endpoints, reached as the picker chose: the override_host policy takes the picker's
    `primary,fallback` list (header or envoy.lb metadata) and uses the first endpoint that is not
    ejected; without a choice (FailOpen, picker down) it falls back to round robin."""
    name = endpoints_cluster(pool.name)
    return {
        "name": name,
        "type": "STATIC",
        "connect_timeout": "2s",
        "load_assignment": {"cluster_name": name, **_endpoints([e.address for e in pool.endpoints])},
        "load_balancing_policy": {"policies": [{"typed_extension_config": {
            "name": "envoy.load_balancing_policies.override_host",
            "typed_config": {
                "@type": OVERRIDE_HOST,
                # one source: the header and envoy.lb carry the same list, and the policy would try
                # the concatenation (a retry would go to the primary again)
                "override_host_sources": [{"header": ENDPOINT_HEADER}],
                "fallback_policy": {"policies": [{"typed_extension_config": {
                    "name": "envoy.load_balancing_policies.round_robin", "typed_config": {"@type": ROUND_ROBIN}}}]},
            }}}]},
        "outlier_detection": OUTLIER_DETECTION,
        "circuit_breakers": CIRCUIT_BREAKERS,
        "per_connection_buffer_limit_bytes": pool.max_body_bytes,
    }


def _pool_clusters(pool: Pool) -> list[dict]:
    clusters = [
        # The first tier reaches the pool's listener through this cluster (also as a mirror).
        _static_cluster(pool_cluster(pool.name), [f"{LOOPBACK}:{pool.port}"], buffer=pool.max_body_bytes),
        # TLS to the picker as a cluster's gateway talks to it (ALPN h2, its self-signed
        # certificate not verified); plaintext only for a picker run with --secure-serving=false.
        _static_cluster(picker_cluster(pool.name), [f"{LOOPBACK}:{pool.picker_port}"], http2=True,
                        tls=pool.picker_tls),
        _endpoints_cluster(pool),
    ]
    if pool.failure_mode == "FailOpen":
        fallback = _static_cluster(fallback_cluster(pool.name), [e.address for e in pool.endpoints],
                                   buffer=pool.max_body_bytes)
        fallback["outlier_detection"] = OUTLIER_DETECTION
        fallback["circuit_breakers"] = CIRCUIT_BREAKERS
        clusters.append(fallback)
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
