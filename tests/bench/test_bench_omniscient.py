"""The omniscient router against real simulators: it must follow each server's own TTFT prediction."""
import http.client
import json
import random
import threading
import urllib.request

import pytest

from bench import workloads as wl
from bench.routers import Setup, make, wait_serving
from bench.routers.omniscient_proxy import choose

MODEL = "llama-3.1-8b"


def post(url, body, timeout=60):
    req = urllib.request.Request(url + "/v1/chat/completions", data=json.dumps(body).encode(),
                                 headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return r.headers.get("x-inference-pod"), json.loads(r.read())


def background_load(url, body):
    """Load that may outlive the test: the pool stops under it at teardown, which is not a failure."""
    try:
        post(url, body)
    except (OSError, http.client.HTTPException):
        pass


def test_choose_lowest_ttft_and_full_queues():
    rng = random.Random(0)
    assert choose([{"ttft_seconds": 0.5}, {"ttft_seconds": 0.2}, {"ttft_seconds": 0.9}], rng) == 1
    # Failed predictions (None) are never chosen while another answered.
    assert choose([None, {"ttft_seconds": 3.0}], rng) == 1
    # All queues full: the shortest queue.
    full = [{"ttft_seconds": None, "queue_position": 9}, {"ttft_seconds": None, "queue_position": 4}]
    assert choose(full, rng) == 1
    # Ties are broken at random, over both.
    picks = {choose([{"ttft_seconds": 0.1}, {"ttft_seconds": 0.1}], rng) for _ in range(50)}
    assert picks == {0, 1}


@pytest.fixture
def omniscient(sim_pool, tmp_path):
    r = make("omniscient")
    url = r.start(Setup(sim_pool.addresses, tmp_path, MODEL))
    yield url
    r.stop()


def test_routes_away_from_the_loaded_server(sim_pool, omniscient):
    busy, idle = sim_pool.addresses
    # Load the first server directly with long requests, in the background.
    load = wl.shared_prefix(MODEL, 12, groups=12, system_tokens=3000, question_tokens=64,
                            output_tokens=400, seed=5)
    threads = [threading.Thread(target=background_load, args=(f"http://{busy}", r.body), daemon=True) for r in load]
    for t in threads:
        t.start()
    probe = wl.shared_prefix(MODEL, 1, groups=1, system_tokens=256, output_tokens=4, seed=6)[0]
    # Wait until the busy server is really behind, by its own prediction.
    for _ in range(100):
        if sim_pool.predict(busy, probe.body)["ttft_seconds"] > 3 * sim_pool.predict(idle, probe.body)["ttft_seconds"]:
            break
        threading.Event().wait(0.05)
    else:
        pytest.fail("the loaded server never predicted a slower TTFT")
    pods = {post(omniscient, r.body)[0]
            for r in wl.shared_prefix(MODEL, 3, groups=3, system_tokens=256, output_tokens=4, seed=7)}
    assert len(pods) == 1 and pods.pop().endswith("-1")   # sim0-1 is the idle server


def test_follows_the_prefix_cache_when_idle(sim_pool, omniscient):
    a, b = sim_pool.addresses
    reqs = wl.shared_prefix(MODEL, 4, groups=1, system_tokens=4000, question_tokens=16, output_tokens=2, seed=9)
    pod_b, _ = post(f"http://{b}", reqs[0].body)          # warm server b's cache with the prefix
    assert pod_b.endswith("-1")
    wait_serving(omniscient, MODEL)
    for r in reqs[1:]:
        pod, body = post(omniscient, r.body)
        assert pod == pod_b
        assert body["usage"]["prompt_tokens_details"]["cached_tokens"] >= 3900
