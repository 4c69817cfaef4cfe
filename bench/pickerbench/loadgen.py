"""A light HTTP/1.1 load generator for the picker benchmark.

An aiohttp ClientSession costs so much CPU per request that, on a 2-core box, the benchmark mostly
measured the load generator. This one is a bare asyncio Protocol: keep-alive connections to
127.0.0.1, one request in flight per connection, a pre-encoded request, and http1's response parser,
counting body bytes only. Requests are issued from timer callbacks and completions, not tasks.
Runs on whatever event loop is current (uvloop if the caller installed it).
"""
from __future__ import annotations

import asyncio
import socket
from collections import Counter
from dataclasses import dataclass, field
from time import perf_counter

from infershift.picker.http1 import HttpError, ResponseParser

# A send this far behind its schedule is measured from the schedule (the generator fell behind);
# less is timer granularity (asyncio and libuv timers are ms-grained), measured from the write.
LATE = 0.002
RETRY_DELAY = 0.01  # closed loop: pause after a connection error instead of spinning on connect()


@dataclass
class Result:
    latencies: list[float] = field(default_factory=list)  # seconds, 2xx responses only
    statuses: Counter = field(default_factory=Counter)    # HTTP status -> count
    errors: int = 0      # connection errors, timeouts and non-2xx responses
    n: int = 0           # requests sent
    elapsed: float = 0.0
    late: int = 0        # fixed_rate sends more than LATE behind schedule

    def raise_for_errors(self) -> None:
        if self.errors:
            http = sum(c for s, c in self.statuses.items() if not 200 <= s < 300)
            raise RuntimeError(f"{self.errors} of {self.n} requests failed: {self.errors - http} connection "
                               f"errors or timeouts, HTTP status counts {dict(sorted(self.statuses.items()))}")


class _Conn(asyncio.Protocol):
    def __init__(self, run: _Run):
        self.run, self.tr, self.open, self.keep = run, None, False, True
        self.parser: ResponseParser | None = None  # set while a request is in flight
        self.t0 = 0.0

    def connection_made(self, tr):
        self.tr, self.open = tr, True
        sock = tr.get_extra_info("socket")
        if sock is not None:  # small requests must not wait for Nagle
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.run.conns.add(self)

    def send(self, req: bytes, t0: float) -> None:
        self.parser, self.t0 = ResponseParser(keep_body=False), t0
        self.tr.write(req)

    def data_received(self, data: bytes) -> None:
        p = self.parser
        if p is None:  # nothing was asked: the stream is out of step, drop the connection
            self.keep = False
            return self.tr.close()
        try:
            if p.feed(data):
                self._complete()
        except HttpError:  # not HTTP/1.1 as we know it
            self.parser, self.keep = None, False
            self.tr.close()
            self.run.done(self, None, self.t0)

    def _complete(self) -> None:
        p, self.parser = self.parser, None
        self.keep = p.keep_alive
        if not self.keep:
            self.tr.close()
        self.run.done(self, p.status, self.t0)

    def connection_lost(self, exc) -> None:
        self.open = False
        self.run.conns.discard(self)
        p = self.parser
        if p is not None:
            if p.eof():
                self._complete()
            else:
                self.parser = None
                self.run.done(self, None, self.t0)


class _Run:
    def __init__(self, port: int, body: bytes, path: str, until: float | None = None):
        self.loop, self.port, self.until = asyncio.get_running_loop(), port, until
        self.req = (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
                    f"Content-Length: {len(body)}\r\n\r\n").encode("latin-1") + body
        self.res, self.idle, self.conns, self.tasks = Result(), [], set(), set()
        self.pending, self.quiet, self.stopped, self.start = 0, None, False, perf_counter()

    def issue(self, sched: float | None) -> None:
        if self.until is not None and perf_counter() >= self.until:
            return
        self.res.n, self.pending = self.res.n + 1, self.pending + 1
        while self.idle:
            c = self.idle.pop()
            if c.open:
                return self._send(c, sched)
        task = self.loop.create_task(self._connect(sched))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _connect(self, sched: float | None) -> None:
        try:
            _, c = await self.loop.create_connection(lambda: _Conn(self), "127.0.0.1", self.port)
        except OSError:
            return self.done(None, None, 0.0)
        self._send(c, sched)

    def _send(self, c: _Conn, sched: float | None) -> None:
        now = perf_counter()
        late = sched is not None and now - sched > LATE
        self.res.late += late
        c.send(self.req, sched if late else now)

    def done(self, c: _Conn | None, status: int | None, t0: float) -> None:
        if self.stopped:
            return
        self.pending -= 1
        if status is not None:
            self.res.statuses[status] += 1
        if status is not None and 200 <= status < 300:
            self.res.latencies.append(perf_counter() - t0)
        else:
            self.res.errors += 1
        if c is not None and c.keep and c.open:
            self.idle.append(c)
        if self.until is not None:  # closed loop: the next request goes out at once
            if status is None:
                self.loop.call_later(RETRY_DELAY, self.issue, None)
            else:
                self.issue(None)
        if self.pending == 0 and self.quiet is not None and not self.quiet.done():
            self.quiet.set_result(None)

    async def finish(self, timeout: float) -> Result:
        if self.pending:
            self.quiet = self.loop.create_future()
            try:
                await asyncio.wait_for(self.quiet, timeout)
            except TimeoutError:  # what is still out counts as failed
                self.res.errors += self.pending
        self.stopped = True
        for task in list(self.tasks):
            task.cancel()
        for c in list(self.conns):
            c.tr.close()
        self.res.elapsed = perf_counter() - self.start
        return self.res


async def fixed_rate(port: int, rate: float, seconds: float, body: bytes, path: str = "/v1/completions",
                     timeout: float = 30.0) -> Result:
    """Open loop: request i is scheduled at start + i/rate whatever earlier responses do, on an idle
    connection or a new one. Latency runs from the write to the last response byte; a send more
    than LATE (2 ms) behind schedule is measured from its scheduled time instead, so a stalled
    generator or event loop counts against the system (no coordinated omission). Sends may be up to
    ~1 ms early or late from timer granularity. Waits up to `timeout` for the last responses."""
    run = _Run(port, body, path)
    n, sent = int(rate * seconds), run.loop.create_future()
    nxt = 0

    def tick() -> None:  # a timer callback, not a task per request: cheaper
        nonlocal nxt
        now, first = perf_counter(), True
        # the one this timer was set for, then any that are due (catching up after a stall)
        while nxt < n and (first or run.start + nxt / rate <= now):
            run.issue(run.start + nxt / rate)
            nxt, first = nxt + 1, False
        if nxt < n:
            run.loop.call_later(max(0.0, run.start + nxt / rate - perf_counter()), tick)
        else:
            sent.set_result(None)

    if n > 0:
        tick()
        await sent
    return await run.finish(timeout)


async def closed_loop(port: int, concurrency: int, seconds: float, body: bytes, path: str = "/v1/completions",
                      timeout: float = 30.0) -> Result:
    """`concurrency` connections, each sending its next request as soon as the previous completes,
    for `seconds`; latency runs from the write to the last response byte."""
    run = _Run(port, body, path, until=perf_counter() + seconds)
    for _ in range(concurrency):
        run.issue(None)
    await asyncio.sleep(seconds)
    return await run.finish(timeout)
