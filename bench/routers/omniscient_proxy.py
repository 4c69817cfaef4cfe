"""The omniscient router: for each request, ask every server for the exact TTFT it would give
this request right now (the simulator's POST /admin/predict) and forward to the lowest.

It is the limit of what routing on the servers' state can achieve (short of foreseeing later
arrivals), a real proxy in the data path, not a model of one.
Run: python -m bench.routers.omniscient_proxy --port P --backend ip:port [...]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys

import aiohttp
from aiohttp import web

_PASS_HEADERS = ("content-type", "x-inference-pod", "x-inference-port")


def choose(predictions: list[dict | None], rng: random.Random) -> int:
    """Index of the backend with the lowest predicted TTFT; ties broken at random.

    A backend whose waiting queue is full predicts None; if all are full, the shortest queue wins.
    Failed predictions (None dicts) are never chosen unless every backend failed.
    """
    scored = [(p["ttft_seconds"], i) for i, p in enumerate(predictions)
              if p is not None and p.get("ttft_seconds") is not None]
    if not scored:
        queued = [(p.get("queue_position", 0), i) for i, p in enumerate(predictions) if p is not None]
        if not queued:
            return rng.randrange(len(predictions))
        scored = [(float(q), i) for q, i in queued]
    best = min(s for s, _ in scored)
    ties = [i for s, i in scored if s <= best + 1e-9]
    return ties[0] if len(ties) == 1 else rng.choice(ties)


class Omniscient:
    def __init__(self, backends: list[str], rng: random.Random):
        if not backends:
            raise ValueError("at least one --backend is required")
        self.backends = backends
        self.rng = rng
        self.session: aiohttp.ClientSession | None = None
        self.routed = [0] * len(backends)

    async def _predict(self, b: str, body: bytes) -> dict | None:
        try:
            async with self.session.post(f"http://{b}/admin/predict", data=body,
                                         headers={"content-type": "application/json"}) as r:
                if r.status != 200:
                    return None
                return await r.json()
        except aiohttp.ClientError:
            return None

    async def pick(self, body: bytes) -> int:
        preds = await asyncio.gather(*(self._predict(b, body) for b in self.backends))
        return choose(list(preds), self.rng)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        try:
            json.loads(body)
        except ValueError:
            return web.json_response({"error": {"message": "request body is not valid JSON",
                                                "type": "BadRequestError", "param": None, "code": 400}},
                                     status=400)
        i = await self.pick(body)
        self.routed[i] += 1
        async with self.session.post(f"http://{self.backends[i]}{request.path_qs}", data=body,
                                     headers={"content-type": "application/json"}) as up:
            resp = web.StreamResponse(status=up.status, headers={
                k: up.headers[k] for k in _PASS_HEADERS if k in up.headers})
            await resp.prepare(request)
            async for chunk in up.content.iter_any():
                await resp.write(chunk)
            await resp.write_eof()
            return resp

    async def health(self, request: web.Request) -> web.Response:
        return web.json_response({"backends": self.backends, "routed": self.routed})


async def serve(host: str, port: int, backends: list[str], seed: int) -> None:
    o = Omniscient(backends, random.Random(seed))
    o.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0),
                                      timeout=aiohttp.ClientTimeout(total=600), auto_decompress=False)
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_get("/health", o.health)
    app.router.add_post("/v1/{tail:.*}", o.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = site._server.sockets[0].getsockname()[1]
    print(f"omniscient: listening on http://{host}:{bound} backends={len(backends)}", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await o.session.close()
        await runner.cleanup()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.routers.omniscient_proxy")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--backend", action="append", default=[], help="ip:port of a simulated server")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    if not a.backend:
        ap.error("at least one --backend is required")
    try:
        import uvloop
        uvloop.install()
    except ImportError:
        pass
    try:
        asyncio.run(serve(a.host, a.port, a.backend, a.seed))
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
