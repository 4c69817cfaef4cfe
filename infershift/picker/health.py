"""gRPC health services on their own port: liveness, readiness and the ext_proc service name.

`liveness` (and the empty name) is SERVING while the process runs. `readiness` and the ext_proc
service name are SERVING only while the pool has a ready endpoint (fresh metrics) and the picker is
not draining: the Deployment's readiness probe names `readiness`, so a picker with nothing to route
to, or one shutting down, leaves the Service's endpoints (upstream's EPP likewise answers
`readiness` NOT_SERVING until its pool is synced, cmd/epp/runner/health.go). With leader election
(picker/leader.py) they also need this replica to hold the Lease."""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

EXT_PROC = "envoy.service.ext_proc.v3.ExternalProcessor"
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
log = logging.getLogger("picker.health")


class Health:
    def __init__(self) -> None:
        self.servicer = health.aio.HealthServicer()
        self.ready: bool | None = None

    async def set(self, live: bool, ready: bool) -> None:
        self.ready = ready
        await self.servicer.set("liveness", SERVING if live else NOT_SERVING)
        await self.servicer.set("readiness", SERVING if ready else NOT_SERVING)
        await self.servicer.set(EXT_PROC, SERVING if ready else NOT_SERVING)
        await self.servicer.set("", SERVING if live else NOT_SERVING)

    async def follow(self, has_ready_endpoint: Callable[[], bool], interval: float = 0.1,
                     leader: Callable[[], bool] | None = None, leader_status: Callable[[], str] | None = None) -> None:
        """Readiness follows `has_ready_endpoint()` until cancelled (the drain sets it false); with
        leader election (`leader` given), also `leader()`: only the Lease's holder is ready, as
        upstream's EPP (cmd/epp/runner/health.go); liveness is SERVING on every replica."""
        while True:
            has_endpoint = has_ready_endpoint()
            is_leader = leader() if leader is not None else True
            ready = has_endpoint and is_leader
            if ready != self.ready:
                await self.set(live=True, ready=ready)
                why = "no ready endpoint" if not has_endpoint else \
                    (leader_status() if leader_status is not None else "not the leader")
                log.info("readiness " + ("SERVING" if ready else f"NOT_SERVING: {why}"))
            await asyncio.sleep(interval)

    def add_to(self, server: grpc.aio.Server) -> None:
        health_pb2_grpc.add_HealthServicer_to_server(self.servicer, server)
