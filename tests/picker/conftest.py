"""Fixtures that run the real thing: model servers, the picker process and Envoy, all on loopback."""
from __future__ import annotations

import importlib.util
import os
import shutil
import time

import pytest

# The picker has its own virtualenv (.venv-picker: grpcio, xds-protos). Under another interpreter
# (e.g. the Pulumi venv running `pytest tests`), skip collecting these tests instead of erroring.
def _has(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ImportError:
        return False


if not (_has("envoy.service.ext_proc.v3") and _has("grpc_health.v1")):
    collect_ignore_glob = ["test_*.py"]

from bench.pickerbench.procs import free_port, start_modelservers, start_picker, tempdir, wait_until
from pickertest import SERVER_SPECS, Servers, Stack, base_config


@pytest.fixture(scope="session")
def workdir():
    d = tempdir("picker-tests-")
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="session")
def servers(workdir):
    ports = {k: free_port() for k in SERVER_SPECS}
    specs = [{"port": ports[k], **v} for k, v in SERVER_SPECS.items()]
    proc = start_modelservers(specs, workdir)
    yield Servers(proc, ports)
    proc.stop()


@pytest.fixture(scope="session")
def stack(workdir, servers):
    cfg_path = os.path.join(workdir, "picker.yaml")
    st = Stack(workdir, servers, cfg_path, grpc_port=free_port(), metrics_port=free_port(), health_port=free_port())
    st.write_config(base_config(servers))
    st.picker = start_picker(cfg_path, workdir, grpc_port=st.grpc_port, health_port=st.health_port,
                             metrics_port=st.metrics_port, extra=["--seed", "7"])
    try:
        st.port = st.envoy(generate_request_id=False)
        # every endpoint scraped and its models learned before tests start
        wait_until(lambda: st.metric("infershift_picker_endpoint_queue_depth") >= 0 and
                   st.metrics().count("infershift_picker_endpoint_kv_cache_usage{") >= len(SERVER_SPECS),
                   20, "endpoints scraped")
        time.sleep(0.6)  # /v1/models polled at least once
        yield st
    finally:
        for e in st.envoys:
            e.stop()
        st.picker.stop()


@pytest.fixture
def reset_servers(servers, stack):
    def reset():
        for k in SERVER_SPECS:
            servers.admin(k, waiting=0, running=0, kv=0.0, running_loras=[], waiting_loras=[],
                          max_lora=SERVER_SPECS[k].get("max_lora", 4), status=200, delay=0.0, metrics_status=200)
        stack.wait_scraped(servers, **{k: (0, 0.0, 0) for k in SERVER_SPECS})

    reset()
    yield servers
    reset()
