"""`python -m infershift.devstack`: a busy port is a clear error before anything starts; Ctrl-C
stops every child; `config set --path` edits a stack file as Pulumi would."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml
from devstack_helpers import REPO, copy_stack

from infershift.spec import config_path
from infershift.devstack.ports import free_port


def devstack(*args: str, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "infershift.devstack", *args], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True, **kw)


def children_of(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                out.append(int(entry.name))
    return out


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_busy_gateway_port_is_a_clear_error_before_anything_starts(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = devstack("up", "--file", str(copy_stack("ack-canary", tmp_path)), "--listener-port", f"llm-gw={port}")
        out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 2, out
    assert f"port {port} (gateway listener llm-gw) is already in use" in out
    assert "--listener-port" in out  # says how to move it
    assert "devstack: ready" not in out and "simulator" not in out  # nothing was started


def test_unknown_listener_override_names_the_listeners(tmp_path):
    proc = devstack("up", "--file", str(copy_stack("ack-canary", tmp_path)), "--listener-port", "nope=8999")
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 2
    assert "nope" in out and "llm-gw" in out


def test_up_serves_the_seed_request_and_ctrl_c_leaves_nothing_running(tmp_path):
    port = free_port()
    proc = devstack("up", "--file", str(copy_stack("ack-canary", tmp_path)), "--listener-port", f"llm-gw={port}",
                    "--time-scale", "50")
    lines = []
    try:
        deadline = time.monotonic() + 120
        while not any("devstack: ready" in line for line in lines):
            assert time.monotonic() < deadline and proc.poll() is None, "".join(lines)
            lines.append(proc.stdout.readline())
        text = "".join(lines)
        assert f"http://127.0.0.1:{port}" in text and "curl" in text
        kids = children_of(proc.pid)
        assert len(kids) == 5  # 2 simulators, 2 pickers, Envoy
        r = httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions", timeout=60, json={
            "model": "mymodel", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5})
        assert r.status_code == 200, r.text
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 0, out
    assert "devstack: stopped" in out
    assert [k for k in kids if alive(k)] == []
    with socket.socket() as s:  # the gateway port is free again
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))


def test_config_set_path_like_pulumi(tmp_path):
    stack = copy_stack("local", tmp_path)
    proc = devstack("config", "set", "--path", "routes.inference-route.backends.mymodel-pool-v2", "50", "-f", str(stack))
    assert proc.wait(60) == 0, proc.stdout.read()
    doc = yaml.safe_load(stack.read_text())
    assert doc["config"]["infershift:routes"]["inference-route"]["backends"]["mymodel-pool-v2"] == 50
    proc = devstack("config", "set", "--path", "routes.inference-route.backends.mymodel-pool-v2", "-3", "-f", str(stack))
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 1 and "routes.inference-route.backends" in out


def test_config_path_syntax():
    assert config_path.parse_path('pools.p.models["/model/llama2"].targets.a') == [
        "pools", "p", "models", "/model/llama2", "targets", "a"]
    assert config_path.parse_path("routes.r.pins[0].value") == ["routes", "r", "pins", 0, "value"]
    doc = {"config": {"infershift:routes": {"r": {"pins": [{"value": "a"}]}}}}
    config_path.set_path(doc, "routes.r.pins[0].value", "b")
    config_path.set_path(doc, "routes.r.backends.new", 5)
    config_path.set_path(doc, "mirrors.m.percent", 10)
    assert doc["config"]["infershift:routes"]["r"] == {"pins": [{"value": "b"}], "backends": {"new": 5}}
    assert doc["config"]["infershift:mirrors"] == {"m": {"percent": 10}}
    assert config_path.parse_value("50") == 50 and config_path.parse_value("true") is True
    assert config_path.parse_value("50", "string") == "50"
    with pytest.raises(config_path.ConfigPathError, match="not a list"):
        config_path.set_path(doc, "routes.r[0]", 1)
    with pytest.raises(config_path.ConfigPathError, match="invalid config path"):
        config_path.parse_path('routes["unterminated')


def test_demo_runs_end_to_end_and_exits_zero():
    proc = devstack("demo", "--requests", "120")
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out
    for title in ("Base-model canary", "LoRA canary", "In-pool split", "Mirror llama2-mirror", "after the shift"):
        assert title in out, out
    assert "every process stopped" in out


def test_invalid_stack_is_an_error_naming_the_config_path(tmp_path):
    stack = copy_stack("local", tmp_path)
    config_path.set_in_file(stack, "routes.inference-route.pins[0].backend", "no-such-pool")
    proc = devstack("up", "--file", str(stack))
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 2
    assert "infershift:routes.inference-route.pins[0]" in out or "routes.inference-route" in out, out
    proc = devstack("up", "--stack", "no-such-stack")
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 2 and "no stack named 'no-such-stack'" in out and "local" in out
