"""Poll each endpoint's metrics page (fast) and /v1/models (slow); the scheduler only reads the results.

The two polls run as separate tasks on separate connections, so a slow or hanging /v1/models never
delays the metrics poll (and never makes an endpoint stale). The metrics page and its path follow
the endpoint's engine (metrics_parse): a page the picker cannot read marks the endpoint "unknown
engine" (logged, `infershift_picker_endpoint_unknown_engine`), which keeps it stale, i.e. routable
only as a saturated server, never as an idle one.
"""
from __future__ import annotations

import asyncio
import json
import logging

from .http1 import Client, HttpError
from .metrics_parse import AUTO, BadValue, UnknownEngine, metrics_path, parse_metrics
from .pool import Pool

log = logging.getLogger("picker.scraper")


def models_from_listing(doc: dict) -> tuple[frozenset, frozenset]:
    """(all model ids, base model ids) from an OpenAI /v1/models listing; adapters carry `parent`."""
    ids, bases = set(), set()
    for m in doc.get("data") or []:
        if isinstance(m, dict) and isinstance(m.get("id"), str):
            ids.add(m["id"])
            if not m.get("parent"):
                bases.add(m["id"])
    return frozenset(ids), frozenset(bases)


def _default_engine(cfg) -> str:
    """The pool's engine for endpoints without an engine label: the data layer's defaultEngine."""
    layer = getattr(cfg.scheduling, "data_layer", None)
    return getattr(layer, "default_engine", None) or AUTO


def _split(addr: str) -> tuple[str, int]:
    host, _, port = addr.rpartition(":")
    return host.strip("[]"), int(port)


class Scraper:
    def __init__(self, pool: Pool, telemetry=None):
        self.pool = pool
        self.telemetry = telemetry
        self.tasks: dict[str, tuple[asyncio.Task, asyncio.Task]] = {}
        self.started = False
        self.first_round = asyncio.Event()
        pool.on_endpoints_changed.append(self.sync)

    async def start(self) -> None:
        self.started = True
        self.sync()
        asyncio.get_running_loop().create_task(self._first_round())

    async def _first_round(self) -> None:
        # Ready once every endpoint has been tried once (or after a bound, so one dead server can't block).
        deadline = self.pool.clock() + 3.0
        while self.pool.clock() < deadline:
            if all(e.last_ok > -1e17 or e.scrape_errors for e in self.pool.endpoints.values()):
                break
            await asyncio.sleep(0.02)
        self.first_round.set()

    def sync(self) -> None:
        if not self.started:
            return
        loop = asyncio.get_running_loop()
        for addr, (metrics_task, models_task) in list(self.tasks.items()):
            ep = self.pool.endpoints.get(addr)
            if ep is None or getattr(metrics_task, "endpoint", None) is not ep:
                metrics_task.cancel()
                models_task.cancel()
                del self.tasks[addr]
                if ep is None and self.telemetry:
                    self.telemetry.forget_endpoint(addr)
        for addr, ep in self.pool.endpoints.items():
            if addr not in self.tasks:
                t1 = loop.create_task(self._metrics_loop(ep))
                t2 = loop.create_task(self._models_loop(ep))
                t1.endpoint = ep  # type: ignore[attr-defined]
                self.tasks[addr] = (t1, t2)

    def _alive(self, ep) -> bool:
        return self.pool.endpoints.get(ep.address) is ep

    async def _metrics_loop(self, ep) -> None:
        client: Client | None = None
        where = None
        try:
            while self._alive(ep):
                cfg = self.pool.gen.config
                host, port = _split(ep.address)
                port = getattr(cfg, "metrics_port", None) or port
                if client is None or where != (host, port):  # the metrics port can change with a reload
                    if client is not None:
                        client.close()
                    client, where = Client(host, port, timeout=2.0), (host, port)
                await self._metrics(ep, client, ep.engine or _default_engine(cfg))
                await asyncio.sleep(cfg.poll_interval)
        finally:
            if client is not None:
                client.close()

    async def _models_loop(self, ep) -> None:
        host, port = _split(ep.address)
        client = Client(host, port, timeout=5.0)
        try:
            while self._alive(ep):
                interval = self.pool.gen.config.models_interval
                ok = await self._models(ep, client)
                await asyncio.sleep(interval if ok else min(interval, 0.5))
        finally:
            client.close()

    async def _metrics(self, ep, client: Client, engine: str) -> None:
        pool_name = self.pool.gen.config.pool_name
        try:
            status, body = await client.get(metrics_path(engine))
            if status != 200:
                raise HttpError(f"HTTP {status}")
            m = parse_metrics(body.decode("utf-8", "replace"), engine)
        except UnknownEngine as e:
            ep.scrape_errors += 1
            first = ep.unknown_engine != str(e)
            ep.unknown_engine = str(e)
            if self.telemetry:
                self.telemetry.scrape_error(pool_name, ep, "unknown_engine")
                self.telemetry.unknown_engine(pool_name, ep, True)
            if first or ep.scrape_errors % 1000 == 0:
                log.warning("unknown engine: endpoint kept as saturated, not idle",
                            extra={"endpoint": ep.address, "engine": engine, "error": str(e)})
            return
        except (TimeoutError, HttpError, OSError, ValueError) as e:
            reason = "bad_value" if isinstance(e, BadValue) else "unreachable"
            ep.scrape_errors += 1
            if self.telemetry:
                self.telemetry.scrape_error(pool_name, ep, reason)
            if ep.scrape_errors in (1, 10) or ep.scrape_errors % 1000 == 0:
                log.warning("metrics scrape failed", extra={"endpoint": ep.address, "reason": reason,
                                                            "error": str(e) or type(e).__name__})
            return
        if ep.unknown_engine is not None:
            log.info("metrics understood again", extra={"endpoint": ep.address, "engine": m.engine})
            ep.unknown_engine = None
            if self.telemetry:
                self.telemetry.unknown_engine(pool_name, ep, False)
        ep.scraped = ep.metrics = m
        ep.stale = False
        ep.last_ok = self.pool.clock()
        if self.telemetry:
            self.telemetry.observe_endpoint(pool_name, ep)

    async def _models(self, ep, client: Client) -> bool:
        try:
            status, body = await client.get("/v1/models")
            if status != 200:
                return False
            doc = json.loads(body)
            if not isinstance(doc, dict):
                return False
            ids, bases = models_from_listing(doc)
            ep.served_models, ep.base_models = ids, bases
            return True
        except (TimeoutError, HttpError, OSError, ValueError):
            return False

    async def close(self) -> None:
        for t1, t2 in self.tasks.values():
            t1.cancel()
            t2.cancel()
        self.tasks.clear()
