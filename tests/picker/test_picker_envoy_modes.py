"""Through a real Envoy: the one-round-trip setup (default) against the classic GIE setup, big bodies
in STREAMED chunks, and the response filter being skipped unless the picker asks for it."""
from __future__ import annotations

import json
import time

from bench.pickerbench.procs import wait_until
from pickertest import base_config, complete, request


def sse_models(r) -> list[str]:
    return [json.loads(line[6:])["model"] for line in r.body.decode().splitlines() if line.startswith("data: {")]


def test_classic_setup_keeps_every_behaviour(stack, reset_servers):
    """headers, then BUFFERED body, then response headers on the same stream (what GIE gateways send)."""
    s = reset_servers
    port = stack.envoy(classic=True, generate_request_id=False)
    r = complete(port, "sql", "classic", {"x-gateway-model-name-rewrite": "sql-v2", "x-test-subset": s.addr("b")})
    assert r.status == 200 and r.json()["model"] == "sql" and r.headers["x-infershift-target-model"] == "sql-v2"
    assert int(r.headers["x-served-port"]) == s.ports["b"]
    seen = s.seen("b")[-1]
    assert seen["model"] == "sql-v2" and "x-infershift-restore" not in seen["headers"]
    assert sse_models(complete(port, "sql", "x", stream=True)) == ["sql"] * 3
    assert request(port, "GET", "/hello").status == 200
    assert complete(port, "gpt-9").status == 404


def test_big_prompt_in_chunks_with_model_after_the_prompt(stack, reset_servers):
    s = reset_servers
    prompt = "lorem ipsum dolor sit amet " * 8000  # ~216 KB: Envoy sends it to the picker in many chunks
    body = json.dumps({"prompt": prompt, "max_tokens": 3, "model": "sql"})  # `model` in the last chunk
    r = request(stack.port, "POST", "/v1/completions", body.encode(),
                {"content-type": "application/json", "x-gateway-model-name-rewrite": "sql-v1"})
    assert r.status == 200, r.body
    assert r.json()["model"] == "sql"
    want = len(body) + len("-v1")
    got = [x for k in ("a1", "a2", "b") for x in s.seen(k) if x["len"] == want]
    assert len(got) == 1 and got[0]["model"] == "sql-v1"
    assert "x-infershift-restore" not in got[0]["headers"]  # the route strips the hand-over marker


def test_responses_skip_the_picker_unless_rewritten_or_sampled(stack, reset_servers):
    s = reset_servers
    reloads = stack.picker.output().count("config reloaded")
    # flow control off: under it every response comes back (test_picker_flow_control.py)
    stack.write_config(base_config(s, telemetry={"responseSampleRate": 0.0}, flowControl=False))
    wait_until(lambda: stack.picker.output().count("config reloaded") > reloads, 20, "config reload")
    try:
        before = stack.metric("infershift_picker_target_responses_total", target_model="llama")
        routed = stack.metric("infershift_picker_requests_total", model="llama", outcome="routed")
        for i in range(5):
            # (the last two carry the marker themselves: served as usual; the picker strips it, unit-tested)
            r = complete(stack.port, "llama", f"nosample {i}", {"x-infershift-restore": "1"} if i > 2 else None)
            assert r.status == 200 and "x-infershift-target-model" not in r.headers  # no response stream
        r = complete(stack.port, "sql", "rewritten", {"x-gateway-model-name-rewrite": "sql-v1"})
        assert r.json()["model"] == "sql" and r.headers["x-infershift-target-model"] == "sql-v1"
        time.sleep(0.3)
        assert stack.metric("infershift_picker_target_responses_total", target_model="llama") == before
        assert stack.metric("infershift_picker_requests_total", model="llama", outcome="routed") == routed + 5
    finally:
        reloads = stack.picker.output().count("config reloaded")
        stack.write_config(base_config(s))
        wait_until(lambda: stack.picker.output().count("config reloaded") > reloads, 20, "config restored")


def test_slow_big_upload_outlives_message_timeout(stack, reset_servers):
    """One round trip: Envoy's message timer starts at the headers; for a big body the picker extends it
    (override_message_timeout, up to the filter's max_message_timeout) so a slow upload is not cut."""
    import socket

    port = stack.envoy(message_timeout="1s", fail_open=False)
    body = json.dumps({"model": "sql", "prompt": "slow " * 20000}).encode()  # ~100 KB: over BIG_BODY_BYTES
    with socket.create_connection(("127.0.0.1", port), timeout=20) as s:
        s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: gw\r\ncontent-type: application/json\r\n"
                  b"x-gateway-model-name-rewrite: sql-v1\r\ncontent-length: %d\r\n\r\n" % len(body))
        s.sendall(body[:5000])
        time.sleep(2.0)  # twice the message timeout
        s.sendall(body[5000:])
        data = b""
        while b"\r\n\r\n" not in data:
            data += s.recv(65536)
    head = data.split(b"\r\n\r\n")[0].decode().lower()
    assert head.startswith("http/1.1 200") and "x-infershift-target-model: sql-v1" in head, head
