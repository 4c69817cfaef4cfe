"""Tests for bench/pickerbench/loadgen.py. The aiohttp server runs in its own process (this file run as a script)
so the generator's timing is its own; it records what arrived and serves it back on
GET /stats. Framing aiohttp never produces (chunk extensions, trailers, byte-by-byte delivery, no
framing at all) comes from a hand-written asyncio server in the test process."""
from __future__ import annotations

import asyncio
import hashlib
import json
import os
import random
import selectors
import socket
import statistics
import string
import subprocess
import sys
import time
import urllib.request

import pytest

from bench.pickerbench import loadgen
from bench.pickerbench.procs import REPO

SMALL_REPLY = json.dumps({"choices": [{"text": "ok " * 60}]}).encode()
BIG_REPLY = b"y" * (256 * 1024)


def make_body(size: int, seed: int = 1) -> bytes:
    prompt = "".join(random.Random(seed).choices(string.ascii_letters + " ", k=size))
    digest = hashlib.sha256(prompt.encode()).hexdigest()
    return json.dumps({"model": "llama", "prompt": prompt, "digest": digest}).encode()


SMALL = make_body(400)


# --- the server process ------------------------------------------------------------------------

def serve() -> None:
    from aiohttp import web

    st: dict = {}

    def reset():
        st.update(arrivals=[], peers=set(), inflight=0, max_inflight=0, checked=0, bad=0)

    def body_ok(request, raw: bytes) -> bool:
        try:
            doc = json.loads(raw)
        except ValueError:
            return False
        return (request.content_type == "application/json" and request.content_length == len(raw)
                and hashlib.sha256(doc["prompt"].encode()).hexdigest() == doc["digest"])

    async def handle(request):
        st["arrivals"].append(time.perf_counter())
        st["peers"].add(request.transport.get_extra_info("peername")[1])
        st["inflight"] += 1
        st["max_inflight"] = max(st["max_inflight"], st["inflight"])
        try:
            raw = await request.read()
            st["checked"] += 1
            st["bad"] += not body_ok(request, raw)
            mode = request.match_info.get("mode", "ok")
            if mode == "hold":
                await asyncio.sleep(0.005)
            elif mode == "slow" and len(st["arrivals"]) % 5 == 0:
                await asyncio.sleep(0.2)
            elif mode == "fail":
                return web.Response(status=500, text="boom")
            elif mode == "chunked":
                resp = web.StreamResponse()
                resp.enable_chunked_encoding()
                await resp.prepare(request)
                for piece in (b"a" * 10, b"b" * 70_000, b"c"):
                    await resp.write(piece)
                await resp.write_eof()
                return resp
            resp = web.Response(body=BIG_REPLY if mode == "big" else SMALL_REPLY)
            if mode == "close":
                resp.force_close()
            return resp
        finally:
            st["inflight"] -= 1

    async def stats(request):
        return web.json_response({**st, "peers": len(st["peers"])})

    async def do_reset(request):
        reset()
        return web.Response()

    async def main():
        reset()
        app = web.Application(client_max_size=16 * 1024 * 1024)
        app.router.add_get("/stats", stats)
        app.router.add_post("/reset", do_reset)
        app.router.add_post("/v1/completions", handle)  # what picker/bench.py's client asks for
        app.router.add_post("/{mode}", handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        print(site._server.sockets[0].getsockname()[1], flush=True)
        await asyncio.Event().wait()

    asyncio.run(main())


class Srv:
    def __init__(self, port: int):
        self.port = port

    def _call(self, method: str, path: str) -> bytes:
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", method=method, data=b"" if method == "POST" else None)
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.read()

    def stats(self) -> dict:
        st = json.loads(self._call("GET", "/stats"))
        st["arrivals"].sort()
        st["gaps"] = [b - a for a, b in zip(st["arrivals"], st["arrivals"][1:])]
        return st


@pytest.fixture(scope="module")
def server_process():
    proc = subprocess.Popen([sys.executable, __file__], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        sel = selectors.DefaultSelector()
        sel.register(proc.stdout, selectors.EVENT_READ)
        assert sel.select(15), "load test server did not start"
        yield Srv(int(proc.stdout.readline()))
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
def srv(server_process):
    server_process._call("POST", "/reset")
    return server_process


# --- fixed rate ----------------------------------------------------------------------------------

async def test_fixed_rate_sends_evenly_spaced_requests(srv):
    res = await loadgen.fixed_rate(srv.port, 200, 1.0, SMALL, path="/ok")
    st = srv.stats()
    assert res.n == 200 and res.errors == 0 and res.statuses == {200: 200} and len(res.latencies) == 200
    assert len(st["arrivals"]) == 200 and st["bad"] == 0
    assert 0.004 <= statistics.median(st["gaps"]) <= 0.006
    assert 0.9 <= st["arrivals"][-1] - st["arrivals"][0] <= 1.2
    # a generator that fires in batches has many near-zero gaps; a stall on a busy box makes a few
    assert sum(g < 0.001 for g in st["gaps"]) <= 10
    assert 0.995 <= res.elapsed < 2.0 and all(0 < lat < 0.5 for lat in res.latencies)


async def test_slow_responses_do_not_delay_later_arrivals(srv):
    # every 5th request is held 200 ms; arrivals every 10 ms must keep coming meanwhile
    res = await loadgen.fixed_rate(srv.port, 100, 1.0, SMALL, path="/slow")
    st = srv.stats()
    assert res.n == 100 and res.errors == 0 and len(st["arrivals"]) == 100
    assert max(st["gaps"]) < 0.1
    assert 0.9 <= st["arrivals"][-1] - st["arrivals"][0] <= 1.2
    assert sum(lat >= 0.2 for lat in res.latencies) == 20
    assert st["peers"] > 1 and st["max_inflight"] > 1  # new connections opened while slow ones were out


# --- closed loop ---------------------------------------------------------------------------------

async def test_closed_loop_keeps_exactly_concurrency_in_flight(srv):
    res = await loadgen.closed_loop(srv.port, 4, 0.5, SMALL, path="/hold")
    st = srv.stats()
    assert res.errors == 0 and res.n == len(st["arrivals"]) == res.statuses[200] >= 40
    assert st["max_inflight"] == 4
    assert st["peers"] == 4  # keep-alive: one connection per worker for the whole run


# --- what goes over the wire ---------------------------------------------------------------------

async def test_big_bodies_arrive_intact_and_big_replies_are_read_fully(srv):
    body = make_body(220 * 1024, seed=7)
    res = await loadgen.closed_loop(srv.port, 2, 0.5, body, path="/big")
    st = srv.stats()
    assert res.errors == 0 and res.n >= 4 and st["checked"] == res.n and st["bad"] == 0
    # the connections were reused, so each 256 KB reply was consumed to its last byte
    assert st["peers"] == 2


async def test_chunked_replies_are_parsed(srv):
    res = await loadgen.closed_loop(srv.port, 2, 0.3, SMALL, path="/chunked")
    st = srv.stats()
    assert res.errors == 0 and res.statuses == {200: res.n} and res.n >= 10
    assert st["peers"] == 2 and st["bad"] == 0


async def test_http_errors_are_counted_not_raised(srv):
    res = await loadgen.fixed_rate(srv.port, 100, 0.2, SMALL, path="/fail")
    assert res.n == 20 and res.statuses == {500: 20} and res.errors == 20 and res.latencies == []
    with pytest.raises(RuntimeError, match=r"20 of 20 requests failed: 0 connection errors.*\{500: 20\}"):
        res.raise_for_errors()
    ok = await loadgen.fixed_rate(srv.port, 100, 0.1, SMALL, path="/ok")
    ok.raise_for_errors()  # nothing to raise


def _settled_peers(srv, want: int) -> int:
    """The server's count of connections, once its last accepts are recorded (the client can see
    a reply before the server thread has counted the connection it came on)."""
    deadline = time.monotonic() + 5
    peers = srv.stats()["peers"]
    while peers < want and time.monotonic() < deadline:
        time.sleep(0.02)
        peers = srv.stats()["peers"]
    return peers


async def test_connection_close_replies_reconnect(srv):
    res = await loadgen.closed_loop(srv.port, 2, 0.3, SMALL, path="/close")
    assert res.errors == 0 and res.n >= 10 and _settled_peers(srv, res.n) == res.n  # one connection per request
    srv._call("POST", "/reset")
    res = await loadgen.fixed_rate(srv.port, 100, 0.3, SMALL, path="/close")
    assert res.errors == 0 and res.statuses == {200: 30} and _settled_peers(srv, 30) == 30


# --- hand-written servers: framing and failures -------------------------------------------------

# one connection's script: chunked with an extension and a trailer, content-length, 204 without a
# length, then a body delimited by the server closing
SCRIPT = [
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"5;ext=1\r\nhello\r\n1A\r\n" + b"z" * 26 + b"\r\n0\r\nX-Trailer: t\r\n\r\n",
    b"HTTP/1.1 201 Created\r\ncontent-length: 12\r\n\r\n{\"ok\": true}",
    b"HTTP/1.1 204 No Content\r\n\r\n",
    b"HTTP/1.1 202 Accepted\r\nContent-Type: text/plain\r\n\r\nuntil the server closes",
]


async def read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
    return head + await reader.readexactly(length)


async def raw_server(handler) -> tuple[asyncio.Server, int]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def test_framing_delivered_byte_by_byte():
    requests: list[bytes] = []

    async def handler(reader, writer):
        try:
            for reply in SCRIPT:
                requests.append(await read_request(reader))
                for i in range(len(reply)):  # every split point a reader can meet
                    writer.write(reply[i:i + 1])
                    await writer.drain()
                    await asyncio.sleep(0)
        except asyncio.IncompleteReadError:
            pass
        finally:
            writer.close()

    server, port = await raw_server(handler)
    async with server:
        res = await loadgen.closed_loop(port, 1, 0.3, b'{"a": 1}', path="/x?y=1")
    assert res.errors == 0 and res.n >= 8
    counts = [res.statuses[s] for s in (200, 201, 204, 202)]
    assert max(counts) - min(counts) <= 1 and sum(counts) == res.n
    assert requests[0] == (f"POST /x?y=1 HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
                           f"Content-Length: 8\r\n\r\n" + '{"a": 1}').encode()
    assert len(set(requests)) == 1


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_connection_failures_are_counted():
    port = closed_port()
    res = await loadgen.fixed_rate(port, 100, 0.1, SMALL)
    assert res.n == 10 and res.errors == 10 and not res.statuses
    with pytest.raises(RuntimeError, match="10 of 10 requests failed: 10 connection errors"):
        res.raise_for_errors()
    # the closed loop retries after a pause rather than spinning on connect()
    res = await loadgen.closed_loop(port, 2, 0.2, SMALL)
    assert res.errors == res.n and 2 <= res.n <= 2 * (0.2 / loadgen.RETRY_DELAY + 2)


async def test_dropped_mid_body_and_silent_servers_are_errors():
    async def drop(reader, writer):
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly ten b")
        await writer.drain()
        writer.close()

    server, port = await raw_server(drop)
    async with server:
        res = await loadgen.fixed_rate(port, 50, 0.1, SMALL)
    assert res.n == 5 and res.errors == 5 and not res.statuses

    async def silent(reader, writer):
        await read_request(reader)
        await asyncio.sleep(5)

    server, port = await raw_server(silent)
    async with server:
        t0 = time.perf_counter()
        res = await loadgen.fixed_rate(port, 50, 0.1, SMALL, timeout=0.3)
        assert time.perf_counter() - t0 < 1.5
    assert res.n == 5 and res.errors == 5


# --- event loops ---------------------------------------------------------------------------------------

def test_runs_on_uvloop(srv):
    uvloop = pytest.importorskip("uvloop")

    async def both():
        assert isinstance(asyncio.get_running_loop(), uvloop.Loop)
        return (await loadgen.fixed_rate(srv.port, 200, 0.5, SMALL, path="/ok"),
                await loadgen.closed_loop(srv.port, 2, 0.3, SMALL, path="/chunked"))

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        fixed, closed = runner.run(both())
    assert fixed.statuses == {200: 100} and closed.errors == 0 and closed.n >= 10
    assert srv.stats()["checked"] == 100 + closed.n


if __name__ == "__main__":
    serve()
