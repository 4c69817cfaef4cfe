"""The picker's gRPC health port as the Deployment's probes use it: `readiness` is NOT_SERVING while
the pool has no ready endpoint and from SIGTERM on (draining), while streams in flight finish;
`liveness` stays SERVING. Real processes: the picker, a model server that comes and goes, a gRPC
client holding an ext_proc stream open over TLS across the SIGTERM."""
from __future__ import annotations

import json
import os
import queue
import signal
import sys
import time

import grpc
import pytest
import yaml
from envoy.config.core.v3 import base_pb2
from envoy.service.ext_proc.v3 import external_processor_pb2 as pb
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as pb_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bench.pickerbench.procs import REPO, Proc, free_port, start_modelservers, wait_until
from infershift.picker.tls import self_signed

SERVING, NOT_SERVING = health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING


def status(health_port: int, service: str) -> int:
    with grpc.insecure_channel(f"127.0.0.1:{health_port}") as ch:
        return health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service=service), timeout=2).status


def start(workdir, endpoint_port: int, *flags: str) -> tuple[Proc, int, int]:
    """A picker with one static endpoint; returns once it logged `picker ready` (first scrape round)."""
    path = os.path.join(workdir, f"health-{free_port()}.yaml")
    with open(path, "w") as f:
        yaml.safe_dump({"pool": {"name": "health"}, "endpoints": [{"address": f"127.0.0.1:{endpoint_port}"}],
                        "metrics": {"pollInterval": "20ms", "staleAfter": "400ms"}}, f)
    gp, hp = free_port(), free_port()
    p = Proc([sys.executable, "-m", "infershift.picker", "--config", path,
              "--grpc-port", str(gp), "--health-port", str(hp), "--metrics-port", str(free_port()), *flags],
             os.path.join(workdir, f"picker-health-{gp}.log"), env=dict(os.environ, PYTHONPATH=str(REPO)))
    wait_until(lambda: "picker ready" in p.output(), 30, "picker ready", p)
    return p, gp, hp


def test_readiness_follows_the_pools_ready_endpoints(workdir):
    port = free_port()
    picker, _, hp = start(workdir, port)
    server = None
    try:
        # nothing to route to: alive, not ready (nor the ext_proc service name a gateway may check)
        assert status(hp, "liveness") == SERVING
        assert status(hp, "readiness") == NOT_SERVING
        assert status(hp, "envoy.service.ext_proc.v3.ExternalProcessor") == NOT_SERVING
        assert status(hp, "") == NOT_SERVING  # the empty name is overall health: readiness, as upstream's
        server = start_modelservers([{"port": port, "name": "late", "models": ["llama"]}], workdir)
        wait_until(lambda: status(hp, "readiness") == SERVING, 10, "ready once the endpoint answers", picker)
        assert status(hp, "envoy.service.ext_proc.v3.ExternalProcessor") == SERVING
        assert status(hp, "") == SERVING
        server.stop()
        server = None
        wait_until(lambda: status(hp, "readiness") == NOT_SERVING, 10, "not ready once its metrics are stale", picker)
        assert status(hp, "liveness") == SERVING
        out = picker.output()
        assert "readiness SERVING" in out and "readiness NOT_SERVING: no ready endpoint" in out
    finally:
        if server is not None:
            server.stop()
        picker.stop()


class Stream:
    """One ext_proc stream held open by a real gRPC client (TLS, verifying the picker's certificate)."""

    def __init__(self, port: int, cert_pem: bytes):
        self.channel = grpc.secure_channel(f"127.0.0.1:{port}", grpc.ssl_channel_credentials(root_certificates=cert_pem),
                                           options=[("grpc.ssl_target_name_override", "localhost")])
        self.q: queue.Queue = queue.Queue()
        self.responses = pb_grpc.ExternalProcessorStub(self.channel).Process(iter(self.q.get, None), timeout=60)

    def send(self, msg) -> None:
        self.q.put(msg)

    def recv(self):
        return next(self.responses)

    def close(self) -> list:
        """Half-close; what is left of the answers (the call ends with OK or raises)."""
        self.q.put(None)
        rest = list(self.responses)
        self.channel.close()
        return rest


def _headers(pairs) -> pb.HttpHeaders:
    return pb.HttpHeaders(headers=base_pb2.HeaderMap(
        headers=[base_pb2.HeaderValue(key=k, raw_value=v.encode()) for k, v in pairs]), end_of_stream=False)


@pytest.mark.parametrize("transport", ["h2", "grpcio", "grpclib"])
def test_sigterm_drains_not_ready_and_finishes_streams_in_flight(workdir, tmp_path, transport):
    cert, key = self_signed()
    (tmp_path / "tls.crt").write_bytes(cert)
    (tmp_path / "tls.key").write_bytes(key)
    port = free_port()
    server = start_modelservers([{"port": port, "name": "drain", "models": ["llama"]}], workdir)
    picker, gp, hp = start(workdir, port, "--grpc-server", transport, "--cert-path", str(tmp_path),
                           "--drain-timeout", "20s")
    try:
        wait_until(lambda: status(hp, "readiness") == SERVING, 10, "ready", picker)
        s = Stream(gp, cert)
        # the classic GIE exchange: headers answered at once, the body later
        s.send(pb.ProcessingRequest(request_headers=_headers(
            [(":method", "POST"), (":path", "/v1/completions"), ("content-type", "application/json")])))
        assert s.recv().HasField("request_headers")
        os.kill(picker.p.pid, signal.SIGTERM)  # the stream is in flight
        wait_until(lambda: status(hp, "readiness") == NOT_SERVING, 5, "not ready once draining", picker)
        assert status(hp, "liveness") == SERVING and picker.alive()
        time.sleep(2.5)  # a slow stream: longer than the 2 s the picker used to give streams in flight
        assert picker.alive()
        s.send(pb.ProcessingRequest(request_body=pb.HttpBody(
            body=json.dumps({"model": "llama", "prompt": "drain"}).encode(), end_of_stream=True)))
        answer = s.recv()
        dest = {h.header.key: h.header.raw_value.decode()
                for h in answer.request_body.response.header_mutation.set_headers}
        assert dest["x-gateway-destination-endpoint"] == f"127.0.0.1:{port}"  # routed during the drain
        s.close()  # ends OK (raises otherwise)
        picker.p.wait(timeout=15)
        assert picker.p.returncode == 0
        out = picker.output()
        assert out.index("picker draining") < out.index("picker stopped")
    finally:
        picker.stop()
        server.stop()
