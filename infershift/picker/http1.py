"""A small keep-alive HTTP/1.1 client for polling model servers.

Why not aiohttp: the picker GETs every server's /metrics 20 times a second, and an aiohttp request
costs ~0.5-1 ms of CPU on a 2-core box (at 64 servers, most of a core) while the parse after it is
a few per cent of that. This client keeps one connection per server, writes a pre-encoded request
and parses the response (Content-Length, chunked, or read-to-close) in one Protocol.
"""
from __future__ import annotations

import asyncio


class HttpError(Exception):
    """The server's answer is not valid HTTP/1.1 (or the connection ended mid-response)."""


class ResponseParser:
    """Feed bytes; `feed` returns True once one whole response is in. With keep_body=False the body
    is only counted (`size`), for a load generator that must not pay for copies."""

    def __init__(self, max_head: int = 64 * 1024, keep_body: bool = True):
        self.max_head = max_head
        self.keep_body = keep_body
        self.size = 0
        self.http11 = True
        self.head = bytearray()
        self.status = 0
        self.headers: dict[str, str] = {}
        self.parts: list[bytes] = []
        self.remaining = -1  # body bytes still due; -1: not known yet
        self.chunked = False
        self.until_close = False
        self.chunk_buf = bytearray()
        self.done = False

    @property
    def body(self) -> bytes:
        return b"".join(self.parts)

    @property
    def keep_alive(self) -> bool:
        conn = self.headers.get("connection", "").lower()
        return not self.until_close and conn != "close" and (self.http11 or conn == "keep-alive")

    def _take(self, data) -> None:
        self.size += len(data)
        if self.keep_body:
            self.parts.append(bytes(data))

    def feed(self, data: bytes) -> bool:
        if self.status == 0:
            self.head += data
            end = self.head.find(b"\r\n\r\n")
            if end < 0:
                if len(self.head) > self.max_head:
                    raise HttpError("response head too large")
                return False
            data = bytes(self.head[end + 4:])
            self._parse_head(bytes(self.head[:end]))
        if self.chunked:
            return self._feed_chunked(data)
        if self.until_close:
            self._take(data)
            return False
        take = data[:self.remaining]
        if take:
            self._take(take)
        self.remaining -= len(take)
        self.done = self.remaining == 0
        return self.done

    def eof(self) -> bool:
        """The connection closed: a read-to-close body is complete, anything else is cut short."""
        if self.until_close and self.status:
            self.done = True
        return self.done

    def _parse_head(self, head: bytes) -> None:
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
            raise HttpError(f"bad status line {lines[0][:80]!r}")
        self.status = int(parts[1])
        self.http11 = parts[0] != "HTTP/1.0"
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if not sep:
                raise HttpError(f"bad header line {line[:80]!r}")
            self.headers[name.strip().lower()] = value.strip()
        if "chunked" in self.headers.get("transfer-encoding", "").lower():
            self.chunked = True
        elif "content-length" in self.headers:
            try:
                self.remaining = int(self.headers["content-length"])
            except ValueError:
                raise HttpError("bad Content-Length") from None
        elif self.status in (204, 304) or 100 <= self.status < 200:
            self.remaining = 0
        else:
            self.until_close = True

    def _feed_chunked(self, data: bytes) -> bool:
        buf = self.chunk_buf
        buf += data
        while True:
            if self.remaining > 0:  # inside a chunk's data (plus its CRLF)
                if len(buf) < self.remaining + 2:
                    return False
                self.size += self.remaining
                if self.keep_body:
                    self.parts.append(bytes(buf[:self.remaining]))
                del buf[:self.remaining + 2]
                self.remaining = -1
            line_end = buf.find(b"\r\n")
            if line_end < 0:
                return False
            if self.remaining == 0:  # after the last chunk: trailers until an empty line
                del buf[:line_end + 2]
                if line_end == 0:
                    self.done = True
                    return True
                continue
            try:
                size = int(bytes(buf[:line_end]).split(b";", 1)[0], 16)
            except ValueError:
                raise HttpError("bad chunk size") from None
            del buf[:line_end + 2]
            self.remaining = size if size else 0


class _Conn(asyncio.Protocol):
    def __init__(self):
        self.transport: asyncio.Transport | None = None
        self.parser: ResponseParser | None = None
        self.waiter: asyncio.Future | None = None

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        p, w = self.parser, self.waiter
        if p is None or w is None or w.done():
            self.transport.close()  # bytes nobody asked for: this connection can't be trusted
            return
        try:
            if p.feed(data):
                w.set_result(p)
        except HttpError as e:
            w.set_exception(e)
            self.transport.close()

    def connection_lost(self, exc) -> None:
        self.transport = None
        w, p = self.waiter, self.parser
        if w is not None and not w.done():
            if p is not None and p.eof():
                w.set_result(p)
            else:
                w.set_exception(ConnectionError("connection closed before the response was complete"))


def _expire(fut: asyncio.Future) -> None:
    if not fut.done():
        fut.set_exception(TimeoutError("no complete response in time"))


class Client:
    """GETs over one reused connection to host:port. Not for concurrent use: one request at a time."""

    def __init__(self, host: str, port: int, timeout: float = 2.0):
        self.host, self.port, self.timeout = host, port, timeout
        self.authority = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        self.conn: _Conn | None = None

    async def get(self, path: str) -> tuple[int, bytes]:
        """(status, body). Raises OSError / ConnectionError, asyncio.TimeoutError or HttpError."""
        loop = asyncio.get_running_loop()
        c = self.conn
        if c is None or c.transport is None or c.transport.is_closing():
            _, c = await asyncio.wait_for(loop.create_connection(_Conn, self.host, self.port), self.timeout)
            self.conn = c
        c.parser, c.waiter = ResponseParser(), loop.create_future()
        c.transport.write(f"GET {path} HTTP/1.1\r\nHost: {self.authority}\r\nAccept: */*\r\n\r\n".encode())
        # a timer on the future, not wait_for: no extra task per poll
        timer = loop.call_later(self.timeout, _expire, c.waiter)
        try:
            p = await c.waiter
        except BaseException:
            self.close()  # a timeout or error leaves the connection mid-response: start afresh
            raise
        finally:
            timer.cancel()
            c.waiter = None
        if not p.keep_alive:
            self.close()
        return p.status, p.body

    def close(self) -> None:
        if self.conn is not None and self.conn.transport is not None:
            self.conn.transport.close()
        self.conn = None
