"""Poll each endpoint's /metrics (fast) and /v1/models (slow); the scheduler only reads the results."""
from __future__ import annotations

import asyncio
import json
import logging

from .http1 import Client, HttpError
from .metrics_parse import parse_metrics
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


class Scraper:
    def __init__(self, pool: Pool, telemetry=None):
        self.pool = pool
        self.telemetry = telemetry
        self.tasks: dict[str, asyncio.Task] = {}
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
        want = set(self.pool.endpoints)
        for addr in list(self.tasks):
            if addr not in want:
                self.tasks.pop(addr).cancel()
                if self.telemetry:
                    self.telemetry.forget_endpoint(addr)
        for addr in want - set(self.tasks):
            self.tasks[addr] = asyncio.get_running_loop().create_task(self._run(addr))

    async def _run(self, addr: str) -> None:
        host, _, port = addr.rpartition(":")
        client = Client(host.strip("[]"), int(port), timeout=2.0)
        next_models = 0.0
        try:
            while True:
                ep = self.pool.endpoints.get(addr)
                if ep is None:
                    return
                cfg = self.pool.gen.config
                now = self.pool.clock()
                if now >= next_models:
                    ok = await self._models(ep, client)
                    next_models = now + (cfg.models_interval if ok else min(cfg.models_interval, 0.5))
                await self._metrics(ep, client)
                await asyncio.sleep(cfg.poll_interval)
        finally:
            client.close()

    async def _metrics(self, ep, client: Client) -> None:
        try:
            status, body = await client.get("/metrics")
            if status != 200:
                raise HttpError(f"HTTP {status}")
            ep.metrics = parse_metrics(body.decode("utf-8", "replace"))
            ep.last_ok = self.pool.clock()
            if self.telemetry:
                self.telemetry.observe_endpoint(self.pool.gen.config.pool_name, ep)
        except (TimeoutError, HttpError, OSError, ValueError) as e:
            ep.scrape_errors += 1
            if self.telemetry:
                self.telemetry.scrape_error(self.pool.gen.config.pool_name, ep)
            if ep.scrape_errors in (1, 10) or ep.scrape_errors % 1000 == 0:
                log.warning("metrics scrape failed", extra={"endpoint": ep.address, "error": str(e) or type(e).__name__})

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
        for t in self.tasks.values():
            t.cancel()
        self.tasks.clear()
