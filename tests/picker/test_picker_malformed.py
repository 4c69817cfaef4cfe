"""Malformed bodies are the client's mistake: 400 in the API's error shape, never a 500, never a broken
stream (which FailOpen would turn into a request sent on unvalidated and unscheduled). A picker bug on
one request answers that request 500 and leaves the stream healthy (issue 13 item 1)."""
from __future__ import annotations

import json

import pytest
from envoy.service.ext_proc.v3 import external_processor_pb2 as pb
from pickertest import request
from test_picker_extproc_shapes import headers, make, md, run

from infershift.picker.errors import BadRequest
from infershift.picker.request_body import parse_body, rewrite_model

CT = "application/json"
DEEP = 5000

MALFORMED = [
    ("deep array", b'{"model": "llama", "prompt": "x", "e": ' + b"[" * DEEP + b"]" * DEEP + b"}"),
    ("deep object", b'{"model": "llama", "prompt": "x", "e": ' + b'{"a":' * DEEP + b"1" + b"}" * DEEP + b"}"),
    ("unpaired high surrogate", b'{"model": "llama", "prompt": "a\\ud800b"}'),
    ("unpaired low surrogate in the model", b'{"model": "llama\\udfff", "prompt": "ab"}'),
    ("non-string text part", b'{"model": "llama", "messages": [{"role": "user", "content": [{"type": "text", "text": 5}]}]}'),
    ("text part that is an object", b'{"model": "llama", "messages": [{"role": "user", "content": [{"text": {"a": 1}}]}]}'),
    ("not UTF-8", b'{"model": "llama", "prompt": "\xff\xfe"}'),
    ("a 5000-digit integer", b'{"model": "llama", "prompt": "x", "n": ' + b"9" * 5000 + b"}"),
]


@pytest.mark.parametrize("what,body", MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_bodies_are_bad_requests(what, body):
    with pytest.raises(BadRequest) as e:
        parse_body(body, CT, 1 << 20)
    err = json.loads(e.value.body())["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["type"] == "invalid_request_error"


def test_valid_oddities_still_parse():
    # a surrogate pair is one character (an emoji); depth within the parser's limits is fine
    p = parse_body(b'{"model": "llama", "prompt": "\\ud83d\\ude00"}', CT, 1 << 20)
    assert p.prompt == "\U0001f600"
    deep = b'{"model": "llama", "prompt": "x", "e": ' + b"[" * 500 + b"]" * 500 + b"}"
    assert parse_body(deep, CT, 1 << 20).model == "llama"


def test_a_body_too_deep_to_write_back_is_a_bad_request():
    # orjson reads 1024 levels, the stdlib writes fewer: a second "model" key forces the re-encode
    body = b'{"model": "m", "e": {"model": "q"}, "f": ' + b"[" * 1020 + b"]" * 1020 + b"}"
    p = parse_body(body, CT, 1 << 20)
    with pytest.raises(BadRequest):
        rewrite_model(body, p, "other")


def _completion(body: bytes, **body_msg):
    return [pb.ProcessingRequest(request_headers=headers([(":path", "/v1/completions"), (":method", "POST"),
                                                          ("content-type", CT)])),
            pb.ProcessingRequest(request_body=pb.HttpBody(body=body, end_of_stream=True), **body_msg)]


def test_a_picker_bug_answers_500_on_the_stream(monkeypatch):
    import infershift.picker.extproc as extproc

    svc, tm = make()

    def broken(*a, **k):
        raise RuntimeError("boom")

    monkeypatch.setattr(extproc, "decide", broken)
    out = run(svc, _completion(b'{"model": "llama", "prompt": "hi"}'))  # Process() does not raise
    imm = out[-1].immediate_response
    assert imm.status.code == 500 and json.loads(imm.body)["error"]["code"] == "picker_internal_error"
    assert tm.registry.get_sample_value("infershift_picker_errors_total", {
        "pool": "default-pool", "status": "500", "code": "picker_internal_error"}) == 1
    # the response path passes a response on unchanged when the picker fails there
    st = svc.new_state()
    monkeypatch.setattr(svc, "_on_response_headers", broken)
    out = svc.handle(st, pb.ProcessingRequest(response_headers=headers([(":status", "200")])))
    assert out[0].HasField("response_headers") and not out[0].HasField("immediate_response")


def test_shed_and_unavailable_answers_carry_retry_after():
    svc, _ = make()
    nowhere = md("envoy.lb.subset_hint", "x-gateway-destination-endpoint-subset", ["10.9.9.9:1"])
    out = run(svc, _completion(b'{"model": "llama", "prompt": "hi"}', metadata_context=nowhere))
    imm = out[-1].immediate_response
    hdrs = {h.header.key: h.header.raw_value.decode() for h in imm.headers.set_headers}
    assert imm.status.code == 503 and hdrs["retry-after"] == "1"


@pytest.mark.parametrize("what,body", MALFORMED, ids=[m[0] for m in MALFORMED])
def test_through_envoy_fail_open_never_bypasses(stack, reset_servers, what, body):
    """The stack's Envoy is FailOpen: a broken picker stream would send these to a server."""
    before = {k: len(reset_servers.seen(k)) for k in reset_servers.ports}
    r = request(stack.port, "POST", "/v1/completions", body, {"content-type": CT})
    assert r.status == 400, (what, r.status, r.body[:200])
    assert r.headers["content-type"] == "application/json" and "error" in r.json()
    assert {k: len(reset_servers.seen(k)) for k in reset_servers.ports} == before  # nothing went on
    ok = request(stack.port, "POST", "/v1/completions", {"model": "llama", "prompt": "after"})
    assert ok.status == 200
