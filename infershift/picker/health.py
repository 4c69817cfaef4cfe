"""gRPC health services on their own port: liveness, readiness, the ext_proc service name and the
empty name.

`liveness` is SERVING while the process runs. `readiness`, the ext_proc service name and the empty
name "" (a load balancer's or `grpc_health_probe`'s "overall health") are SERVING only while the
pool has a ready endpoint (fresh metrics) and the picker is not draining: the Deployment's readiness
probe names `readiness`, so a picker with nothing to route to, or one shutting down, leaves the
Service's endpoints. With leader election (picker/leader.py) those three also need this replica to
hold the Lease; `liveness` stays SERVING on a standby, so it is never restarted for not leading.

That is upstream's EPP (llm-d-router cmd/epp/runner/health.go @ ebab687, healthServer.Check): with
leader election, "", `readiness` and `envoy.service.ext_proc.v3.ExternalProcessor` are SERVING only
on the leader that is synced and not draining, `liveness` always; without it every name gets the
same answer (synced, not draining), so "" is readiness there too. Where this differs from upstream:
without leader election `liveness` here stays SERVING until exit (upstream's follows the pool sync
and the drain, so a draining pod could be restarted mid-drain), and a name none of these four is
NOT_FOUND (grpc.health.v1's standard answer; upstream answers SERVICE_UNKNOWN)."""
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
        await self.servicer.set("", SERVING if ready else NOT_SERVING)  # overall health: readiness, as upstream

    async def follow(self, has_ready_endpoint: Callable[[], bool], interval: float = 0.1,
                     leader: Callable[[], bool] | None = None, leader_status: Callable[[], str] | None = None) -> None:
        """Readiness (`readiness`, ext_proc, "") follows `has_ready_endpoint()` until cancelled (the
        drain sets it false); with leader election (`leader` given), also `leader()`: only the
        Lease's holder is ready, as upstream's EPP (cmd/epp/runner/health.go); liveness is SERVING
        on every replica."""
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
