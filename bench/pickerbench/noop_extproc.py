"""A do-nothing ext_proc servicer that only sets the destination header: the benchmark's floor for
what a transport alone costs per request, on grpc.aio (default) or on the picker's own HTTP/2 server
(`--transport h2`). It follows whichever Envoy setup calls it: the one-round-trip mode (headers
answered with the body) or the classic one. Like the picker it serves TLS (a self-signed
certificate, picker/tls.py) unless `--plaintext`.

python -m bench.pickerbench.noop_extproc GRPC_PORT DEST_IP:PORT [--transport grpcio|h2] [--plaintext]
"""
from __future__ import annotations

import argparse
import asyncio

import grpc
from envoy.extensions.filters.http.ext_proc.v3 import processing_mode_pb2 as pm
from envoy.service.ext_proc.v3 import external_processor_pb2 as pb
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as pb_grpc

from infershift.picker.extproc import DEST, _header


class _State:
    __slots__ = ("hold", "chunks", "done", "request_id")

    def __init__(self):
        self.hold, self.chunks, self.done, self.request_id = False, 0, False, ""


class Noop(pb_grpc.ExternalProcessorServicer):
    def __init__(self, dest: str):
        common = pb.CommonResponse(header_mutation=pb.HeaderMutation(set_headers=[_header(DEST, dest)]))
        self.route_body = pb.ProcessingResponse(request_body=pb.BodyResponse(response=common))
        self.route_headers = pb.ProcessingResponse(request_headers=pb.HeadersResponse(response=common))
        self.empty_body = pb.ProcessingResponse(request_body=pb.BodyResponse())

    @staticmethod
    def new_state() -> _State:
        return _State()

    def handle(self, st: _State, msg) -> list:
        kind = msg.WhichOneof("request")
        if kind == "request_headers":
            pc = msg.protocol_config
            st.hold = pc.request_body_mode == pm.ProcessingMode.STREAMED and pc.send_body_without_waiting_for_header_response
            if msg.request_headers.end_of_stream:
                st.done = st.hold
                return [self.route_headers]
            return [] if st.hold else [pb.ProcessingResponse(request_headers=pb.HeadersResponse())]
        if kind == "request_body":
            if not st.hold:
                return [self.route_body]
            st.chunks += 1
            if msg.request_body.end_of_stream:
                st.done = True  # like the picker: responses don't come back on this stream
                return [self.route_headers, *[self.empty_body] * st.chunks]
            return []
        if kind == "response_headers":
            return [pb.ProcessingResponse(response_headers=pb.HeadersResponse())]
        if kind == "response_body":
            return [pb.ProcessingResponse(response_body=pb.BodyResponse())]
        return []

    def finish(self, st: _State) -> None:
        pass

    async def Process(self, request_iterator, context):
        st = _State()
        async for msg in request_iterator:
            for r in self.handle(st, msg):
                yield r


async def main(port: int, dest: str, transport: str, plaintext: bool = False) -> None:
    from infershift.picker.tls import ServerTLS

    tls = None if plaintext else ServerTLS()
    if transport == "h2":
        from infershift.picker.h2_server import ExtProcServer

        h2 = ExtProcServer(Noop(dest))
        await h2.start("127.0.0.1", port, tls)
        print("ready", flush=True)
        await asyncio.Event().wait()
    server = grpc.aio.server()
    pb_grpc.add_ExternalProcessorServicer_to_server(Noop(dest), server)
    if tls is None:
        server.add_insecure_port(f"127.0.0.1:{port}")
    else:
        server.add_secure_port(f"127.0.0.1:{port}", tls.grpc_credentials())
    await server.start()
    print("ready", flush=True)
    await server.wait_for_termination()


if __name__ == "__main__":
    ap = argparse.ArgumentParser(prog="python -m bench.pickerbench.noop_extproc")
    ap.add_argument("port", type=int)
    ap.add_argument("dest")
    ap.add_argument("--transport", choices=["grpcio", "h2"], default="grpcio")
    ap.add_argument("--plaintext", action="store_true", help="h2c instead of TLS")
    a = ap.parse_args()
    asyncio.run(main(a.port, a.dest, a.transport, a.plaintext))
