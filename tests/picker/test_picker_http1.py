"""The scraper's HTTP/1.1 client (picker/http1.py) against servers that frame responses every way
HTTP/1.1 allows, byte by byte when it matters, plus a real aiohttp server and the simulator-style
/metrics page through the scraper."""
from __future__ import annotations

import asyncio

import pytest
from aiohttp import web

from infershift.picker.http1 import Client, HttpError, ResponseParser


class RawServer:
    """Answers each request with the next scripted reply; records requests and connections."""

    def __init__(self, replies, drip: bool = False, close_after: bool = False):
        self.replies = list(replies)
        self.drip = drip  # write one byte at a time
        self.close_after = close_after
        self.requests: list[bytes] = []
        self.connections = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                self.requests.append(head)
                reply = self.replies.pop(0) if self.replies else None
                if reply is None:  # hang: the client's timeout must fire
                    await asyncio.sleep(30)
                    return
                if self.drip:
                    for i in range(len(reply)):
                        writer.write(reply[i:i + 1])
                        await writer.drain()
                else:
                    writer.write(reply)
                    await writer.drain()
                if self.close_after:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def __aenter__(self):
        self.server = await asyncio.start_server(self.handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc):
        self.server.close()
        await self.server.wait_closed()


def ok(body: bytes, extra: str = "") -> bytes:
    return f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\n{extra}\r\n".encode() + body


CHUNKED = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
           b"5;ext=1\r\nhello\r\n7\r\n, world\r\n0\r\nX-Trailer: t\r\n\r\n")


async def test_keeps_one_connection_for_many_gets_and_sends_a_proper_request():
    async with RawServer([ok(b"a"), ok(b"bb"), ok(b"")]) as srv:
        c = Client("127.0.0.1", srv.port)
        assert await c.get("/metrics") == (200, b"a")
        assert await c.get("/v1/models") == (200, b"bb")
        assert await c.get("/x") == (200, b"")
        c.close()
    assert srv.connections == 1
    assert srv.requests[0] == f"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1:{srv.port}\r\nAccept: */*\r\n\r\n".encode()


@pytest.mark.parametrize("drip", [False, True], ids=["whole", "byte-by-byte"])
async def test_chunked_content_length_and_read_to_close_bodies(drip):
    async with RawServer([CHUNKED, ok(b"0123456789")], drip=drip) as srv:
        c = Client("127.0.0.1", srv.port)
        assert await c.get("/a") == (200, b"hello, world")
        assert await c.get("/b") == (200, b"0123456789")
        c.close()
    assert srv.connections == 1
    async with RawServer([b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the end"],
                         drip=drip, close_after=True) as srv:
        c = Client("127.0.0.1", srv.port)
        assert await c.get("/c") == (200, b"until the end")
        c.close()


async def test_connection_close_and_http10_make_a_new_connection_next_time():
    async with RawServer([ok(b"1", "Connection: close\r\n")], close_after=True) as srv:
        srv.replies += [b"HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n2", ok(b"3")]
        c = Client("127.0.0.1", srv.port)
        assert [await c.get("/") for _ in range(3)] == [(200, b"1"), (200, b"2"), (200, b"3")]
        c.close()
    assert srv.connections == 3


async def test_timeout_then_a_fresh_connection_works():
    async with RawServer([None, ok(b"back")]) as srv:
        c = Client("127.0.0.1", srv.port, timeout=0.3)
        with pytest.raises(asyncio.TimeoutError):
            await c.get("/slow")
        assert await c.get("/metrics") == (200, b"back")
        c.close()
    assert srv.connections == 2


async def test_cut_short_and_garbled_responses_are_errors():
    async with RawServer([b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc"], close_after=True) as srv:
        c = Client("127.0.0.1", srv.port)
        with pytest.raises(ConnectionError):
            await c.get("/")
    async with RawServer([b"SSH-2.0-OpenSSH\r\n\r\n"]) as srv:
        c = Client("127.0.0.1", srv.port)
        with pytest.raises(HttpError, match="bad status line"):
            await c.get("/")
        c.close()


async def test_refused_connection_is_an_oserror():
    srv = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    srv.close()
    await srv.wait_closed()
    with pytest.raises(OSError):
        await Client("127.0.0.1", port).get("/metrics")


def test_parser_counts_without_keeping_and_reports_status_and_headers():
    p = ResponseParser(keep_body=False)
    msg = CHUNKED.replace(b"200 OK", b"503 Service Unavailable")
    assert not any(p.feed(msg[i:i + 1]) for i in range(len(msg) - 1))
    assert p.feed(msg[-1:])
    assert (p.status, p.size, p.body, p.headers["transfer-encoding"]) == (503, 12, b"", "chunked")
    p = ResponseParser()
    assert p.feed(b"HTTP/1.1 204 No Content\r\n\r\n") and p.status == 204 and p.keep_alive


async def test_real_aiohttp_server():
    app = web.Application()

    async def metrics(request):
        return web.Response(text="vllm:num_requests_waiting 3.0\n")

    app.router.add_get("/metrics", metrics)

    async def stream(request):
        resp = web.StreamResponse()
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        for part in (b'{"data":', b'[{"id":"m"}]}'):
            await resp.write(part)
        await resp.write_eof()
        return resp

    app.router.add_get("/v1/models", stream)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        port = site._server.sockets[0].getsockname()[1]
        c = Client("127.0.0.1", port)
        for _ in range(3):
            assert await c.get("/metrics") == (200, b"vllm:num_requests_waiting 3.0\n")
            assert await c.get("/v1/models") == (200, b'{"data":[{"id":"m"}]}')
        status, _ = await c.get("/nope")
        assert status == 404
        c.close()
    finally:
        await runner.cleanup()
