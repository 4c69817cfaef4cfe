"""Kubernetes discovery: translate cluster objects into the picker's endpoints and model routes.

The translation functions are pure (objects in, plain data out) and tested on real-shaped
objects; KubeDiscovery is a small list+watch client (in-cluster service account or a kubeconfig, see
kube_auth.py) feeding them.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import random
from dataclasses import replace
from typing import TYPE_CHECKING

from infershift import contract

from .config import CRITICALITIES, ModelRoute, PickerConfig, StaticEndpoint, Target

if TYPE_CHECKING:
    from .kube_auth import TokenSource

log = logging.getLogger("picker.k8s")

V1, V1ALPHA2, LLMD = contract.POOL_V1, contract.POOL_V1ALPHA2, contract.LLMD_API


def pool_selector_and_ports(pool: dict) -> tuple[dict[str, str], list[int]]:
    """InferencePool (v1 or v1alpha2) -> (label selector, target ports)."""
    spec = pool.get("spec") or {}
    api = pool.get("apiVersion", V1)
    if api == V1ALPHA2:
        sel = spec.get("selector") or {}
        ports = [int(spec["targetPortNumber"])] if spec.get("targetPortNumber") else []
    else:
        sel = (spec.get("selector") or {}).get("matchLabels") or {}
        ports = [int(p["number"]) for p in spec.get("targetPorts") or [] if p.get("number")]
    return {str(k): str(v) for k, v in sel.items()}, ports


def _pod_ready(pod: dict) -> bool:
    if (pod.get("metadata") or {}).get("deletionTimestamp"):
        return False
    status = pod.get("status") or {}
    if status.get("phase") != "Running" or not status.get("podIP"):
        return False
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])


def endpoints_from_pods(pods: list[dict], selector: dict[str, str], ports: list[int]) -> list[StaticEndpoint]:
    """Ready pods matching the selector, one endpoint per target port (data-parallel servers)."""
    out = []
    for pod in sorted(pods, key=lambda p: (p.get("metadata") or {}).get("name", "")):
        meta = pod.get("metadata") or {}
        labels = meta.get("labels") or {}
        if any(labels.get(k) != v for k, v in selector.items()) or not _pod_ready(pod):
            continue
        ip = pod["status"]["podIP"]
        host = f"[{ip}]" if ":" in ip else ip
        for port in ports:
            name = meta.get("name", ip) if len(ports) == 1 else f"{meta.get('name', ip)}:{port}"
            # the pod's labels go along: the engine label picks the metrics parser, llm-d.ai/role the decode-filter
            out.append(StaticEndpoint(f"{host}:{port}", name, None, tuple(sorted(labels.items()))))
    return out


def _for_pool(obj: dict, pool_name: str) -> bool:
    return ((obj.get("spec") or {}).get("poolRef") or {}).get("name") == pool_name


def routes_from_inference_models(objs: list[dict], pool_name: str) -> dict[str, ModelRoute]:
    """v1alpha2 InferenceModel: modelName, criticality, weighted targetModels."""
    out = {}
    for o in objs:
        if not _for_pool(o, pool_name):
            continue
        spec = o["spec"]
        name = spec.get("modelName")
        if not name:
            continue
        crit = spec.get("criticality") or "Standard"
        crit = crit if crit in CRITICALITIES else "Standard"
        targets = tuple(Target(t["name"], int(t.get("weight", 1))) for t in spec.get("targetModels") or [] if t.get("name"))
        if not targets or sum(t.weight for t in targets) <= 0:
            targets = (Target(name, 1),)
        out[name] = ModelRoute(name, targets, criticality=crit)
    return out


def routes_from_rewrites(objs: list[dict], pool_name: str) -> dict[str, ModelRoute]:
    """llm-d InferenceModelRewrite: rules of exact model matches -> weighted modelRewrite targets."""
    out = {}
    for o in sorted(objs, key=lambda x: (x.get("metadata") or {}).get("name", "")):
        if not _for_pool(o, pool_name):
            continue
        for rule in (o.get("spec") or {}).get("rules") or []:
            targets = tuple(Target(t["modelRewrite"], int(t.get("weight", 1)))
                            for t in rule.get("targets") or [] if t.get("modelRewrite"))
            if not targets or sum(t.weight for t in targets) <= 0:
                continue
            for m in rule.get("matches") or []:
                value = (m.get("model") or {}).get("value")
                if value and value not in out:  # first rule wins, as in the upstream matcher
                    out[value] = ModelRoute(value, targets)
    return out


MODEL_ANNOTATION = contract.MODEL_NAME_ANNOTATION  # what components/model_routing.py renders


def objectives_from(objs: list[dict], pool_name: str) -> dict[str, int]:
    """llm-d InferenceObjective name -> priority (negative: sheddable); chosen per request by header."""
    return {o["metadata"]["name"]: int((o.get("spec") or {}).get("priority") or 0)
            for o in objs if _for_pool(o, pool_name) and (o.get("metadata") or {}).get("name")}


def model_priorities_from(objs: list[dict], pool_name: str) -> dict[str, int]:
    """Client model name -> priority, for InferenceObjectives of this pool that name their model in the
    infershift.io/model-name annotation. Objective names must be unique per namespace while both pools
    of a canary serve the same model, so they are `<pool>-<model>`, and the model comes from here."""
    out = {}
    for o in sorted(objs, key=lambda x: (x.get("metadata") or {}).get("name", "")):
        model = ((o.get("metadata") or {}).get("annotations") or {}).get(MODEL_ANNOTATION)
        if model and _for_pool(o, pool_name) and model not in out:
            out[model] = int((o.get("spec") or {}).get("priority") or 0)
    return out


def merge_routing(cfg: PickerConfig, models: list[dict], rewrites: list[dict], objectives: list[dict]) -> PickerConfig:
    """Config-file routes first, cluster objects on top (they are the live source of truth)."""
    routes = dict(cfg.models)
    routes.update(routes_from_inference_models(models, cfg.pool_name))
    routes.update(routes_from_rewrites(rewrites, cfg.pool_name))
    objs = dict(cfg.objectives)
    objs.update(objectives_from(objectives, cfg.pool_name))
    prios = dict(cfg.model_priorities)
    prios.update(model_priorities_from(objectives, cfg.pool_name))
    return replace(cfg, models=routes, objectives=objs, model_priorities=prios)


def apply_watch_event(store: dict[str, dict], event: dict) -> None:
    """Keep a name -> object store current from one watch event."""
    obj = event.get("object") or {}
    name = (obj.get("metadata") or {}).get("name")
    if not name:
        return
    if event.get("type") == "DELETED":
        store.pop(name, None)
    elif event.get("type") in ("ADDED", "MODIFIED"):
        store[name] = obj


def label_selector(selector: dict[str, str]) -> str:
    """The pool's matchLabels as a list/watch labelSelector, so the API server sends only the pool's
    pods (smaller traffic; a namespaced Role is enough)."""
    return ",".join(f"{k}={v}" for k, v in sorted(selector.items()))


def list_url(base: str, path: str, selector: str | None = None, name: str | None = None) -> str:
    """A list URL narrowed by label selector and/or object name (a `metadata.name` field selector,
    which RBAC authorizes against a Role's resourceNames)."""
    from urllib.parse import urlencode

    params = {}
    if selector:
        params["labelSelector"] = selector
    if name:
        params["fieldSelector"] = f"metadata.name={name}"
    return f"{base}{path}" + (f"?{urlencode(params)}" if params else "")


# Model-routing kinds per pool API: v1alpha2 pools are routed by InferenceModels, v1 pools by
# llm-d's InferenceModelRewrites and InferenceObjectives. The picker follows only its pool's kinds,
# so its Role grants only those.
ROUTING_PATHS = {
    "inference.networking.x-k8s.io": {
        "models": "/apis/inference.networking.x-k8s.io/v1alpha2/namespaces/{ns}/inferencemodels"},
    "inference.networking.k8s.io": {
        "rewrites": "/apis/llm-d.ai/v1alpha2/namespaces/{ns}/inferencemodelrewrites",
        "objectives": "/apis/llm-d.ai/v1alpha2/namespaces/{ns}/inferenceobjectives"},
}


def watched_urls(base: str, pool_api_version: str, ns: str, pool_name: str) -> dict[str, str]:
    """What the picker lists and watches besides pods: its own pool (by name) and its routing kinds."""
    group, version = pool_api_version.split("/")
    urls = {"pool": list_url(base, f"/apis/{group}/{version}/namespaces/{ns}/inferencepools", name=pool_name)}
    for kind, path in ROUTING_PATHS[group].items():
        urls[kind] = list_url(base, path.format(ns=ns))
    return urls


def watch_url(url: str, resource_version: str, timeout_seconds: int | None = None) -> str:
    sep = "&" if "?" in url else "?"
    out = f"{url}{sep}watch=1&allowWatchBookmarks=true&resourceVersion={resource_version}"
    return out + (f"&timeoutSeconds={timeout_seconds}" if timeout_seconds else "")


# client-go's reflector asks the server to end each watch after 5-10 min (minWatchTimeout, times
# 1 + rand), so a watch never outlives its credentials by long and load spreads; the picker too.
WATCH_TIMEOUT_S = (300, 600)


def routing_summary(cfg: PickerConfig) -> dict:
    """What the cluster's routing objects resolve to (the log line on every change)."""
    return {"models": {m: [f"{t.model}:{t.weight}" for t in r.targets] for m, r in sorted(cfg.models.items())},
            "objectives": dict(sorted(cfg.objectives.items())),
            "model_priorities": dict(sorted(cfg.model_priorities.items()))}


class KubeDiscovery:
    """List+watch the pool, its pods (by the pool's label selector) and the routing objects."""

    def __init__(self, pool, cfg: PickerConfig, credentials=None):
        self.pool = pool
        self.base_cfg = cfg
        self.ns = cfg.pool_namespace
        self.credentials = credentials  # kube_auth.KubeCredentials; None: in-cluster
        self.stores: dict[str, dict[str, dict]] = {k: {} for k in ("pool", "pods", "models", "rewrites", "objectives")}
        self.selector: str | None = None  # labelSelector the pod watch runs with
        self.selector_changed = asyncio.Event()
        self.auth: TokenSource | None = None  # once running
        self._logged: tuple = (None, None)  # (endpoints, routing) last logged
        self._rng = random.Random()

    def merge(self, cfg: PickerConfig) -> PickerConfig:
        self.base_cfg = cfg
        s = self.stores
        return merge_routing(cfg, list(s["models"].values()), list(s["rewrites"].values()),
                             list(s["objectives"].values()))

    def _recompute(self) -> None:
        pool_obj = self.stores["pool"].get(self.base_cfg.pool_name)
        eps = None
        if pool_obj is not None:
            sel, ports = pool_selector_and_ports(pool_obj)
            wanted = label_selector(sel)
            if wanted != self.selector:
                self.selector = wanted
                self.selector_changed.set()  # the pod watch restarts with the new selector
            eps = endpoints_from_pods(list(self.stores["pods"].values()), sel, ports)
            self.pool.set_endpoints(eps)
        merged = self.merge(self.base_cfg)
        self.pool.apply_config(merged)
        addrs = tuple(f"{e.name}={e.address}" for e in eps) if eps is not None else self._logged[0]
        routing = routing_summary(merged)
        if addrs != self._logged[0]:
            log.info("kubernetes endpoints", extra={"endpoints": list(addrs or ())})
        if routing != self._logged[1]:
            log.info("kubernetes routing", extra=routing)
        self._logged = (addrs, routing)

    async def run(self) -> None:
        import aiohttp

        from .kube_auth import TokenSource, in_cluster, ssl_context

        try:
            creds = self.credentials or in_cluster(dict(os.environ))
        except Exception as e:
            log.error("kubernetes discovery cannot start; no endpoints", extra={"error": str(e)})
            return
        self.auth = self.auth or TokenSource(creds)  # app.py may share one with leader election
        ns = self.ns
        assert self.base_cfg.kubernetes is not None  # cluster discovery runs only with a kubernetes block
        urls = watched_urls(creds.server, self.base_cfg.kubernetes["poolApiVersion"], ns, self.base_cfg.pool_name)
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ssl_context(creds))) as session:
            await asyncio.gather(self._watch_pods(session, creds.server, f"/api/v1/namespaces/{ns}/pods"),
                                 *(self._watch(session, url, kind) for kind, url in urls.items()))

    async def _watch_pods(self, session, base: str, path: str) -> None:
        """Pods are watched only once the pool's selector is known, and re-listed when it changes."""
        while True:
            await self.selector_changed.wait()
            self.selector_changed.clear()
            task = asyncio.create_task(self._watch(session, list_url(base, path, self.selector), "pods"))
            changed = asyncio.create_task(self.selector_changed.wait())
            try:
                await asyncio.wait({task, changed}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                task.cancel()
                changed.cancel()

    async def _get(self, session, url: str, **kw):
        """A GET with the current token; a 401 makes the token source fetch a new one next time."""
        assert self.auth is not None
        r = await session.get(url, headers=await self.auth.headers(), **kw)
        if r.status == 401:
            self.auth.invalidate()
        return r

    async def _watch(self, session, url: str, kind: str) -> None:
        """List, then watch from the list's resourceVersion; a watch that ends (its timeout, a
        dropped connection, an API server restart) resumes from the last version seen, and only an
        ERROR event (410 Gone: that version is compacted) or a failed resume relists, as client-go's
        reflector does."""
        import aiohttp

        from .errors import ConfigError

        store = self.stores[kind]
        rv: str | None = None
        failures = 0
        while True:
            try:
                if rv is None:
                    async with await self._get(session, url) as r:
                        if r.status == 404:  # CRD not installed: nothing of this kind to follow
                            log.info("resource not served; not watching", extra={"kind": kind})
                            return
                        if r.status >= 400:
                            raise _ApiStatus(r.status, await _message(r))
                        doc = await r.json()
                    store.clear()
                    for o in doc.get("items") or []:
                        store[o["metadata"]["name"]] = o
                    self._recompute()
                    rv = doc["metadata"].get("resourceVersion", "")
                timeout = self._rng.randint(*WATCH_TIMEOUT_S)
                async with await self._get(session, watch_url(url, rv or "", timeout),
                                           timeout=aiohttp.ClientTimeout(total=None, sock_read=timeout + 60)) as r:
                    if r.status >= 400:
                        rv = None if r.status == 410 else rv
                        raise _ApiStatus(r.status, await _message(r))
                    failures = 0
                    async for line in r.content:
                        ev = json.loads(line)
                        if ev.get("type") == "ERROR":  # e.g. 410 Gone: relist
                            log.info("watch expired; relisting",
                                     extra={"kind": kind, "error": (ev.get("object") or {}).get("message")})
                            rv = None
                            break
                        new_rv = ((ev.get("object") or {}).get("metadata") or {}).get("resourceVersion")
                        if new_rv:
                            rv = new_rv
                        if ev.get("type") != "BOOKMARK":
                            apply_watch_event(store, ev)
                            self._recompute()
            except asyncio.CancelledError:
                raise
            except Exception as e:  # API server hiccup, expired or revoked token, RBAC: back off, resume
                failures += 1
                status = e.status if isinstance(e, _ApiStatus) else None
                level = log.error if status == 403 or isinstance(e, ConfigError) else log.warning
                level("watch failed; retrying", extra={"kind": kind, "status": status, "error": str(e),
                                                        "resume_from": rv})
                if failures > 3:
                    rv = None  # resuming keeps failing: relist
                # a 401 retries at once with a fresh token; anything else backs off (1, 2, 4 ... 30 s)
                await asyncio.sleep(0.1 if status == 401 and failures == 1 else min(30.0, 2.0 ** (failures - 1)))


class _ApiStatus(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(f"{status}: {message}")
        self.status = status


async def _message(r) -> str:
    """The Status message of an API error response."""
    try:
        doc = await r.json(content_type=None)
        return str(doc.get("message") or doc)
    except Exception:
        return (await r.text())[:500]
