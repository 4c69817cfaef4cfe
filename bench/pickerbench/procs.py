"""Start and stop helper processes (Envoy, picker, model servers) for tests and the benchmark.

Everything binds 127.0.0.1; every process gets its own process group so it can be killed whole.
"""
from __future__ import annotations

import json
import os
import socket
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from infershift import envoy, proc

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def envoy_binary() -> str:
    return envoy.binary()


class Proc:
    def __init__(self, argv: list[str], log_path: str, env: dict | None = None, cwd: str | None = None):
        self.log_path = log_path
        self.log = open(log_path, "wb")
        self.p = proc.spawn(argv, out=self.log, env=env, cwd=cwd or str(REPO))

    def alive(self) -> bool:
        return self.p.poll() is None

    def output(self) -> str:
        self.log.flush()
        return Path(self.log_path).read_text(errors="replace")

    def stop(self) -> None:
        proc.stop_group(self.p, 5)
        self.log.close()


def wait_until(pred, timeout: float, what: str, proc: Proc | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and not proc.alive():
            raise RuntimeError(f"{what}: process exited:\n{proc.output()[-3000:]}")
        try:
            if pred():
                return
        except OSError:
            pass
        time.sleep(0.05)
    raise TimeoutError(f"timed out waiting for {what}" + (f":\n{proc.output()[-3000:]}" if proc else ""))


def http_get(url: str, timeout: float = 5.0) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def validate_envoy(config: dict, workdir: str) -> str:
    """`envoy --mode validate` on a config; raises with Envoy's message when it is rejected."""
    path = os.path.join(workdir, f"envoy-{free_port()}.json")
    with open(path, "w") as f:
        json.dump(config, f)
    try:
        envoy.validate_file(path)
    except envoy.EnvoyConfigError as e:
        raise RuntimeError(f"envoy rejected {path}:\n{e}") from None
    return path


def start_envoy(config: dict, workdir: str, admin_port: int) -> Proc:
    path = validate_envoy(config, workdir)
    p = Proc(envoy.argv(path), os.path.join(workdir, f"envoy-{admin_port}.log"))
    try:
        wait_until(lambda: http_get(f"http://127.0.0.1:{admin_port}/ready", 1)[0] == 200, 30, "envoy ready", p)
    except Exception:
        p.stop()
        raise
    return p


def start_picker(config_path: str, workdir: str, *, grpc_port: int, health_port: int, metrics_port: int,
                 extra: list[str] = ()) -> Proc:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    p = Proc([sys.executable, "-m", "infershift.picker", "--config", config_path, "--grpc-port", str(grpc_port),
              "--health-port", str(health_port), "--metrics-port", str(metrics_port), *extra],
             os.path.join(workdir, f"picker-{grpc_port}.log"), env=env)
    try:
        wait_until(lambda: picker_ready(health_port), 30, "picker ready", p)
    except Exception:
        p.stop()
        raise
    return p


def picker_ready(health_port: int) -> bool:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(f"127.0.0.1:{health_port}") as ch:
        try:
            r = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service="readiness"), timeout=1)
        except grpc.RpcError:
            return False
    return r.status == health_pb2.HealthCheckResponse.SERVING


def start_modelservers(specs: list[dict], workdir: str) -> Proc:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    p = Proc([sys.executable, "-m", "tests.picker.modelserver", json.dumps(specs)],
             os.path.join(workdir, f"servers-{specs[0]['port']}.log"), env=env)
    try:
        wait_until(lambda: "ready" in p.output(), 30, "model servers", p)
    except Exception:
        p.stop()
        raise
    return p


def tempdir(prefix: str) -> str:
    return tempfile.mkdtemp(prefix=prefix)
