"""A do-nothing ext_proc servicer on grpc.aio that only sets the destination header: the benchmark's
floor for what the Python gRPC transport alone costs per request.

python -m picker.noop_extproc GRPC_PORT DEST_IP:PORT
"""
from __future__ import annotations

import asyncio
import sys

import grpc
from envoy.service.ext_proc.v3 import external_processor_pb2 as pb
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as pb_grpc

from .extproc import DEST, _header


class Noop(pb_grpc.ExternalProcessorServicer):
    def __init__(self, dest: str):
        self.route = pb.ProcessingResponse(request_body=pb.BodyResponse(response=pb.CommonResponse(
            header_mutation=pb.HeaderMutation(set_headers=[_header(DEST, dest)]))))

    async def Process(self, request_iterator, context):
        async for msg in request_iterator:
            kind = msg.WhichOneof("request")
            if kind == "request_headers":
                yield pb.ProcessingResponse(request_headers=pb.HeadersResponse())
            elif kind == "request_body":
                yield self.route
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
