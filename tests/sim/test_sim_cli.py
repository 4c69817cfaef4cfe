"""`python -m infershift.sim` as users and the devstack run it: a real subprocess."""
import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request

import pytest

from conftest import free_port_range
from sim_helpers import stop_group
from infershift.sim.profiles import get_profile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture
def run_sim():
    procs = []

    def run(*args, env=None):
        p = subprocess.Popen([sys.executable, "-m", "infershift.sim", *args], cwd=ROOT, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, start_new_session=True,
                             env={**os.environ, **(env or {})})
        procs.append(p)
        return p

    yield run
    for p in procs:
        stop_group(p)


def get(url):
    with urllib.request.urlopen(url, timeout=10) as r:
        return r.status, dict(r.headers), r.read()


def test_servers_on_consecutive_ports_with_vllm_flags(run_sim):
    base = free_port_range(3)
    p = run_sim("--profile", "a10-7b", "--model", "/models/Qwen-2.5-7B-Instruct", "--served-model-name", "mymodel",
                "--port", str(base), "--servers", "3", "--pod-name", "pool-a", "--max-loras", "2",
                "--lora-modules", '{"name": "travel-helper-v1", "path": "/m/v1"}', "travel-helper-v2=/m/v2",
                "--trust-remote-code", "--enforce-eager", "--gpu_memory_utilization", "0.95",
                "--tensor-parallel-size", "1", "--chat-template", "/etc/t.jinja", "--time-scale", "10")
    lines = [p.stdout.readline() for _ in range(3)]
    for i, line in enumerate(lines):
        assert f"pool-a-{i} listening on http://127.0.0.1:{base + i}" in line, lines
    for i in range(3):
        st, h, body = get(f"http://127.0.0.1:{base + i}/v1/models")
        assert st == 200 and h["x-inference-pod"] == f"pool-a-{i}" and h["x-inference-port"] == str(base + i)
        ids = [m["id"] for m in json.loads(body)["data"]]
        assert ids == ["mymodel", "travel-helper-v1", "travel-helper-v2"]
    _, _, metrics = get(f"http://127.0.0.1:{base}/metrics")
    assert b'max_lora="2"' in metrics
    os.killpg(p.pid, signal.SIGTERM)
    assert p.wait(10) == 0
    err = p.stderr.read()
    assert "ignoring vLLM flag '--trust-remote-code'" in err and "--chat-template /etc/t.jinja" in err


def test_vllm_serve_positional_form_and_pod_name_env(run_sim):
    base = free_port_range(1)
    # as the seeds write it: vllm serve MODEL ... --tensor-parallel=4 (an abbreviation vLLM accepts)
    p = run_sim("serve", "/models/llama", "--port", str(base), "--profile", "l4-7b", "--tensor-parallel=4",
                "--max-model-len", "8192", env={"POD_NAME": "vllm-llama2-7b-pool-abc12"})
    line = p.stdout.readline()
    blocks = get_profile("l4-7b").scaled(tensor_parallel=4).num_gpu_blocks
    assert blocks > 4 * get_profile("l4-7b").num_gpu_blocks   # four GPUs' memory, weights counted once
    assert "vllm-llama2-7b-pool-abc12 listening" in line and f"blocks={blocks}" in line
    st, h, body = get(f"http://127.0.0.1:{base}/v1/models")
    assert json.loads(body)["data"][0]["id"] == "/models/llama"
    assert h["x-inference-pod"] == "vllm-llama2-7b-pool-abc12"


@pytest.mark.parametrize("args, message", [
    (["--model", "m", "--profile", "nope"], "invalid choice: 'nope'"),
    (["--model", "m", "--lora-modules", "justaname"], "expected name=path"),
    (["--model", "m", "--frobnicate"], "unrecognized arguments: --frobnicate"),
    (["--profile", "h100-8b"], "--model is required"),
    (["--model", "m", "--max-loras", "0"], "--max-loras must be >= 1"),
])
def test_bad_flags_exit_with_a_clear_message(run_sim, args, message):
    p = run_sim(*args)
    assert p.wait(20) == 2
    assert message in p.stderr.read()


def test_port_zero_picks_free_ports_even_for_one_server(run_sim):
    p = run_sim("--model", "m", "--port", "0", "--pod-name", "solo", "--time-scale", "10")
    line = p.stdout.readline()
    port = int(line.rsplit(":", 1)[1].split()[0])
    st, h, _ = get(f"http://127.0.0.1:{port}/health")
    assert st == 200 and h["x-inference-pod"] == "solo-0"


def test_instance_names():
    from infershift.sim.cli import instance_name
    assert instance_name(2, 3, "pool", "m", 8000, env={}) == "pool-2"
    assert instance_name(0, 1, None, "Qwen/Qwen-2.5 7B", 8000, env={}) == "qwen-qwen-2-5-7b-8000-0"
    k8s = {"KUBERNETES_SERVICE_HOST": "10.0.0.1", "HOSTNAME": "mymodel-v1-5d9c-xk2"}
    assert instance_name(0, 1, None, "m", 8000, env=k8s) == "mymodel-v1-5d9c-xk2"
    assert instance_name(0, 1, None, "m", 8000, env={**k8s, "POD_NAME": "p"}) == "p"
    assert instance_name(0, 1, None, "m", 8000, env={"HOSTNAME": "laptop"}) == "m-8000-0"
    assert instance_name(1, 2, None, "m", 8000, env=k8s) == "m-8000-1"


def test_admin_endpoints_listen_on_ports_of_their_own(run_sim):
    base = free_port_range(4)
    p = run_sim("--model", "m", "--port", str(base), "--servers", "2", "--admin-port", str(base + 2),
                "--time-scale", "10")
    lines = [p.stdout.readline() for _ in range(2)]
    for i, line in enumerate(lines):
        assert f"listening on http://127.0.0.1:{base + i} " in line and f"admin=http://127.0.0.1:{base + 2 + i}" in line
    st, _, body = get(f"http://127.0.0.1:{base + 3}/admin/faults")
    assert st == 200 and json.loads(body)["stall"] is False
    with pytest.raises(urllib.error.HTTPError) as e:
        get(f"http://127.0.0.1:{base + 1}/admin/faults")
    assert e.value.code == 404


def test_admin_port_errors(run_sim):
    p = run_sim("--model", "m", "--port", "9000", "--servers", "2", "--admin-port", "9001")
    assert p.wait(30) == 2 and "overlaps the serving ports" in p.stderr.read()
    p = run_sim("--model", "m", "--admin-port", "nope")
    assert p.wait(30) == 2 and "expected a port number or `same`" in p.stderr.read()
