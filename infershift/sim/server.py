"""One simulated vLLM server: an Engine, its Driver and an aiohttp app."""
from __future__ import annotations

import asyncio
import collections
import logging
import random
import time
import uuid
from dataclasses import dataclass, field

from aiohttp import web

from . import responses
from .driver import Driver
from .engine import Engine, QueueFull, Request, TooLarge
from .errors import APIError, bad_request, not_found, status_error, too_many, unavailable
from .faults import Faults
from .lora import Adapter
from .metrics import Stats, render
from .parsing import Parsed, parse, parse_json
from .profiles import Profile
from .text import Output

log = logging.getLogger("sim")


@dataclass
class ServerConfig:
    profile: Profile                       # already scaled (time scale, TP, memory)
    model: str                             # --model (path or name)
    served: list[str]                      # --served-model-name(s); first is the label
    adapters: list[Adapter] = field(default_factory=list)
    max_loras: int = 1
    max_cpu_loras: int | None = None
    max_num_seqs: int | None = None
    num_gpu_blocks: int | None = None
    block_size: int | None = None
    max_model_len: int | None = None
    max_num_batched_tokens: int | None = None
    max_waiting: int = 1024
    seed: int = 0
    error_rate: float = 0.0
    error_status: int = 500
    slow_start_seconds: float = 0.0
    stream_coalesce: float = 0.0           # seconds; >0 batches a stream's tokens into fewer writes
    admin_on_serving_port: bool = False    # /admin/* on the serving port too (benchmark harnesses only)


# What the serving port's HTTP parser accepts: more than any gateway in front lets through (Envoy's
# 100 headers, its header-size limit), so the gateway, not the server, refuses oversized headers in
# the API's error shape. aiohttp's defaults (128 headers, 8190-byte lines) answer in plain text.
MAX_HEADERS = 256
RECENT_REQUESTS = 256
MAX_FIELD_SIZE = 64 * 1024


class SimServer:
    def __init__(self, cfg: ServerConfig, name: str, *, loop: asyncio.AbstractEventLoop | None = None,
                 rng: random.Random | None = None, wall_clock=time.time):
        self.cfg = cfg
        self.name = name
        self.port: int | None = None
        self.loop = loop or asyncio.get_running_loop()
        self.wall = wall_clock
        self.stats = Stats()
        p = cfg.profile
        self.engine = Engine(p, max_num_seqs=cfg.max_num_seqs, num_gpu_blocks=cfg.num_gpu_blocks,
                             block_size=cfg.block_size, max_loras=cfg.max_loras,
                             max_cpu_loras=cfg.max_cpu_loras, max_waiting=cfg.max_waiting,
                             max_num_batched_tokens=cfg.max_num_batched_tokens, stats=self.stats)
        self.max_model_len = min(cfg.max_model_len or p.max_model_len,
                                 self.engine.kv.num_blocks * self.engine.block_size)
        self.driver = Driver(self.engine, self.loop)
        self.adapters: dict[str, Adapter] = {a.name: a for a in cfg.adapters}
        self.faults = Faults(error_rate=cfg.error_rate, error_status=cfg.error_status,
                             slow_start_seconds=cfg.slow_start_seconds, since=self.loop.time(),
                             rng=rng or random.Random(cfg.seed))
        for name in cfg.served:   # build the output-text streams before the first request
            Output(cfg.seed, name, 0)
        # the last requests' method, path and headers, for GET /admin/requests (what reached the server)
        self.recent: collections.deque[dict] = collections.deque(maxlen=RECENT_REQUESTS)
        self.app = self._make_app()
        self.admin_app = self._make_admin_app()
        self.runner: web.AppRunner | None = None
        self.admin_runner: web.AppRunner | None = None
        self.admin_port: int | None = None
        self.host = "127.0.0.1"

    # ----------------------------------------------------------- lifecycle
    async def start(self, host: str, port: int, admin_port: int | None = None) -> int:
        """Serve on `port` (0: a free one); the admin endpoints on `admin_port` (0: a free one;
        None: nowhere, unless `admin_on_serving_port`). Returns the serving port."""
        self.runner = web.AppRunner(self.app, access_log=None, handler_cancellation=True,
                                    max_headers=MAX_HEADERS, max_field_size=MAX_FIELD_SIZE,
                                    max_line_size=MAX_FIELD_SIZE)
        self.host = host
        self.port = await _listen(self.runner, host, port)
        if admin_port is not None:
            self.admin_runner = web.AppRunner(self.admin_app, access_log=None, handler_cancellation=True)
            self.admin_port = await _listen(self.admin_runner, host, admin_port)
        return self.port

    async def stop(self) -> None:
        self.driver.close()
        for runner in (self.runner, self.admin_runner):
            if runner is not None:
                await runner.cleanup()

    # ----------------------------------------------------------- app
    def _make_app(self) -> web.Application:
        """vLLM's serving API (adapter loading included: the picker loads adapters through it, as
        with vLLM). A gateway never routes the management paths (devstack's envoy_config)."""
        app = web.Application(middlewares=[self._record, self._errors, self._faults], client_max_size=64 * 1024 * 1024)
        app.on_response_prepare.append(self._stamp)
        r = app.router
        r.add_post("/v1/completions", self.completions)
        r.add_post("/v1/chat/completions", self.chat)
        r.add_get("/v1/models", self.models)
        r.add_get("/health", self.health)
        r.add_get("/ping", self.health)
        r.add_get("/version", self.version)
        r.add_get("/metrics", self.metrics)
        r.add_post("/v1/load_lora_adapter", self.load_lora)
        r.add_post("/v1/unload_lora_adapter", self.unload_lora)
        if self.cfg.admin_on_serving_port:
            self._admin_routes(app)
        return app

    def _make_admin_app(self) -> web.Application:
        """Faults and predictions: not part of vLLM, on a port of their own, which no Service or
        InferencePool targets, so no gateway route reaches them. Never affected by faults."""
        app = web.Application(middlewares=[self._errors], client_max_size=64 * 1024 * 1024)
        app.on_response_prepare.append(self._stamp)
        self._admin_routes(app)
        app.router.add_get("/health", self.health)
        return app

    def _admin_routes(self, app: web.Application) -> None:
        r = app.router
        r.add_get("/admin/faults", self.get_faults)
        r.add_post("/admin/faults", self.set_faults)
        r.add_post("/admin/predict", self.predict)
        r.add_get("/admin/requests", self.requests)

    async def _stamp(self, request: web.Request, response: web.StreamResponse) -> None:
        response.headers["x-inference-pod"] = self.name
        response.headers["x-inference-port"] = str(self.port)

    @web.middleware
    async def _record(self, request: web.Request, handler):
        if request.path not in _POLLED:  # the picker's polls would crowd out everything else
            self.recent.append({"method": request.method, "path": request.path_qs,
                                "headers": [[k.lower(), v] for k, v in request.headers.items()]})
        return await handler(request)

    @web.middleware
    async def _faults(self, request: web.Request, handler):
        if not request.path.startswith("/admin/"):
            f = self.faults
            while f.stall:
                await f.wait_unstalled()
            if f.starting(self.loop.time()):
                raise unavailable("server is starting (injected slow start)",
                                  retry_after=f.slow_start_seconds - (self.loop.time() - f.since))
            if request.path in _GENERATION and f.should_fail():
                raise status_error(f.error_status, "injected fault")
            if request.path in _GENERATION and f.delay_seconds > 0:
                await asyncio.sleep(f.delay_seconds)
        return await handler(request)

    @web.middleware
    async def _errors(self, request: web.Request, handler):
        try:
            return await handler(request)
        except APIError as e:
            return web.json_response(e.body(), status=e.status, headers=e.headers())
        except web.HTTPException as e:
            if e.status < 400:
                raise
            err = status_error(e.status, e.reason or "error")
            allow = {"Allow": e.headers["Allow"]} if "Allow" in e.headers else {}
            return web.json_response(err.body(), status=e.status, headers={**allow, **err.headers()})
        except Exception as e:   # a bug here still answers in the API's error shape
            log.exception("unhandled error in %s %s", request.method, request.path)
            err = status_error(500, f"internal error: {type(e).__name__}: {e}")
            return web.json_response(err.body(), status=500)

    async def _json(self, request: web.Request):
        return parse_json(await request.read())

    # ----------------------------------------------------------- generation
    async def completions(self, request: web.Request) -> web.StreamResponse:
        return await self._generate(request, chat=False)

    async def chat(self, request: web.Request) -> web.StreamResponse:
        return await self._generate(request, chat=True)

    def _parse(self, body, chat: bool) -> Parsed:
        return parse(body, chat, served=self.cfg.served, adapters=self.adapters,
                     max_model_len=self.max_model_len, block_size=self.engine.block_size,
                     seed=self.cfg.seed)

    def _request(self, pr: Parsed) -> Request:
        return Request(rid=uuid.uuid4().hex, prompt_tokens=pr.prompt_tokens, target=pr.target,
                       block_hashes=pr.hashes, lora=pr.lora, end_reason=pr.end_reason)

    def _submit(self, r: Request) -> None:
        try:
            self.engine.submit(r, self.loop.time())
        except QueueFull as e:
            raise too_many(str(e)) from None
        except TooLarge as e:
            raise bad_request(str(e)) from None
        self.driver.kick()

    async def _generate(self, request: web.Request, chat: bool) -> web.StreamResponse:
        pr = self._parse(await self._json(request), chat)
        r = self._request(pr)
        out = Output(self.cfg.seed, pr.model, pr.key)
        created = int(self.wall())
        rid = ("chatcmpl-" if chat else "cmpl-") + r.rid
        if pr.stream:
            return await self._stream(request, pr, r, out, chat, rid, created)
        done = self.loop.create_future()

        def finish(_r: Request) -> None:
            if not done.done():
                done.set_result(None)

        r.on_finish = finish
        self._submit(r)
        try:
            await done
        finally:
            if r.state in ("pending", "waiting", "running"):
                self.engine.abort(r, self.loop.time())
                self.driver.kick()
        return web.json_response(responses.completion(chat, rid, created, pr.model, out.text(0, r.generated), r))

    async def _stream(self, request, pr: Parsed, r: Request, out: Output, chat: bool, rid: str,
                      created: int) -> web.StreamResponse:
        wake = asyncio.Event()
        r.on_update = lambda _r: wake.set()
        r.on_finish = lambda _r: wake.set()
        self._submit(r)   # errors (429, ...) still go out as plain JSON responses
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                           "Cache-Control": "no-cache"})
        sse = responses.SSE(chat, rid, created, pr.model)
        timer = None
        sent = 0
        try:
            await resp.prepare(request)
            if chat:
                await resp.write(sse.role())
            last = r.target - 1   # the last token carries finish_reason, as in vLLM
            coalesce = self.cfg.stream_coalesce
            wrote_at = -1e18
            while sent < r.target:
                now = self.loop.time()
                n, nxt = self.engine.progress(r, now)
                # With coalescing, tokens after the first wait up to `coalesce` to share a write.
                if n > sent and (sent == 0 or n == r.target or now >= wrote_at + coalesce):
                    await resp.write(b"".join(sse.token(out.text(i, i + 1), r.end_reason if i == last else None)
                                              for i in range(sent, n)))
                    sent = n
                    wrote_at = now
                    continue
                wake.clear()
                if coalesce and sent:
                    flush = wrote_at + coalesce
                    if nxt is None:
                        nxt = flush if n > sent else None
                    elif n + 1 < r.target:     # the next token is not the last: no hurry
                        nxt = max(nxt, flush)
                if nxt is not None:
                    timer = self.loop.call_at(nxt, wake.set)
                await wake.wait()
                if timer is not None:
                    timer.cancel()
                    timer = None
            if pr.include_usage:
                await resp.write(sse.usage(responses.usage(r, generated=sent)))
            await resp.write(sse.DONE)
            await resp.write_eof()
        finally:
            if timer is not None:
                timer.cancel()
            # A stream cut short frees its place; a complete one finishes in the engine on its own.
            if sent < r.target and r.state in ("pending", "waiting", "running"):
                self.engine.abort(r, self.loop.time())
                self.driver.kick()
        return resp

    # ----------------------------------------------------------- other endpoints
    async def models(self, request: web.Request) -> web.Response:
        created = int(self.wall())
        data = []
        for name in self.cfg.served:
            data.append({"id": name, "object": "model", "created": created, "owned_by": "vllm",
                         "root": self.cfg.model, "parent": None, "max_model_len": self.max_model_len,
                         "permission": []})
        for a in self.adapters.values():
            data.append({"id": a.name, "object": "model", "created": created, "owned_by": "vllm",
                         "root": a.path, "parent": self.cfg.served[0], "max_model_len": None,
                         "permission": []})
        return web.json_response({"object": "list", "data": data})

    async def health(self, request: web.Request) -> web.Response:
        return web.Response(status=200)

    async def version(self, request: web.Request) -> web.Response:
        return web.json_response({"version": "infershift-sim", "profile": self.cfg.profile.name})

    async def metrics(self, request: web.Request) -> web.Response:
        self.engine.advance(self.loop.time())
        self.driver.kick()
        text = render(self.engine, self.stats, self.cfg.served[0], self.cfg.max_loras, self.wall())
        return web.Response(body=text.encode(),
                            headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})

    async def load_lora(self, request: web.Request) -> web.Response:
        body = await self._json(request)
        if not isinstance(body, dict):
            raise bad_request("request body must be a JSON object")
        name, path = body.get("lora_name"), body.get("lora_path")
        if not isinstance(name, str) or not name:
            raise bad_request("lora_name is required", "lora_name")
        if not isinstance(path, str) or not path:
            raise bad_request("lora_path is required", "lora_path")
        if name in self.adapters or name in self.cfg.served:
            raise bad_request(f"The lora adapter '{name}' has already been loaded.", "lora_name")
        self.adapters[name] = Adapter(name, path)
        return web.Response(text=f"Success: LoRA adapter '{name}' added successfully.")

    async def unload_lora(self, request: web.Request) -> web.Response:
        body = await self._json(request)
        if not isinstance(body, dict):
            raise bad_request("request body must be a JSON object")
        name = body.get("lora_name")
        if not isinstance(name, str) or not name:
            raise bad_request("lora_name is required", "lora_name")
        if name not in self.adapters:
            raise not_found(f"The lora adapter '{name}' cannot be found.", "lora_name")
        del self.adapters[name]
        self.engine.lora.forget(name)
        return web.Response(text=f"Success: LoRA adapter '{name}' removed successfully.")

    async def get_faults(self, request: web.Request) -> web.Response:
        return web.json_response(self.faults.view(self.loop.time()))

    async def set_faults(self, request: web.Request) -> web.Response:
        self.faults.update(await self._json(request), self.loop.time())
        if self.faults.down != self.is_down:
            await (self.go_down() if self.faults.down else self.come_up())
        return web.json_response(self.faults.view(self.loop.time()))

    @property
    def is_down(self) -> bool:
        return self.runner is not None and not self.runner.sites

    async def go_down(self) -> None:
        """As a killed pod: the serving port stops listening and every connection on it is reset
        (requests in flight included); the admin port stays."""
        assert self.runner is not None
        for site in list(self.runner.sites):
            await site.stop()
        server = self.runner.server
        for conn in list(getattr(server, "connections", [])):
            transport = getattr(conn, "transport", None)
            if transport is not None:
                transport.abort()

    async def come_up(self) -> None:
        assert self.runner is not None and self.port is not None
        site = web.TCPSite(self.runner, self.host, self.port, reuse_address=True)
        await site.start()

    async def requests(self, request: web.Request) -> web.Response:
        """The last requests that reached the serving port, oldest first; `?clear=1` empties the list."""
        out = list(self.recent)
        if request.query.get("clear"):
            self.recent.clear()
        return web.json_response({"requests": out})

    async def predict(self, request: web.Request) -> web.Response:
        body = await self._json(request)
        chat = isinstance(body, dict) and "messages" in body and "prompt" not in body
        pr = self._parse(body, chat)
        try:
            ttft, pos = self.engine.predict(self._request(pr), self.loop.time())
        except TooLarge as e:
            raise bad_request(str(e)) from None
        self.driver.kick()
        return web.json_response({"ttft_seconds": ttft, "queue_position": pos,
                                  "queue_full": ttft is None})


async def _listen(runner: web.AppRunner, host: str, port: int) -> int:
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_address=True)
    await site.start()
    return site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]


_GENERATION = frozenset({"/v1/completions", "/v1/chat/completions"})
_POLLED = frozenset({"/metrics", "/v1/models", "/health", "/ping"})
