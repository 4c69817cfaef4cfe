"""A do-nothing ext_proc servicer on grpc.aio that only sets the destination header: the benchmark's
floor for what the Python gRPC transport alone costs per request. It follows whichever Envoy setup
calls it: the one-round-trip mode (headers answered with the body) or the classic one.

python -m picker.noop_extproc GRPC_PORT DEST_IP:PORT
"""
from __future__ import annotations

import asyncio
import sys

import grpc
from envoy.extensions.filters.http.ext_proc.v3 import processing_mode_pb2 as pm
from envoy.service.ext_proc.v3 import external_processor_pb2 as pb
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as pb_grpc

from .extproc import DEST, _header


class Noop(pb_grpc.ExternalProcessorServicer):
    def __init__(self, dest: str):
        common = pb.CommonResponse(header_mutation=pb.HeaderMutation(set_headers=[_header(DEST, dest)]))
        self.route_body = pb.ProcessingResponse(request_body=pb.BodyResponse(response=common))
        self.route_headers = pb.ProcessingResponse(request_headers=pb.HeadersResponse(response=common))
        self.empty_body = pb.ProcessingResponse(request_body=pb.BodyResponse())

    async def Process(self, request_iterator, context):
        hold, chunks = False, 0
        async for msg in request_iterator:
            kind = msg.WhichOneof("request")
            if kind == "request_headers":
                pc = msg.protocol_config
                hold = pc.request_body_mode == pm.ProcessingMode.STREAMED and pc.send_body_without_waiting_for_header_response
                if msg.request_headers.end_of_stream:
                    yield self.route_headers
                elif not hold:
                    yield pb.ProcessingResponse(request_headers=pb.HeadersResponse())
            elif kind == "request_body":
                if not hold:
                    yield self.route_body
                    continue
                chunks += 1
                if msg.request_body.end_of_stream:
                    yield self.route_headers
                    for _ in range(chunks):
                        yield self.empty_body
            elif kind == "response_headers":
                yield pb.ProcessingResponse(response_headers=pb.HeadersResponse())
            elif kind == "response_body":
                yield pb.ProcessingResponse(response_body=pb.BodyResponse())


async def main(port: int, dest: str) -> None:
    server = grpc.aio.server()
    pb_grpc.add_ExternalProcessorServicer_to_server(Noop(dest), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    print("ready", flush=True)
    await server.wait_for_termination()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), sys.argv[2]))
