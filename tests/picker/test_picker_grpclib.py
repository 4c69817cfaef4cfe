"""The same picker on the grpclib transport (`--grpc-server grpclib`) behind a real Envoy, both setups."""
from __future__ import annotations

import json
import os

import pytest

from bench.pickerbench.procs import free_port, start_picker, wait_until
from pickertest import base_config, complete, request


@pytest.fixture(scope="module")
def lib_ports(stack, workdir):
    import yaml

    path = os.path.join(workdir, "grpclib.yaml")
    with open(path, "w") as f:
        yaml.safe_dump(base_config(stack.servers), f)
    gp, hp, mp = free_port(), free_port(), free_port()
    picker = start_picker(path, workdir, grpc_port=gp, health_port=hp, metrics_port=mp,
                          extra=["--grpc-server", "grpclib", "--seed", "3"])
    try:
        yield stack.envoy(picker_port=gp, generate_request_id=False), stack.envoy(picker_port=gp, classic=True), mp
    finally:
        picker.stop()


def test_grpclib_transport_keeps_the_protocol(lib_ports, reset_servers):
    s = reset_servers
    one_rt, classic, metrics_port = lib_ports
    for port in (one_rt, classic):
        r = complete(port, "sql", "lib", {"x-gateway-model-name-rewrite": "sql-v2", "x-test-subset": s.addr("a2")})
        assert r.status == 200 and r.json()["model"] == "sql" and r.headers["x-infershift-target-model"] == "sql-v2"
        assert int(r.headers["x-served-port"]) == s.ports["a2"]
        events = [json.loads(x[6:]) for x in complete(port, "sql", "x", stream=True).body.decode().splitlines()
                  if x.startswith("data: {")]
        assert len(events) == 3 and {e["model"] for e in events} == {"sql"}
        assert request(port, "GET", "/hello").status == 200
        assert complete(port, "gpt-9").json()["error"]["code"] == "model_not_found"
        assert complete(port, "llama", "x" * 300_000).status == 413
        big = "lorem ipsum " * 18000  # ~216 KB, under the 256 KB limit
        r = complete(port, "sql", big, {"x-gateway-model-name-rewrite": "sql-v1"})
        assert r.status == 200 and r.json()["model"] == "sql"
    from bench.pickerbench.procs import http_get

    wait_until(lambda: 'picked="true"' in http_get(f"http://127.0.0.1:{metrics_port}/metrics")[1], 20, "served")
