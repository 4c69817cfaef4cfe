"""Kubernetes objects -> the local gateway's IR (a pure function of the objects).

Reads what a cluster's gateway and endpoint pickers read: Gateways and their listeners,
HTTPRoutes (matches, hostnames, weighted backendRefs, RequestMirror filters), InferencePools
(v1, v1alpha2, and ACK's v1alpha1 with its attach-to annotation), the model-routing objects,
Services, Envoy Gateway's traffic policies, the pickers' ConfigMaps, and the Deployments the
pools select (their model server command lines). What it cannot honour locally is listed in
`ignored`; what a gateway would report about the objects (an unresolved backend, a route that
attaches to no listener) is in `warnings`.
"""
from __future__ import annotations

import json
from collections import defaultdict

import yaml

from infershift import contract
from infershift.spec.base import duration_seconds, quantity_bytes

from . import ir
from .modelserver import ModelServer, NotAModelServer, parse

BUFFER_HEADROOM = 1 << 20
DEFAULT_MAX_BODY = 20 * 1024 * 1024
POOL_KINDS = {contract.POOL_V1, contract.POOL_V1ALPHA2, contract.POOL_V1ALPHA1}
ROUTING_KINDS = {"InferenceModel", "InferenceObjective", "InferenceModelRewrite"}
UNDERSTOOD = {"GatewayClass", "Gateway", "HTTPRoute", "InferencePool", "Service", "ClientTrafficPolicy",
              "BackendTrafficPolicy", "ConfigMap", "Deployment", *ROUTING_KINDS}
PICKER_MODULE = "infershift.picker"


def _meta(o: dict) -> dict:
    return o.get("metadata") or {}


def _name(o: dict) -> str:
    return str(_meta(o).get("name", ""))


def _group(o: dict) -> str:
    return str(o.get("apiVersion", "")).rpartition("/")[0]


def _labels_match(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


class _Report:
    def __init__(self) -> None:
        self.ignored: list[str] = []
        self.warnings: list[str] = []
        self.notes: list[str] = []

    def ignore(self, text: str) -> None:
        if text not in self.ignored:
            self.ignored.append(text)

    def warn(self, text: str) -> None:
        if text not in self.warnings:
            self.warnings.append(text)


# --- model servers, services ------------------------------------------------------------


def _container_env(c: dict) -> dict[str, str]:
    return {str(e["name"]): str(e["value"]) for e in c.get("env") or [] if "name" in e and "value" in e}


def _servers(deployments: list[dict], rep: _Report) -> tuple[list[ir.ServerGroup], dict[str, dict]]:
    """(model-server Deployments, other Deployments by name)."""
    servers, others = [], {}
    for d in deployments:
        spec = d.get("spec") or {}
        tmpl = spec.get("template") or {}
        labels = {str(k): str(v) for k, v in ((tmpl.get("metadata") or {}).get("labels") or {}).items()}
        containers = (tmpl.get("spec") or {}).get("containers") or []
        found: ModelServer | None = None
        reasons = []
        for c in containers:
            try:
                found = parse(c, _container_env(c))
                break
            except NotAModelServer as e:
                reasons.append(str(e))
        if found is None:
            others[_name(d)] = d
            continue
        replicas = spec.get("replicas", 1)
        replicas = int(replicas) if isinstance(replicas, int) and replicas >= 0 else 1
        if found.not_understood:
            rep.ignore(f"Deployment {_name(d)}: arguments not understood (kept, not simulated): "
                       + " ".join(found.not_understood))
        servers.append(ir.ServerGroup(_name(d), labels, replicas, found))
    return servers, others


def _services(objs: list[dict], servers: list[ir.ServerGroup],
              recorders: list[ir.Recorder] | None = None) -> list[ir.Service]:
    out = []
    for s in objs:
        sel = {str(k): str(v) for k, v in ((s.get("spec") or {}).get("selector") or {}).items()}
        members = tuple(g.name for g in servers if _labels_match(sel, g.labels)) + \
            tuple(r.name for r in recorders or [] if _labels_match(sel, r.labels))
        out.append(ir.Service(_name(s), sel, members))
    return out


def _flag(argv: list[str], flag: str) -> str | None:
    """The value after `flag` in a container's argv (the first one), or None."""
    i = argv.index(flag) if flag in argv else -1
    return argv[i + 1] if 0 <= i < len(argv) - 1 else None


def _recorders(others: dict[str, dict], rep: _Report) -> list[ir.Recorder]:
    """Deployments running the shadow recorder (`python -m infershift.picker.recorder --upstream
    http://<service>[.<ns>...]:<port> --name N`): the local stack runs each in front of the Service
    its upstream URL names."""
    from urllib.parse import urlsplit

    out = []
    for d in others.values():
        c = _runs(d, contract.RECORDER_MODULE)
        if c is None:
            continue
        argv = [str(x) for x in (c.get("command") or []) + (c.get("args") or [])]
        upstream, name, chars = (_flag(argv, f) for f in ("--upstream", "--name", "--max-text-chars"))
        host = urlsplit(upstream).hostname if upstream else None
        if not host or not name:
            rep.warn(f"Deployment {_name(d)} runs the shadow recorder without --upstream URL and --name; not run")
            continue
        out.append(ir.Recorder(_name(d), _pod_labels(d), host.split(".")[0], name,
                               int(chars) if chars and chars.isdigit() else 2000))
    return out


# --- pools and their pickers ------------------------------------------------------------


def _pool_shape(pool: dict) -> tuple[dict[str, str], tuple[int, ...], dict]:
    """(selector, target ports, picker reference) of any InferencePool version."""
    spec = pool.get("spec") or {}
    if pool.get("apiVersion") == contract.POOL_V1:
        sel = (spec.get("selector") or {}).get("matchLabels") or {}
        ports = tuple(int(p["number"]) for p in spec.get("targetPorts") or [] if p.get("number"))
        ref = dict(spec.get("endpointPickerRef") or {})
        port = (ref.get("port") or {}).get("number")
    else:  # v1alpha2 and v1alpha1 share the shape
        sel = spec.get("selector") or {}
        ports = (int(spec["targetPortNumber"]),) if spec.get("targetPortNumber") else ()
        ref = dict(spec.get("extensionRef") or {})
        port = ref.get("portNumber")
    ref["port"] = int(port) if port else contract.PICKER_GRPC_PORT
    return {str(k): str(v) for k, v in sel.items()}, ports or (contract.MODEL_SERVER_PORT,), ref


def _pod_labels(deployment: dict) -> dict:
    return ((deployment.get("spec") or {}).get("template", {}).get("metadata") or {}).get("labels") or {}


def _mounted_text(deployment: dict, c: dict, flag: str, configmaps: dict[str, dict],
                  what: str) -> tuple[str | None, str]:
    """(the text, where it is) of the file a container's `FLAG PATH` names in a ConfigMap volume;
    (None, what is wrong) when it is not one."""
    pod = (deployment.get("spec") or {}).get("template", {}).get("spec") or {}
    volumes = {v.get("name"): v for v in pod.get("volumes") or []}
    argv = [str(x) for x in (c.get("command") or []) + (c.get("args") or [])]
    path = next((argv[i + 1] for i, a in enumerate(argv[:-1]) if a == flag), None)
    if path is None:
        return None, f"Deployment {_name(deployment)} runs {what} without {flag}"
    for m in c.get("volumeMounts") or []:
        mount = str(m.get("mountPath", "")).rstrip("/")
        if not path.startswith(mount + "/"):
            continue
        cm_name = ((volumes.get(m.get("name")) or {}).get("configMap") or {}).get("name")
        cm = configmaps.get(cm_name or "")
        if cm is None:
            return None, (f"ConfigMap {cm_name!r} (mounted by Deployment {_name(deployment)}) "
                          "is not among the objects")
        key = path[len(mount) + 1:]
        for item in ((volumes.get(m.get("name")) or {}).get("configMap") or {}).get("items") or []:
            if item.get("path") == key:
                key = item.get("key", key)
        text = (cm.get("data") or {}).get(key)
        if text is None:
            return None, f"ConfigMap {cm_name} has no key {key!r}"
        return str(text), f"ConfigMap {cm_name} key {key}"
    return None, f"Deployment {_name(deployment)}: {flag} {path} is not in a ConfigMap volume"


def _runs(deployment: dict, module: str) -> dict | None:
    """The container of a Deployment that runs `python -m MODULE`."""
    pod = (deployment.get("spec") or {}).get("template", {}).get("spec") or {}
    for c in pod.get("containers") or []:
        argv = [str(x) for x in (c.get("command") or []) + (c.get("args") or [])]
        if module in argv:
            return c
    return None


def _config_of(deployment: dict, configmaps: dict[str, dict]) -> tuple[dict | None, str]:
    """The picker config a picker Deployment mounts: its `--config PATH` in a ConfigMap volume."""
    c = _runs(deployment, PICKER_MODULE)
    if c is None:
        return None, f"Deployment {_name(deployment)} does not run infershift's picker"
    text, source = _mounted_text(deployment, c, "--config", configmaps, "the picker")
    if text is None:
        return None, source
    try:
        return yaml.safe_load(text) or {}, source
    except yaml.YAMLError as e:
        return None, f"{source} is not valid YAML: {e}"


def _listings(others: dict[str, dict], services: dict[str, dict], configmaps: dict[str, dict],
              rep: _Report) -> dict[str, dict[str, str]]:
    """Service -> listing key -> `/v1/models` body, for the Services in front of a Deployment
    running the models listing server (components/models_listing.py renders them; picker/listing.py
    serves the mounted file): what the local gateway answers for the rules that route there."""
    from infershift.picker.listing import ListingFileError, parse

    out: dict[str, dict[str, str]] = {}
    for d in others.values():
        c = _runs(d, contract.LISTING_MODULE)
        if c is None:
            continue
        text, source = _mounted_text(d, c, "--file", configmaps, "the models listing")
        if text is None:
            rep.warn(f"Deployment {_name(d)} serves the models listing, but: {source}; /v1/models gets no listing")
            continue
        try:
            listings = parse(text, source)
        except ListingFileError as e:
            rep.warn(f"Deployment {_name(d)}: {e}; /v1/models gets no listing")
            continue
        for name, svc in services.items():
            sel = {str(k): str(v) for k, v in ((svc.get("spec") or {}).get("selector") or {}).items()}
            if _labels_match(sel, _pod_labels(d)):
                out[name] = {k: json.dumps(v) for k, v in listings.items()}
    return out


def _picker_tls(deployment: dict, rep: _Report) -> bool:
    """Whether the picker Deployment serves ext_proc over TLS: the picker's default, unless its
    command line says `--secure-serving=false` (the last occurrence wins, as with Go's flags). A
    certificate from a Secret (`--cert-path`) is a cluster object: locally the picker makes its own."""
    pod = (deployment.get("spec") or {}).get("template", {}).get("spec") or {}
    for c in pod.get("containers") or []:
        argv = [str(x) for x in (c.get("command") or []) + (c.get("args") or [])]
        if PICKER_MODULE not in argv:
            continue
        tls = True
        for i, a in enumerate(argv):
            if a == "--secure-serving":
                nxt = argv[i + 1].lower() if i + 1 < len(argv) else ""
                tls = nxt not in ("false", "0", "f", "no", "off")
            elif a.startswith("--secure-serving="):
                tls = a.split("=", 1)[1].lower() not in ("false", "0", "f", "no", "off")
            elif a == "--cert-path" or a.startswith("--cert-path="):
                rep.ignore(f"Deployment {_name(deployment)}: the picker's certificate (--cert-path, a Secret); "
                           "the local picker serves TLS with a self-signed one")
        return tls
    return True


def _picker(pool_name: str, ref: dict, services: dict[str, dict], others: dict[str, dict],
            configmaps: dict[str, dict], rep: _Report) -> ir.Picker:
    failure = ref.get("failureMode") or "FailClose"  # the Inference Extension's default
    svc_name = str(ref.get("name") or "")
    base = {"pool": {"name": pool_name, "namespace": "default"}, "failureMode": failure}
    svc = services.get(svc_name)
    if svc is None:
        rep.notes.append(f"InferencePool {pool_name}: its picker Service {svc_name!r} is not among the objects "
                         "(a managed picker, e.g. ACK's add-on); the local picker runs with its default config")
        return ir.Picker(svc_name, failure, base, "defaults (picker Service not among the objects)")
    sel = {str(k): str(v) for k, v in ((svc.get("spec") or {}).get("selector") or {}).items()}
    deps = [d for d in others.values() if _labels_match(sel, _pod_labels(d))]
    if not deps:
        rep.notes.append(f"InferencePool {pool_name}: no Deployment behind picker Service {svc_name}; "
                         "the local picker runs with its default config")
        return ir.Picker(svc_name, failure, base, "defaults (no picker Deployment)")
    config, source = _config_of(deps[0], configmaps)
    tls = _picker_tls(deps[0], rep)
    if config is None:
        rep.notes.append(f"InferencePool {pool_name}: {source}; the local picker runs with its default config")
        return ir.Picker(svc_name, failure, base, f"defaults ({source})", tls)
    if not isinstance(config, dict):
        rep.warn(f"InferencePool {pool_name}: the picker config in {source} is not a mapping")
        return ir.Picker(svc_name, failure, base, f"defaults ({source} is not a mapping)", tls)
    return ir.Picker(svc_name, failure, config, source, tls)


def client_models(pool: ir.Pool) -> list[str]:
    """The model names clients use for a pool, from its routing objects."""
    out = []
    for o in pool.routing:
        spec = o.get("spec") or {}
        if o.get("kind") == "InferenceModel" and spec.get("modelName"):
            out.append(str(spec["modelName"]))
        for rule in spec.get("rules") or []:
            out += [str((m.get("model") or {}).get("value")) for m in rule.get("matches") or []
                    if (m.get("model") or {}).get("value")]
        model = (_meta(o).get("annotations") or {}).get(contract.MODEL_NAME_ANNOTATION)
        if o.get("kind") == "InferenceObjective" and model:
            out.append(str(model))
    return list(dict.fromkeys(out))


def _split_warnings(ports: list[ir.Port], pools: list[ir.Pool], servers: list[ir.ServerGroup], rep: _Report) -> None:
    """A rule that splits between pools sends a share of every model's requests to each pool: a
    model only some of them route or serve gets 404 model_not_found for the rest."""
    by_server = {s.name: s for s in servers}
    by_pool = {p.name: p for p in pools}
    known = {p.name: set(client_models(p)) | {m for g in p.servers for m in by_server[g].server.served_names}
             for p in pools}
    for port in ports:
        for rule in port.rules:
            split = [b.name for b in rule.backends if b.kind == "InferencePool" and b.weight > 0 and b.name in by_pool]
            if len(split) < 2:
                continue
            for model in sorted(set().union(*(known[p] for p in split))):
                missing = [p for p in split if model not in known[p]]
                if missing:
                    having = [p for p in split if p not in missing]
                    rep.warn(f"HTTPRoute {rule.route}: model {model!r} is routed only by pool {', '.join(having)}; "
                             f"requests for it that the weights send to {', '.join(missing)} will get 404 "
                             "model_not_found")


def _max_body(picker: ir.Picker, buffer_limit: int | None) -> int:
    # Above the picker's body limit (headers and framing need room too), so the picker, not
    # Envoy, rejects a too-large body, with an OpenAI error.
    limit = (picker.config.get("limits") or {}).get("maxBodyBytes")
    body = limit if isinstance(limit, int) and not isinstance(limit, bool) and limit > 0 else DEFAULT_MAX_BODY
    if buffer_limit:
        body = max(body, buffer_limit)
    return body + BUFFER_HEADROOM


# --- routes -----------------------------------------------------------------------------


def _is_wild(h: str) -> bool:
    return h.startswith("*.")


def _covers(wild: str, host: str) -> bool:
    """Does wildcard `*.example.com` cover `host` (a name or a narrower wildcard)?"""
    suffix = wild[1:]  # ".example.com"
    return host.endswith(suffix) and len(host) > len(suffix)


def intersect(listener: str | None, route: tuple[str, ...]) -> tuple[str, ...] | None:
    """Gateway API hostname intersection of a listener and a route: the hostnames the route
    serves on that listener; () = any host; None = no intersection (the route does not attach)."""
    if not route:
        return (listener,) if listener else ()
    if not listener:
        return tuple(route)
    out = []
    for h in route:
        if h == listener:
            out.append(h)
        elif _is_wild(listener) and _covers(listener, h):
            out.append(h)  # the route's name is the narrower one
        elif _is_wild(h) and _covers(h, listener):
            out.append(listener)
    return tuple(dict.fromkeys(out)) or None


def _kv(items: list, kind: str, where: str, rep: _Report) -> tuple[ir.KeyValueMatch, ...]:
    out = []
    for m in items or []:
        t = m.get("type") or "Exact"
        if t not in ("Exact", "RegularExpression"):
            rep.warn(f"{where}: {kind} match type {t!r} is not supported; treated as Exact")
            t = "Exact"
        name = str(m.get("name", ""))
        out.append(ir.KeyValueMatch(t, name.lower() if kind == "header" else name, str(m.get("value", ""))))
    return tuple(out)


def _matches(rule: dict, where: str, rep: _Report) -> tuple[ir.Match, ...]:
    raw = rule.get("matches") or [{}]
    out = []
    for m in raw:
        path = m.get("path") or {}
        out.append(ir.Match(
            path_type=path.get("type") or "PathPrefix", path=str(path.get("value") or "/"),
            headers=_kv(m.get("headers"), "header", where, rep), query=_kv(m.get("queryParams"), "query", where, rep),
            method=m.get("method")))
    return tuple(out)


def _ref_kind(ref: dict) -> str:
    return ref.get("kind") or "Service"


def _backend(ref: dict, pools: set[str], services: set[str], where: str, rep: _Report) -> ir.Backend:
    kind, name = _ref_kind(ref), str(ref.get("name", ""))
    weight = ref.get("weight", 1)
    weight = int(weight) if isinstance(weight, int) and not isinstance(weight, bool) and weight >= 0 else 1
    if (kind == "InferencePool" and name in pools) or (kind == "Service" and name in services):
        return ir.Backend(kind, name, weight, ref.get("port"))
    rep.warn(f"{where}: backendRef {kind} {name!r} not found (ResolvedRefs=False, BackendNotFound); "
             "its share of the requests is answered with 500, as Gateway API requires")
    return ir.Backend("Unresolved", f"{kind}/{name}", weight, None)


def _mirror(f: dict, pools: set[str], services: set[str], where: str, rep: _Report) -> ir.Mirror | None:
    m = f.get("requestMirror") or {}
    ref = m.get("backendRef") or {}
    kind, name = _ref_kind(ref), str(ref.get("name", ""))
    if not ((kind == "InferencePool" and name in pools) or (kind == "Service" and name in services)):
        rep.warn(f"{where}: RequestMirror backendRef {kind} {name!r} not found; nothing is mirrored")
        return None
    if m.get("fraction"):
        num, den = int(m["fraction"].get("numerator", 0)), int(m["fraction"].get("denominator", 100) or 100)
    else:
        num, den = int(m.get("percent", 100)), 100
    return ir.Mirror(kind, name, ref.get("port"), num, den)


def _lists_models(rule: dict) -> bool:
    """A rule matching /v1/models (Exact or as a prefix)."""
    paths = [(m.get("path") or {}) for m in rule.get("matches") or [{}]]
    return any(str(p.get("value", "/")) == "/v1/models" for p in paths)


def _refuses(rule: dict, listings: dict[str, dict[str, str]]) -> bool:
    """A rule whose one backend is a models listing Service on other paths: its server answers 404."""
    refs = rule.get("backendRefs") or []
    return (len(refs) == 1 and _ref_kind(refs[0]) == "Service" and str(refs[0].get("name", "")) in listings
            and not _lists_models(rule))


def _listing_key(rule: dict) -> str | None:
    """The listing key a rule's RequestHeaderModifier sets (contract.LISTING_HEADER), if it does."""
    for f in rule.get("filters") or []:
        if f.get("type") == "RequestHeaderModifier":
            for h in (f.get("requestHeaderModifier") or {}).get("set") or []:
                if str(h.get("name", "")).lower() == contract.LISTING_HEADER:
                    return str(h.get("value", ""))
    return None


def _is_listing_filter(f: dict) -> bool:
    mod = f.get("requestHeaderModifier") or {}
    return (f.get("type") == "RequestHeaderModifier" and set(mod) == {"set"}
            and all(str(h.get("name", "")).lower() == contract.LISTING_HEADER for h in mod["set"]))


def _rule_listing(rule: dict, listings: dict[str, dict[str, str]], where: str, rep: _Report) -> str | None:
    """The `/v1/models` body of a rule whose one backend is a models listing Service."""
    refs = rule.get("backendRefs") or []
    if len(refs) != 1 or _ref_kind(refs[0]) != "Service" or str(refs[0].get("name", "")) not in listings:
        return None
    if not _lists_models(rule):
        return None
    served = listings[str(refs[0]["name"])]
    key = _listing_key(rule)
    if key is None and len(served) == 1:
        key = next(iter(served))
    if key not in served:
        rep.warn(f"{where}: the models listing Service {refs[0]['name']} has no listing {key!r} "
                 f"(it has {', '.join(sorted(served))}); locally the rule goes to the Service (no endpoints), "
                 "a cluster's listing server answers 404")
        return None
    return served[key]


def _rule(route: dict, order: int, idx: int, rule: dict, hostnames: tuple[str, ...], pools: set[str],
          services: set[str], timeout: float | None, rep: _Report, many: bool,
          listings: dict[str, dict[str, str]] | None = None) -> ir.Rule:
    rname = _name(route)
    where = f"HTTPRoute {rname} rule {idx}"
    backends = tuple(_backend(r, pools, services, where, rep) for r in rule.get("backendRefs") or [])
    listing = _rule_listing(rule, listings or {}, where, rep)
    mirrors = []
    for f in rule.get("filters") or []:
        if listing is not None and _is_listing_filter(f):
            pass  # which listing the server answers with: the local gateway answers with it itself
        elif f.get("type") == "RequestMirror":
            m = _mirror(f, pools, services, where, rep)
            if m:
                mirrors.append(m)
        elif f.get("type") == "RequestHeaderModifier" and set(f.get("requestHeaderModifier") or {}) == {"remove"} \
                and all(str(h).lower().startswith(contract.ROUTING_HEADER_PREFIXES)
                        for h in f["requestHeaderModifier"]["remove"]):
            pass  # routing-namespace removals: the local gateway strips those by the route's own rules
        else:
            rep.ignore(f"{where}: filter {f.get('type')} (not applied locally)")
    rule_timeout = (rule.get("timeouts") or {}).get("request")
    if rule_timeout:
        timeout = duration_seconds(str(rule_timeout))
    return ir.Rule(name=f"{rname}.{idx}" if many else rname, route=rname, index=idx, order=order,
                   hostnames=hostnames, matches=_matches(rule, where, rep), backends=backends,
                   mirrors=tuple(mirrors), timeout=timeout, client_headers=_client_headers(route, rep),
                   listing=listing, refused=_refuses(rule, listings or {}))


def _client_headers(route: dict, rep: _Report) -> tuple[str, ...]:
    """The routing-namespace headers an HTTPRoute lets clients send (its client-headers annotation):
    only the objective and fairness-id headers can be; a client never names the target or endpoint."""
    text = (_meta(route).get("annotations") or {}).get(contract.CLIENT_HEADERS_ANNOTATION) or ""
    names = [n.strip().lower() for n in str(text).split(",") if n.strip()]
    bad = [n for n in names if n not in contract.CLIENT_CHOOSABLE_HEADERS]
    if bad:
        rep.warn(f"HTTPRoute {_name(route)}: annotation {contract.CLIENT_HEADERS_ANNOTATION} names "
                 f"{', '.join(bad)}, which clients may not send (only {', '.join(contract.CLIENT_CHOOSABLE_HEADERS)}); "
                 "ignored")
    return tuple(dict.fromkeys(n for n in names if n not in bad))


def _parent_listeners(ref: dict, gateways: dict[str, list[ir.Listener]]) -> list[ir.Listener]:
    if (ref.get("kind") or "Gateway") != "Gateway":
        return []
    lst = gateways.get(str(ref.get("name", "")), [])
    if ref.get("sectionName"):
        lst = [x for x in lst if x.name == ref["sectionName"]]
    if ref.get("port"):
        lst = [x for x in lst if x.port == int(ref["port"])]
    return lst


def _attach_to(pool: dict) -> dict | None:
    text = (_meta(pool).get("annotations") or {}).get(contract.ATTACH_TO_ANNOTATION)
    if not text:
        return None
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        value = None
    if isinstance(value, dict) and value.get("name"):
        return value
    if isinstance(value, str) and "/" in value:  # "gateway/listener"
        gw, _, section = value.partition("/")
        return {"name": gw, "sectionName": section}
    return {"invalid": text}


# --- the whole translation --------------------------------------------------------------


def translate(objects: list[dict]) -> ir.Gateway:
    rep = _Report()
    by_kind: dict[str, list[dict]] = defaultdict(list)
    for o in objects:
        kind = str(o.get("kind", ""))
        if kind == "InferencePool" and o.get("apiVersion") not in POOL_KINDS:
            rep.ignore(f"InferencePool {_name(o)}: apiVersion {o.get('apiVersion')} (not understood)")
            continue
        if kind in UNDERSTOOD:
            by_kind[kind].append(o)
        else:
            rep.ignore(f"{kind} {_name(o)}")
    servers, others = _servers(by_kind["Deployment"], rep)
    services_objs = {_name(s): s for s in by_kind["Service"]}
    configmaps = {_name(c): c for c in by_kind["ConfigMap"]}
    listings = _listings(others, services_objs, configmaps, rep)

    # Gateway-wide policies (Envoy Gateway): the first one targeting a Gateway wins.
    buffer_limit = request_timeout = max_headers_kb = None
    route_timeouts: dict[str, float] = {}
    for p in by_kind["ClientTrafficPolicy"]:
        spec = p.get("spec") or {}
        limit = (spec.get("connection") or {}).get("bufferLimit")
        if limit and buffer_limit is None:
            buffer_limit = quantity_bytes(str(limit))
        header_limit = (spec.get("headers") or {}).get("maxRequestHeaderLimit")
        if header_limit and max_headers_kb is None:
            # a quantity (bare number: bytes), rounded up to whole KiB as Envoy Gateway does
            max_headers_kb = max(1, -(-quantity_bytes(str(header_limit)) // 1024))
        # headers.earlyRequestHeaders: the local Envoy strips the routing namespaces itself, by
        # the same rules (infershift/routing_headers.py).
        other = sorted(set(spec) - {"connection", "targetRef", "targetRefs", "headers"})
        if (other or set(spec.get("connection") or {}) - {"bufferLimit"}
                or set(spec.get("headers") or {}) - {"earlyRequestHeaders", "maxRequestHeaderLimit"}):
            rep.ignore(f"ClientTrafficPolicy {_name(p)}: fields other than connection.bufferLimit, "
                       "headers.earlyRequestHeaders and headers.maxRequestHeaderLimit")
    for p in by_kind["BackendTrafficPolicy"]:
        spec = p.get("spec") or {}
        t = ((spec.get("timeout") or {}).get("http") or {}).get("requestTimeout")
        targets = spec.get("targetRefs") or ([spec["targetRef"]] if spec.get("targetRef") else [])
        for tr in targets:
            if t and tr.get("kind") == "HTTPRoute":
                route_timeouts[str(tr.get("name"))] = duration_seconds(str(t))
            elif t and request_timeout is None:
                request_timeout = duration_seconds(str(t))
        # responseOverride: the local Envoy answers its own errors from the same table
        # (infershift/gateway_errors.py) whether or not a policy asks for it.
        if set(spec) - {"timeout", "targetRef", "targetRefs", "responseOverride"}:
            rep.ignore(f"BackendTrafficPolicy {_name(p)}: fields other than timeout.http.requestTimeout "
                       "and responseOverride")

    # Pools.
    pools: list[ir.Pool] = []
    pool_objs = {}
    for p in by_kind["InferencePool"]:
        name = _name(p)
        sel, target_ports, ref = _pool_shape(p)
        picker = _picker(name, ref, services_objs, others, configmaps, rep)
        members = tuple(g.name for g in servers if _labels_match(sel, g.labels))
        if not members:
            rep.warn(f"InferencePool {name}: its selector {sel} matches no model-server Deployment; "
                     "its requests get no endpoint")
        pool_objs[name] = p
        pools.append(ir.Pool(name=name, api_version=str(p["apiVersion"]), selector=sel, target_ports=target_ports,
                             picker=picker, servers=members, routing=(),
                             max_body_bytes=_max_body(picker, buffer_limit)))
    pool_names = {p.name for p in pools}

    # Model routing objects, per pool.
    routing: dict[str, list[dict]] = defaultdict(list)
    for kind in sorted(ROUTING_KINDS):
        for o in by_kind[kind]:
            target = str(((o.get("spec") or {}).get("poolRef") or {}).get("name", ""))
            if target not in pool_names:
                rep.warn(f"{kind} {_name(o)}: poolRef InferencePool {target!r} not found; it routes nothing")
                continue
            routing[target].append(o)
    pools = [ir.Pool(**{**p.__dict__, "routing": tuple(routing.get(p.name, []))}) for p in pools]

    # Gateways and listeners.
    gateways: dict[str, list[ir.Listener]] = {}
    for g in by_kind["Gateway"]:
        listeners = []
        for lst in (g.get("spec") or {}).get("listeners") or []:
            proto = lst.get("protocol") or "HTTP"
            if proto != "HTTP":
                rep.ignore(f"Gateway {_name(g)} listener {lst.get('name')}: protocol {proto} "
                           "(served as plain HTTP locally)")
            listeners.append(ir.Listener(_name(g), str(lst.get("name")), int(lst.get("port", 80)),
                                         lst.get("hostname"), proto))
        gateways[_name(g)] = listeners

    # Routes, attached to listeners.
    attached: dict[tuple[str, str], list[ir.Rule]] = defaultdict(list)
    for order, route in enumerate(by_kind["HTTPRoute"]):
        spec = route.get("spec") or {}
        rname = _name(route)
        hosts = tuple(str(h) for h in spec.get("hostnames") or [])
        rules = spec.get("rules") or [{}]
        accepted = False
        for ref in spec.get("parentRefs") or []:
            listeners = _parent_listeners(ref, gateways)
            if not listeners:
                rep.warn(f"HTTPRoute {rname}: parentRef {ref.get('name')}"
                         f"{'/' + ref['sectionName'] if ref.get('sectionName') else ''} matches no Gateway listener "
                         "(Accepted=False, NoMatchingParent)")
                continue
            for lst in listeners:
                eff = intersect(lst.hostname, hosts)
                if eff is None:
                    continue
                accepted = True
                attached[(lst.gateway, lst.name)] += [
                    _rule(route, order, i, r, eff, pool_names, set(services_objs),
                          route_timeouts.get(rname), rep, len(rules) > 1, listings)
                    for i, r in enumerate(rules)]
        if (not accepted and spec.get("parentRefs")
                and any(_parent_listeners(ref, gateways) for ref in spec["parentRefs"])):
            rep.warn(f"HTTPRoute {rname}: none of its hostnames {list(hosts)} intersects a listener's hostname "
                     "(Accepted=False, NoMatchingListenerHostname); it serves nothing")
    # ACK: a pool attached to a listener by annotation, without an HTTPRoute.
    order0 = len(by_kind["HTTPRoute"])
    for i, (name, p) in enumerate(sorted(pool_objs.items())):
        att = _attach_to(p)
        if att is None:
            continue
        if "invalid" in att:
            rep.warn(f"InferencePool {name}: annotation {contract.ATTACH_TO_ANNOTATION} {att['invalid']!r} "
                     "names no gateway (expected `name:` and `port:` or `sectionName:`)")
            continue
        listeners = _parent_listeners({"name": att["name"], "sectionName": att.get("sectionName"),
                                       "port": att.get("port")}, gateways)
        if not listeners:
            rep.warn(f"InferencePool {name}: {contract.ATTACH_TO_ANNOTATION} names {att} but no such Gateway "
                     "listener exists")
            continue
        for lst in listeners:
            taken = [r for r in attached[(lst.gateway, lst.name)] if r.route.startswith("attach-to:")]
            if taken:
                rep.warn(f"InferencePool {name}: listener {lst.gateway}/{lst.name} already has pool "
                         f"{taken[0].backends[0].name} attached; locally only that one is routed there")
                continue
            attached[(lst.gateway, lst.name)].append(ir.Rule(
                name=f"attach-{name}", route=f"attach-to:{name}", index=0, order=order0 + i,
                hostnames=(lst.hostname,) if lst.hostname else (), matches=(ir.Match(),),
                backends=(ir.Backend("InferencePool", name, 1),), timeout=request_timeout))

    # Envoy listeners: one per (gateway, port).
    ports: list[ir.Port] = []
    all_names = [lst.name for ls in gateways.values() for lst in ls]
    for gw, listeners in gateways.items():
        by_port: dict[int, list[ir.Listener]] = defaultdict(list)
        for lst in listeners:
            by_port[lst.port].append(lst)
        for port, group in by_port.items():
            first = group[0].name
            key = first if all_names.count(first) == 1 else f"{gw}/{first}"
            # A rule attached to two listeners of one port appears once.
            rules = tuple(dict.fromkeys(r for lst in group for r in attached[(gw, lst.name)]))
            ports.append(ir.Port(key, gw, port, tuple(group), rules))
    _split_warnings(ports, pools, servers, rep)
    if not by_kind["Gateway"]:
        rep.warn("no Gateway among the objects: nothing listens for clients")
    def selector(service: str) -> dict[str, str]:
        spec = (services_objs.get(service) or {}).get("spec") or {}
        return {str(k): str(v) for k, v in (spec.get("selector") or {}).items()}

    recorders = _recorders(others, rep)
    for name, d in others.items():
        if _runs(d, contract.LISTING_MODULE) is not None:
            continue  # the models listing: answered by the local gateway itself (Rule.listing)
        if _runs(d, contract.RECORDER_MODULE) is not None:
            continue  # a shadow recorder: run locally (recorders)
        if not any(p.picker.service and _labels_match(selector(p.picker.service), _pod_labels(d)) for p in pools):
            rep.ignore(f"Deployment {name} (not a model server or a pool's picker)")
    known = {s.name for s in servers}
    for r in recorders:
        if r.upstream not in services_objs:
            rep.warn(f"Deployment {r.name}: the shadow recorder's upstream Service {r.upstream!r} is not among the "
                     "objects; its copies fail (502)")
        elif not any(g in known for g in _services([services_objs[r.upstream]], servers)[0].servers):
            rep.warn(f"Deployment {r.name}: the shadow recorder's upstream Service {r.upstream!r} selects no "
                     "model server")
    return ir.Gateway(
        ports=tuple(ports), pools=tuple(pools),
        services=tuple(_services(by_kind["Service"], servers, recorders)), servers=tuple(servers),
        buffer_limit=buffer_limit, request_timeout=request_timeout, max_request_headers_kb=max_headers_kb,
        ignored=tuple(rep.ignored), warnings=tuple(rep.warnings), notes=tuple(rep.notes),
        recorders=tuple(recorders))

