"""The local stack talks to its pickers as a cluster's gateway does: TLS by default (the picker's
self-signed certificate, not verified), plaintext for a pool whose picker Deployment runs with
`--secure-serving=false` (`pools.<p>.picker.tls.enabled: false`); a gateway on the other side of
a FailClose pool's picker fails every request with the OpenAI-shaped 503. Real Envoy, pickers and
simulators."""
from __future__ import annotations

import urllib.request

import httpx
import pytest
import yaml
from devstack_helpers import FAST, copy_stack

from infershift.devstack.procs import log_says
from infershift.devstack.stack import PACKAGE_ROOT, SOURCE_CHECKOUT, LocalStack, Options
from infershift.devstack.traffic import chat_body

PLAIN = "llama2-pool"  # FailClose, plaintext in this test's copy of the local stack
TLS = "mymodel-pool-v1"


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    directory = tmp_path_factory.mktemp("picker-tls")
    path = copy_stack("local", directory)
    doc = yaml.safe_load(path.read_text())
    pools = doc["config"]["infershift:pools"]
    pools[PLAIN]["picker"] = {**pools[PLAIN].get("picker", {}), "tls": {"enabled": False}}  # the anchor is shared
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    s = LocalStack(path, Options(**FAST, workdir=directory / "work"), log=lambda msg: print(f"devstack: {msg}"))
    s.start()
    yield s
    s.stop()


def stats(stack, cluster: str) -> dict[str, int]:
    with urllib.request.urlopen(f"{stack.admin_url}/stats?filter=^cluster\\.{cluster}\\.", timeout=5) as r:
        lines = r.read().decode().splitlines()
    prefix = f"cluster.{cluster}."
    return {k.removeprefix(prefix): int(v) for k, _, v in (line.partition(": ") for line in lines)
            if v.strip().isdigit()}


def test_pickers_serve_tls_unless_their_deployment_says_otherwise(stack):
    assert stack.gw.pool(TLS).picker.tls is True and stack.gw.pool(PLAIN).picker.tls is False
    deployment = next(o for o in stack.objects.items if o["kind"] == "Deployment"
                      and o["metadata"]["name"] == f"{PLAIN}-epp")  # what the cluster's picker runs with
    assert "--secure-serving=false" in deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert '"tls": "self-signed"' in stack.pools[TLS].child.log.read_text()
    assert '"tls": "off (plaintext)"' in stack.pools[PLAIN].child.log.read_text()
    # several to llm-gw: its route sends 10 % to the other pool
    for listener, model in (("llm-gw", "mymodel"),) * 6 + (("lora-gw", "lora-request"),):
        r = httpx.post(stack.url(listener) + "/v1/chat/completions", json=chat_body(model),
                       headers={"x-canary": "false"}, timeout=30)
        assert r.status_code == 200, r.text
    tls, plain = stats(stack, f"picker-{TLS}"), stats(stack, f"picker-{PLAIN}")
    assert tls["ssl.handshake"] >= 1 and tls.get("ssl.connection_error", 0) == 0
    assert "ssl.handshake" not in plain and plain["upstream_rq_total"] >= 1


def test_a_tls_picker_behind_a_plaintext_gateway_fails_closed(stack):
    """The cluster's mismatch, for real: the pool's gateway speaks plaintext (its objects say so)
    while the picker on that port serves TLS (its default)."""
    url = stack.url("lora-gw") + "/v1/chat/completions"
    old = stack.pools[PLAIN].child
    assert "--secure-serving=false" in old.argv
    stack.kill_picker(PLAIN)
    # the same picker, same config files and ports, but as the picker starts by default: TLS
    env = {"PYTHONUNBUFFERED": "1", **({"PYTHONPATH": str(PACKAGE_ROOT)} if SOURCE_CHECKOUT else {})}
    child = stack.supervisor.start("picker-tls-mismatch", [a for a in old.argv if a != "--secure-serving=false"],
                                   env=env, cwd=PACKAGE_ROOT if SOURCE_CHECKOUT else stack.workdir)
    stack.supervisor.wait_ready(child, log_says(child, "picker ready"), 60)
    assert '"tls": "self-signed"' in child.log.read_text()
    r = httpx.post(url, json=chat_body("lora-request"), timeout=30)
    assert r.status_code == 503, r.text
    error = r.json()["error"]  # the OpenAI error shape, from the gateway's FailClose reply
    assert error["code"] == "picker_unavailable" and PLAIN in error["message"]
    assert "x-inference-pod" not in r.headers  # no model server saw it
    assert stats(stack, f"picker-{PLAIN}")["upstream_cx_destroy_remote_with_active_rq"] >= 1
