"""Open-loop (Poisson) and closed-loop load generator for OpenAI-style streaming endpoints.

Per request it records TTFT (first non-empty content chunk), the gaps between
content chunks (ITL), end-to-end time and output tokens (from the final usage
chunk). It parses JSON only for the first content chunk and the usage chunk:
the rest is byte checks, so it stays cheap per token. It measures its own CPU.
"""
from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from typing import Callable

import aiohttp

from .workloads import BenchRequest

_EMPTY = (b'"content":""', b'"content": ""', b'"content":null', b'"content": null')


@dataclass
class RunResult:
    records: list[dict]
    wall: float            # first send to last completion
    cpu: float             # process CPU seconds used by this process during the run
    max_lag: float         # worst delay of a send behind its schedule (open loop)


def classify(status: int, from_server: bool) -> str:
    """A 429 the gateway answers itself is a shed request (the picker, like GIE's EPP, sheds with
    429); a 429 from a model server (its waiting queue is full) and any other non-200 is an error.
    The simulator stamps x-inference-pod on every response, so its absence means the gateway."""
    return "shed" if status == 429 and not from_server else "error"


async def one_request(session: aiohttp.ClientSession, base_url: str, req: BenchRequest, payload: bytes,
                      clock: Callable[[], float], timeout: float) -> dict:
    rec = {"tags": req.tags, "status": "error", "http_status": None, "ttft": None, "e2e": None,
           "itl": [], "output_tokens": 0, "prompt_tokens": None, "cached_tokens": None,
           "pod": None, "error": None}
    t0 = clock()
    try:
        async with session.post(base_url + req.path, data=payload,
                                headers={"content-type": "application/json"},
                                timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
            rec["http_status"] = resp.status
            rec["pod"] = resp.headers.get("x-inference-pod")
            if resp.status != 200:
                body = await resp.read()
                rec["status"] = classify(resp.status, rec["pod"] is not None)
                rec["error"] = body[:300].decode("utf-8", "replace")
                rec["e2e"] = clock() - t0
                return rec
            last = None
            chunks = 0
            usage = None
            itl = rec["itl"]
            async for line in resp.content:
                if not line.startswith(b"data:"):
                    continue
                if b'"usage":{' in line or b'"usage": {' in line:
                    usage = json.loads(line[5:]).get("usage")
                if b'"content"' not in line or any(e in line for e in _EMPTY):
                    continue
                now = clock()
                if last is None:
                    rec["ttft"] = now - t0
                else:
                    itl.append(now - last)
                last = now
                chunks += 1
            rec["e2e"] = clock() - t0
            if usage:
                rec["output_tokens"] = usage.get("completion_tokens") or chunks
                rec["prompt_tokens"] = usage.get("prompt_tokens")
                details = usage.get("prompt_tokens_details") or {}
                rec["cached_tokens"] = details.get("cached_tokens")
            else:
                rec["output_tokens"] = chunks
            rec["status"] = "ok" if last is not None else "error"
            if last is None:
                rec["error"] = "stream ended with no content"
    except asyncio.TimeoutError:
        rec["status"], rec["error"], rec["e2e"] = "timeout", f"no answer within {timeout}s", clock() - t0
    except aiohttp.ClientError as e:
        rec["status"], rec["error"], rec["e2e"] = "error", f"{type(e).__name__}: {e}", clock() - t0
    return rec


def encode(req: BenchRequest) -> bytes:
    body = dict(req.body, stream=True, stream_options={"include_usage": True})
    return json.dumps(body, separators=(",", ":")).encode()


def _session(limit: int = 0) -> aiohttp.ClientSession:
    # One connection per in-flight request (no limit); no cookie jar work.
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=limit, force_close=False),
                                 cookie_jar=aiohttp.DummyCookieJar(), auto_decompress=False)


def _pick(base_url: str | list[str], i: int) -> str:
    # A list of URLs means "no router": the client spreads requests round robin itself.
    return base_url if isinstance(base_url, str) else base_url[i % len(base_url)]


async def run_open(base_url: str | list[str], requests: list[BenchRequest], offsets: list[float], *,
                   timeout: float = 300.0, clock: Callable[[], float] = time.perf_counter) -> RunResult:
    """Send requests[i] at offsets[i] seconds after start, regardless of answers (open loop)."""
    if len(offsets) > len(requests):
        raise ValueError(f"{len(offsets)} send times for {len(requests)} requests")
    payloads = [encode(r) for r in requests[:len(offsets)]]
    cpu0 = time.process_time()
    async with _session() as session:
        start = clock()
        tasks = []
        max_lag = 0.0
        for i, (req, payload, off) in enumerate(zip(requests, payloads, offsets)):
            delay = start + off - clock()
            if delay > 0:
                await asyncio.sleep(delay)
            else:
                max_lag = max(max_lag, -delay)
            t = asyncio.create_task(one_request(session, _pick(base_url, i), req, payload, clock, timeout))
            tasks.append((off, t))
        records = []
        for off, t in tasks:
            rec = await t
            rec["sent_at"] = off
            records.append(rec)
        wall = clock() - start
    return RunResult(records, wall, time.process_time() - cpu0, max_lag)


async def run_closed(base_url: str | list[str], requests: list[BenchRequest], concurrency: int, *,
                     timeout: float = 300.0, clock: Callable[[], float] = time.perf_counter) -> RunResult:
    """Keep `concurrency` requests in flight until all have been sent (closed loop)."""
    if concurrency <= 0:
        raise ValueError(f"concurrency must be > 0, got {concurrency}")
    payloads = [encode(r) for r in requests]
    cpu0 = time.process_time()
    records: list[dict | None] = [None] * len(requests)
    it = iter(range(len(requests)))
    async with _session() as session:
        start = clock()

        async def worker() -> None:
            for i in it:
                rec = await one_request(session, _pick(base_url, i), requests[i], payloads[i], clock, timeout)
                rec["sent_at"] = None
                records[i] = rec

        await asyncio.gather(*(worker() for _ in range(min(concurrency, len(requests)))))
        wall = clock() - start
    return RunResult([r for r in records if r is not None], wall, time.process_time() - cpu0, 0.0)


def new_loop() -> asyncio.AbstractEventLoop:
    """uvloop when installed: it roughly halves the generator's CPU per request."""
    try:
        import uvloop
        return uvloop.new_event_loop()
    except ImportError:
        return asyncio.new_event_loop()
