"""The picker in front of the project's simulator (sim/): real vLLM-shaped metrics, /v1/models and
prefix caching, through a real Envoy."""
from __future__ import annotations

import math
import os
import re
import time
from collections import Counter

import pytest
import yaml

from bench.pickerbench.procs import REPO, Proc, free_port, start_envoy, start_picker, wait_until
from infershift.picker.envoy_config import gateway_config
from pickertest import complete

MAIN_PY = REPO / ".venv" / "bin" / "python"


@pytest.fixture(scope="module")
def sim_stack(workdir):
    if not (REPO / "infershift" / "sim" / "__main__.py").exists() or not MAIN_PY.exists():
        pytest.skip("sim/ or the main virtualenv is not available")
    sim = Proc([str(MAIN_PY), "-m", "infershift.sim", "--profile", "h100-8b", "--model", "llama", "--served-model-name", "llama",
                "--lora-modules", "sql-v1=/m/v1", "sql-v2=/m/v2", "--max-loras", "2", "--port", "0",
                "--servers", "3", "--time-scale", "20", "--pod-name", "simpod", "--seed", "1"],
               os.path.join(workdir, "sim.log"))
    procs = [sim]
    try:
        wait_until(lambda: sim.output().count("listening on") >= 3, 60, "sim servers", sim)
        addrs = re.findall(r"listening on http://(127\.0\.0\.1:\d+)", sim.output())
        cfg_path = os.path.join(workdir, "sim-picker.yaml")
        with open(cfg_path, "w") as f:
            yaml.safe_dump({"pool": {"name": "sim-pool"}, "endpoints": [{"address": a} for a in addrs],
                            "models": {"sql": {"targets": [{"model": "sql-v1", "weight": 50},
                                                           {"model": "sql-v2", "weight": 50}]}},
                            "sessionHeader": "x-session-id",
                            "metrics": {"pollInterval": "50ms", "modelsInterval": "1s"}}, f)
        gp, hp, mp = free_port(), free_port(), free_port()
        procs.append(start_picker(cfg_path, workdir, grpc_port=gp, health_port=hp, metrics_port=mp))
        lp, ap = free_port(), free_port()
        procs.append(start_envoy(gateway_config(listen_port=lp, admin_port=ap, picker_port=gp, pool=addrs), workdir, ap))
        time.sleep(1.2)  # /v1/models learned from every server
        yield lp, addrs
    finally:
        for p in reversed(procs):
            p.stop()


def test_split_through_sim(sim_stack):
    port, _ = sim_stack
    n = 200
    got = Counter()
    pods = set()
    for i in range(n):
        r = complete(port, "sql", f"q {i}", max_tokens=2)
        assert r.status == 200, r.body
        # responseModel defaults to "served": the body names the target that served it, as the guides show
        assert r.json()["model"] == r.headers["x-infershift-target-model"]
        got[r.headers["x-infershift-target-model"]] += 1
        pods.add(r.headers["x-inference-pod"])
    tol = max(0.10, 4.5 * math.sqrt(0.25 / n))
    assert abs(got["sql-v1"] / n - 0.5) <= tol, got
    assert len(pods) >= 2


def test_prefix_affinity_gives_cache_hits(sim_stack):
    port, _ = sim_stack
    shared = "You are a meticulous SQL assistant. Answer with one query. " * 60
    pods, cached = set(), []
    for i in range(8):
        r = complete(port, "llama", shared + f"Question {i}: count rows.", max_tokens=2)
        assert r.status == 200
        pods.add(r.headers["x-inference-pod"])
        cached.append(r.json()["usage"].get("prompt_tokens_details", {}).get("cached_tokens", 0))
    assert len(pods) == 1  # every request followed the prefix to one server
    assert all(c > 0 for c in cached[1:]), cached  # and that server's prefix cache hit


def test_unknown_model_and_sessions_with_sim(sim_stack):
    port, _ = sim_stack
    assert complete(port, "not-served").status == 404
    for sid in range(6):
        t = {complete(port, "sql", f"turn {k}", {"x-session-id": f"s{sid}"}, max_tokens=1)
             .headers["x-infershift-target-model"] for k in range(3)}
        assert len(t) == 1
