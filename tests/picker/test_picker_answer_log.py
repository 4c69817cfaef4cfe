"""The answer log (config `answerLog`, picker/answers.py): off by default; on, one JSON line per
answer through a real Envoy in every setup (one round trip with the response filter, classic,
full duplex), for streamed and whole answers, errors and rejections, with the shadow flag from
Envoy's `-shadow` host."""
from __future__ import annotations

import json
import uuid

import pytest
from pickertest import base_config, request

from bench.pickerbench.procs import wait_until
from infershift.picker import answers, restore_header
from infershift.picker.config import AnswerLogSpec, parse_answer_log
from infershift.picker.errors import ConfigError


@pytest.mark.parametrize(("host", "shadow"), [
    ("gw", False), ("gw-shadow", True), ("gw-shadow:8080", True), ("127.0.0.1-shadow:30001", True),
    ("gw:8080", False), ("shadow:80", False), ("[::1]-shadow:80", True), ("", False)])
def test_shadow_is_envoys_host_suffix(host, shadow):
    assert answers.is_shadow({":authority": host}) is shadow


def test_answer_text_of_each_shape():
    chat = json.dumps({"choices": [{"message": {"role": "assistant", "content": "Hi there"}}],
                       "usage": {"completion_tokens": 2}}).encode()
    assert answers.answer_text(chat, False) == ("Hi there", 0, "")
    assert answers.answer_text(b'{"choices": [{"text": "ok"}]}', False) == ("ok", 0, "")
    sse = (b'data: {"choices": [{"delta": {"role": "assistant"}}]}\n\n'
           b'data: {"choices": [{"delta": {"content": "Hel"}}]}\n\ndata: {"choices": [{"delta": {"content": "lo"}}]}\n\n'
           b'data: {"choices": [], "usage": {"completion_tokens": 2}}\n\ndata: [DONE]\n\n')
    assert answers.answer_text(sse, True) == ("Hello", 2, "")
    assert answers.answer_text(b'{"error": {"message": "boom"}}', False) == ("", 0, "boom")
    assert answers.answer_text(b"not json", False) == ("", 0, "")


def test_handover_carries_the_shadow_flag_only_while_on():
    base = restore_header.Handover("t", "c", "1.2.3.4:80", 12.5, "0", "f", "rid")
    assert json.loads(restore_header.encode(base))[0] == 2  # off: the version-2 header, unchanged
    for flag in (False, True):
        h = restore_header.Handover("t", "c", "1.2.3.4:80", 12.5, "0", "f", "rid", flag)
        assert restore_header.decode(restore_header.encode(h)) == h
    assert restore_header.decode('[3,"t","c","p",1.0,"0","f","r","yes"]') is None


def test_config():
    assert parse_answer_log(None) is None and parse_answer_log(False) is None
    assert parse_answer_log(True) == AnswerLogSpec()
    assert parse_answer_log({"enabled": False}) is None
    assert parse_answer_log({"maxTextChars": 0}) == AnswerLogSpec(0)
    for bad in ({"maxTextChars": -1}, {"enabled": "yes"}, {"nope": 1}, "on"):
        with pytest.raises(ConfigError, match="answerLog"):
            parse_answer_log(bad)


def _lines(stack) -> list[dict]:
    out = []
    for line in stack.picker.output().splitlines():
        if '"picker.answers"' in line:
            out.append(json.loads(line[line.index("{"):]))
    return out


def _send(port: int, rid: str, host: str, model: str = "sql", **extra):
    return request(port, "POST", "/v1/completions", {"model": model, "prompt": "hi", **extra},
                   {"x-request-id": rid, "host": host})


def test_answers_logged_in_every_envoy_setup(stack, reset_servers):
    s = reset_servers
    r = _send(stack.port, "off-" + uuid.uuid4().hex, "gw")
    assert r.status == 200
    assert not any(x["request_id"].startswith("off-") for x in _lines(stack))  # off: nothing logged
    reloads = stack.picker.output().count("config reloaded")
    stack.write_config(base_config(s, answerLog={"enabled": True, "maxTextChars": 3}))
    wait_until(lambda: stack.picker.output().count("config reloaded") > reloads, 20, "config reload")
    try:
        setups = {"one-round-trip": stack.port, "classic": stack.envoy(classic=True),
                  "full-duplex": stack.envoy(full_duplex=True)}
        sent = {}
        for setup, port in setups.items():
            for host, shadow in (("gw", False), ("gw-shadow", True)):
                rid = f"{setup}-{host}-{uuid.uuid4().hex[:8]}"
                r = _send(port, rid, host)
                assert r.status == 200, r.body
                sent[rid] = (shadow, False)
                rid = f"{setup}-{host}-sse-{uuid.uuid4().hex[:8]}"
                r = _send(port, rid, host, stream=True, stream_options={"include_usage": True})
                assert r.status == 200, r.body
                sent[rid] = (shadow, True)
        rejected = "rejected-" + uuid.uuid4().hex[:8]
        assert _send(stack.port, rejected, "gw-shadow:80", model="gpt-9").status == 404
        for k in s.ports:
            s.admin(k, status=500)
        failed = "failed-" + uuid.uuid4().hex[:8]
        assert _send(stack.port, failed, "gw", model="llama").status == 500
        wait_until(lambda: {rejected, failed, *sent} <= {x["request_id"] for x in _lines(stack)}, 10,
                   "an answer line per request")
        got = {x["request_id"]: x for x in _lines(stack)}
        for rid, (shadow, streamed) in sent.items():
            x = got[rid]
            assert x["pool"] == "test-pool" and x["model"] == "sql" and x["target_model"] in ("sql-v1", "sql-v2")
            assert x["shadow"] is shadow and x["status"] == 200 and x["streaming"] is streamed
            text = "tok0tok1tok2" if streamed else "ok"
            assert x["text"] == text[:3] and x["text_chars"] == len(text)  # cut at maxTextChars, hashed whole
            assert x["output_tokens"] == (3 if streamed else 1)
            assert 0 < x["ttft_s"] <= x["e2e_s"] < 5
        assert got[rejected]["status"] == 404 and got[rejected]["target_model"] is None and got[rejected]["shadow"]
        assert got[failed]["status"] == 500 and got[failed]["error"] == "injected" and not got[failed]["shadow"]
    finally:
        reloads = stack.picker.output().count("config reloaded")
        stack.write_config(base_config(s))
        wait_until(lambda: stack.picker.output().count("config reloaded") > reloads, 20, "config restored")
