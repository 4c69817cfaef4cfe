"""gRPC health services on their own port: liveness, readiness and the ext_proc service name."""
from __future__ import annotations

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

EXT_PROC = "envoy.service.ext_proc.v3.ExternalProcessor"
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class Health:
    def __init__(self):
        self.servicer = health.aio.HealthServicer()

    async def set(self, live: bool, ready: bool) -> None:
        await self.servicer.set("liveness", SERVING if live else NOT_SERVING)
        await self.servicer.set("readiness", SERVING if ready else NOT_SERVING)
        await self.servicer.set(EXT_PROC, SERVING if ready else NOT_SERVING)
        await self.servicer.set("", SERVING if live else NOT_SERVING)

    def add_to(self, server: grpc.aio.Server) -> None:
        health_pb2_grpc.add_HealthServicer_to_server(self.servicer, server)
