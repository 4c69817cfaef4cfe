"""The shadow recorder (picker/recorder.py) in front of a real simulator, behind a real Envoy that
mirrors a route to it as a gateway mirrors to a Service: the client gets the primary's answer, the
recorder forwards the copy unchanged and logs its answer line (shadow, request id, model, status,
TTFT, tokens, text) for whole and streamed answers; a dead upstream is a logged 502."""
from __future__ import annotations

import json
import os
import re
import sys
import uuid

import pytest
from pickertest import request

from bench.pickerbench.procs import REPO, Proc, free_port, http_get, start_envoy, wait_until

MAIN_PY = REPO / ".venv" / "bin" / "python"


def _cluster(name: str, port: int) -> dict:
    return {"name": name, "type": "STATIC", "connect_timeout": "2s",
            "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [{"endpoint": {
                "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}}}}]}]}}


def _mirroring_envoy(listen: int, admin: int, primary: int, recorder: int) -> dict:
    """A listener whose one route goes to the primary server and mirrors every request to the
    recorder (Envoy marks the copy's Host with -shadow), as a Gateway's RequestMirror filter does."""
    route = {"match": {"prefix": "/"}, "route": {"cluster": "primary", "timeout": "30s",
                                                 "request_mirror_policies": [{"cluster": "recorder"}]}}
    hcm = {"@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3."
                    "HttpConnectionManager",
           "stat_prefix": "gw", "route_config": {"virtual_hosts": [{"name": "any", "domains": ["*"],
                                                                    "routes": [route]}]},
           "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {
               "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}]}
    return {"admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin}}},
            "static_resources": {
                "listeners": [{"name": "gw", "address": {"socket_address": {"address": "127.0.0.1",
                                                                             "port_value": listen}},
                               "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager",
                                                               "typed_config": hcm}]}]}],
                "clusters": [_cluster("primary", primary), _cluster("recorder", recorder)]}}


@pytest.fixture(scope="module")
def mirrored(workdir):
    if not MAIN_PY.exists():
        pytest.skip("the main virtualenv (the simulator's) is not available")
    d = os.path.join(workdir, "recorder")
    os.makedirs(d, exist_ok=True)
    sim = Proc([str(MAIN_PY), "-m", "infershift.sim", "--profile", "h100-8b", "--model", "llama", "--port", "0",
                "--servers", "2", "--time-scale", "50", "--seed", "1"], os.path.join(d, "sim.log"))
    procs = [sim]
    try:
        wait_until(lambda: sim.output().count("listening on") >= 2, 60, "sim servers", sim)
        primary, candidate = (int(p) for p in re.findall(r"listening on http://127\.0\.0\.1:(\d+)", sim.output()))
        rport = free_port()
        rec = Proc([sys.executable, "-m", "infershift.picker.recorder", "--upstream", f"http://127.0.0.1:{candidate}",
                    "--name", "candidate-svc", "--host", "127.0.0.1", "--port", str(rport), "--max-text-chars", "500"],
                   os.path.join(d, "recorder.log"), env=dict(os.environ, PYTHONPATH=str(REPO)))
        procs.append(rec)
        wait_until(lambda: http_get(f"http://127.0.0.1:{rport}/healthz", 1)[0] == 200, 30, "recorder", rec)
        lp, ap = free_port(), free_port()
        procs.append(start_envoy(_mirroring_envoy(lp, ap, primary, rport), d, ap))
        yield lp, rec, rport
    finally:
        for p in reversed(procs):
            p.stop()


def _lines(rec: Proc, rid: str) -> list[dict]:
    out = []
    for line in rec.output().splitlines():
        if rid in line and '"picker.answers"' in line:
            out.append(json.loads(line[line.index("{"):]))
    return out


@pytest.mark.parametrize("stream", [False, True])
def test_the_copy_is_forwarded_and_its_answer_logged(mirrored, stream):
    port, rec, _ = mirrored
    rid = "rec-" + uuid.uuid4().hex
    body = {"model": "llama", "messages": [{"role": "user", "content": "name three colours"}], "max_tokens": 12}
    if stream:
        body.update(stream=True, stream_options={"include_usage": True})
    r = request(port, "POST", "/v1/chat/completions", body, {"x-request-id": rid})
    assert r.status == 200, r.body
    wait_until(lambda: _lines(rec, rid), 10, "the recorder's answer line", rec)
    [line] = _lines(rec, rid)
    assert line["msg"] == "answer" and line["shadow"] is True and line["pool"] == "candidate-svc"
    assert (line["status"], line["model"], line["streaming"]) == (200, "llama", stream)
    assert line["output_tokens"] == 12 and line["text"] and line["ttft_s"] > 0 and line["e2e_s"] >= line["ttft_s"]
    # the simulators answer the same prompt alike: the copy's text is what the client got
    if not stream:
        assert line["text"] == r.json()["choices"][0]["message"]["content"]


def test_every_answer_is_a_copys_and_errors_pass_through(mirrored):
    _, rec, rport = mirrored
    rid = "direct-" + uuid.uuid4().hex
    r = request(rport, "POST", "/v1/chat/completions", {"model": "nope", "messages": []}, {"x-request-id": rid})
    assert r.status in (400, 404) and "error" in r.json()  # the server's own answer, unchanged
    wait_until(lambda: _lines(rec, rid), 10, "the line", rec)
    [line] = _lines(rec, rid)
    # the recorder only ever receives copies: a gateway that does not mark the Host still pairs
    assert line["shadow"] is True and line["status"] == r.status


def test_a_dead_upstream_is_a_logged_502(workdir):
    d = os.path.join(workdir, "recorder-dead")
    os.makedirs(d, exist_ok=True)
    port, dead = free_port(), free_port()
    rec = Proc([sys.executable, "-m", "infershift.picker.recorder", "--upstream", f"http://127.0.0.1:{dead}",
                "--name", "gone", "--host", "127.0.0.1", "--port", str(port)], os.path.join(d, "recorder.log"),
               env=dict(os.environ, PYTHONPATH=str(REPO)))
    try:
        wait_until(lambda: http_get(f"http://127.0.0.1:{port}/healthz", 1)[0] == 200, 30, "recorder", rec)
        rid = "dead-" + uuid.uuid4().hex
        r = request(port, "POST", "/v1/completions", {"model": "m", "prompt": "x"},
                    {"x-request-id": rid, "host": "gw-shadow"})
        assert r.status == 502 and r.json()["error"]["code"] == "bad_gateway"
        wait_until(lambda: _lines(rec, rid), 10, "the line", rec)
        [line] = _lines(rec, rid)
        assert (line["status"], line["shadow"], line["pool"]) == (502, True, "gone")
    finally:
        rec.stop()


def test_bad_arguments_are_refused():
    import subprocess

    out = subprocess.run([sys.executable, "-m", "infershift.picker.recorder", "--upstream", "llama:8000",
                          "--name", "x"], capture_output=True, text=True, timeout=30,
                         env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert out.returncode == 2 and "--upstream 'llama:8000' is not an http(s) URL" in out.stderr
