"""The simulator behind a real Envoy: streams keep their pace, headers survive."""
import asyncio
import os
import shutil
import socket
import statistics
import subprocess
import sys

import pytest

from infershift.sim.profiles import get_profile
from sim_helpers import stop_group, stream_times

pytestmark = pytest.mark.asyncio

ENVOY = shutil.which("envoy") or os.path.join(os.path.dirname(sys.executable), "envoy")

CONFIG = """
static_resources:
  listeners:
  - name: in
    address: {{socket_address: {{address: 127.0.0.1, port_value: {listen}}}}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: in
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {{prefix: "/"}}
                route: {{cluster: sim, timeout: 0s}}
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
  - name: sim
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: sim
      endpoints:
      - lb_endpoints:
        - endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {upstream}}}}}}}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def envoy(tmp_path):
    procs = []

    def start(upstream: int) -> int:
        listen = free_port()
        cfg = tmp_path / "envoy.yaml"
        cfg.write_text(CONFIG.format(listen=listen, upstream=upstream))
        check = subprocess.run([ENVOY, "--mode", "validate", "-c", str(cfg)], capture_output=True, text=True,
                               timeout=60)
        assert check.returncode == 0, check.stdout + check.stderr
        p = subprocess.Popen([ENVOY, "-c", str(cfg), "--disable-hot-restart", "-l", "warning"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
        procs.append(p)
        return listen

    yield start
    for p in procs:
        stop_group(p)


async def wait_listening(port: int) -> None:
    for _ in range(200):
        try:
            _, w = await asyncio.open_connection("127.0.0.1", port)
            w.close()
            return
        except OSError:
            await asyncio.sleep(0.05)
    raise AssertionError("envoy never listened")


async def test_streaming_through_envoy_keeps_the_modelled_pace(start_server, envoy):
    srv, base, sess = await start_server(profile="h100-8b", name="pool-a-0")
    port = envoy(srv.port)
    await wait_listening(port)
    p = get_profile("h100-8b")
    url = f"http://127.0.0.1:{port}/v1/completions"
    async with sess.get(f"http://127.0.0.1:{port}/v1/models") as r:
        assert r.status == 200 and r.headers["x-inference-pod"] == "pool-a-0"
    itls = []
    for i in range(3):
        _, times, chunks = await stream_times(sess, url, {"model": "base", "prompt": f"{i} hello " * 50,
                                                          "max_tokens": 30, "ignore_eos": True})
        assert len(times) == 30 and chunks[0]["choices"][0]["text"].startswith("[base]")
        itls.append((times[-1] - times[0]) / 29)
    # tokens arrive one by one at the engine's pace, not buffered into one burst by the proxy
    assert statistics.median(itls) == pytest.approx(p.itl(1), rel=0.15)
    async with sess.post(url, json={"model": "nope", "prompt": "x"}) as r:
        assert r.status == 404 and r.headers["x-inference-pod"] == "pool-a-0"
        assert (await r.json())["error"]["type"] == "NotFoundError"
