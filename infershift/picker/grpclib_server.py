"""The ext_proc service on grpclib (pure-Python HTTP/2 on the event loop) instead of grpc.aio, whose
C core hands every message between its poller thread and the event loop. Same servicer, same
protocol; chosen with `--grpc-server grpclib` (see BENCH.md for what it saves)."""
from __future__ import annotations

import asyncio

from envoy.service.ext_proc.v3 import external_processor_pb2 as pb
from grpclib.config import Configuration
from grpclib.const import Cardinality, Handler
from grpclib.server import Server

PROCESS = "/envoy.service.ext_proc.v3.ExternalProcessor/Process"


class ExtProcHandler:
    def __init__(self, servicer):
        self.servicer = servicer  # extproc.ExtProc: Process(request_iterator, context) -> async gen
        self.in_flight = 0

    async def process(self, stream) -> None:
        self.in_flight += 1
        try:
            async for resp in self.servicer.Process(stream, None):
                await stream.send_message(resp)
        finally:
            self.in_flight -= 1

    def __mapping__(self):
        return {PROCESS: Handler(self.process, Cardinality.STREAM_STREAM, pb.ProcessingRequest, pb.ProcessingResponse)}


class GrpclibServer:
    """start(host, port, tls) / stop(grace), like the other ext_proc transports."""

    def __init__(self, servicer, window: int = 16 * 1024 * 1024):
        # big windows: a buffered 220 KB prompt crosses without waiting on window updates
        self.handler = ExtProcHandler(servicer)
        self.server = Server([self.handler], config=Configuration(
            http2_connection_window_size=4 * window, http2_stream_window_size=window))

    async def start(self, host: str, port: int, tls=None) -> None:
        await self.server.start(host, port, reuse_address=True, ssl=tls.ssl_context() if tls is not None else None)

    async def stop(self, grace: float) -> None:
        # grpclib's close() cancels the streams in flight and it sends no GOAWAY, so wait for them
        # first (up to grace); a gateway may still open streams meanwhile, which are served too.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        while self.handler.in_flight and loop.time() < deadline:
            await asyncio.sleep(0.02)
        self.server.close()
        await self.server.wait_closed()
