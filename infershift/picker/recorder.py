"""The shadow recorder: a reverse proxy in front of a mirror's Service that logs each copy's answer.

    python -m infershift.picker.recorder --upstream http://llama-candidate.default:8000 \
        --name llama-candidate [--port 8000] [--host 0.0.0.0] [--max-text-chars 2000]

A mirror to a **Service** sends the gateway's copy straight to the model servers: no picker sees
it, and the gateway throws its answer away, so nothing records how the candidate answered. With
`mirrors.<m>.mirrorTo.record: true` the stack routes the copy through this proxy instead: it
forwards every request unchanged to `--upstream` (method, path, query, body, headers but the
hop-by-hop ones and Host), streams the answer back as it comes, and writes the same answer line
the pickers write with `answerLog` (picker/answers.py: request id, model, status, TTFT, end to
end, output tokens, text and its hash), with `pool` set to `--name` and `shadow: true` (it only
ever receives copies; Envoy also marks their Host with `-shadow`, other gateways may not).
`python -m infershift.shadow report` then pairs it with the primary pool's picker line of the
same `x-request-id`.

Answers of its own, OpenAI-shaped JSON: 502 when the upstream cannot be reached (a line with
status 502 is logged: the candidate failed that copy), 413 over `--max-body` bytes.
`GET /healthz` is its probe. It holds nothing but the request in flight.
"""
from __future__ import annotations

import argparse
import asyncio
import itertools
import logging
import signal
import sys
import time

import aiohttp
from aiohttp import web

from . import answers
from .logsetup import setup_logging

log = logging.getLogger("picker.recorder")
HEALTH_PATH = "/healthz"
# RFC 9110 section 7.6.1 (connection-specific fields) plus what a proxy sets itself
HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding",
                        "upgrade", "host", "content-length"})


def _error(status: int, message: str, code: str, type_: str = "server_error") -> web.Response:
    import orjson

    return web.Response(status=status, content_type="application/json", body=orjson.dumps(
        {"error": {"message": message, "type": type_, "param": None, "code": code}}))


def _fields(body: bytes) -> tuple[str | None, bool]:
    """(model, stream) of an OpenAI request body; (None, False) for anything else."""
    import orjson

    try:
        doc = orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        return None, False
    if not isinstance(doc, dict):
        return None, False
    m = doc.get("model")
    return (m if isinstance(m, str) else None), doc.get("stream") is True


async def _read(request: web.Request, limit: int) -> bytes | None:
    """The whole request body, or None when it is over `limit` bytes."""
    parts, size = [], 0
    async for chunk in request.content.iter_chunked(1 << 16):
        size += len(chunk)
        if size > limit:
            return None
        parts.append(chunk)
    return b"".join(parts)


class Recorder:
    def __init__(self, upstream: str | list[str], name: str, max_text_chars: int = 2000,
                 max_body: int = 64 * 1024 * 1024, timeout: float | None = None):
        # one URL in a cluster (the Service's, which kube-proxy balances); the local stack gives
        # the Service's endpoints, taken in turn
        self.upstreams = [u.rstrip("/") for u in ([upstream] if isinstance(upstream, str) else upstream)]
        self._next = itertools.cycle(self.upstreams)
        self.upstream = self.upstreams[0]
        self.name = name
        self.max_text_chars = max_text_chars
        self.max_body = max_body
        self.timeout = aiohttp.ClientTimeout(total=timeout)
        self.session: aiohttp.ClientSession | None = None

    async def start(self, app: web.Application) -> None:
        self.session = aiohttp.ClientSession(timeout=self.timeout, auto_decompress=False)

    async def stop(self, app: web.Application) -> None:
        if self.session is not None:
            await self.session.close()

    async def health(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if request.path == HEALTH_PATH and request.method in ("GET", "HEAD"):
            return await self.health(request)
        began = time.monotonic()
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        lowered = {k.lower(): v for k, v in request.headers.items()}
        # everything the recorder receives is a mirror's copy (the stack sends it nothing else),
        # whether or not the gateway marked the Host with -shadow (Envoy does; others may not)
        shadow = True
        rid = lowered.get("x-request-id", "")
        body = await _read(request, self.max_body)
        if body is None:
            return _error(413, f"request body is larger than {self.max_body} bytes", "request_too_large",
                          "invalid_request_error")
        model, streaming = _fields(body)
        reader = answers.AnswerReader()
        assert self.session is not None
        status, ttft = 0, None
        upstream = next(self._next)
        try:
            async with self.session.request(request.method, upstream + request.rel_url.path_qs,
                                            headers=headers, data=body or None, allow_redirects=False) as up:
                status = up.status
                out = web.StreamResponse(status=up.status, reason=up.reason, headers={
                    k: v for k, v in up.headers.items() if k.lower() not in HOP_BY_HOP})
                await out.prepare(request)
                async for chunk in up.content.iter_any():
                    if ttft is None:
                        ttft = time.monotonic() - began
                    reader.feed(chunk)
                    await out.write(chunk)
                await out.write_eof()
                return out
        except (TimeoutError, aiohttp.ClientConnectionError) as e:
            status = 502
            log.warning("upstream failed", extra={"request_id": rid, "error": str(e)[:300]})
            return _error(502, f"the mirror's upstream {upstream} failed: {type(e).__name__}", "bad_gateway")
        finally:
            if rid:
                answers.emit(pool=self.name, request_id=rid, model=model, target=model, shadow=shadow, status=status,
                             ttft=ttft, e2e=time.monotonic() - began, reader=reader, streaming=streaming,
                             endpoint=upstream, max_chars=self.max_text_chars)


def build_app(rec: Recorder) -> web.Application:
    app = web.Application()
    app.on_startup.append(rec.start)
    app.on_cleanup.append(rec.stop)
    app.router.add_route("*", "/{tail:.*}", rec.handle)
    return app


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m infershift.picker.recorder", description=__doc__.split("\n\n")[0])
    ap.add_argument("--upstream", required=True, action="append",
                    help="base URL of the mirror's Service, e.g. http://svc.ns:8000 (repeat: taken in turn)")
    ap.add_argument("--name", required=True, help="the `pool` its answer lines carry (the Service's name)")
    ap.add_argument("--host", default="0.0.0.0")
    ap.add_argument("--port", type=int, default=8000)
    ap.add_argument("--max-text-chars", type=int, default=2000, help="answer text kept per line")
    ap.add_argument("--max-body", type=int, default=64 * 1024 * 1024, help="largest request body, bytes")
    ap.add_argument("--log-level", default="info")
    ns = ap.parse_args(argv)
    for u in ns.upstream:
        if not u.startswith(("http://", "https://")):
            ap.error(f"--upstream {u!r} is not an http(s) URL")
    setup_logging(ns.log_level)
    rec = Recorder(ns.upstream, ns.name, ns.max_text_chars, ns.max_body)

    async def serve() -> None:
        runner = web.AppRunner(build_app(rec), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, ns.host, ns.port)
        await site.start()
        log.info("recorder ready", extra={"port": ns.port, "upstream": rec.upstream, "recorder_name": rec.name})
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        await runner.cleanup()

    asyncio.run(serve())
    return 0


if __name__ == "__main__":
    sys.exit(main())
