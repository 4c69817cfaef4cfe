"""Request parsing/rewrite and response restore on raw bytes."""
from __future__ import annotations

import json

import pytest

from infershift.picker.errors import BadRequest, BodyTooLarge
from infershift.picker.request_body import model_splice, parse_body, prompt_of, rewrite_model
from infershift.picker.response_body import SSERestorer, restore_json

CT = "application/json"


def test_rewrite_splices_and_stays_valid():
    body = json.dumps({"model": "travel", "prompt": "x" * 220_000, "max_tokens": 5}).encode()
    p = parse_body(body, CT, 1 << 20)
    out = rewrite_model(body, p, 'travel-v2"quoted')
    assert json.loads(out) == {**json.loads(body), "model": 'travel-v2"quoted'}
    assert rewrite_model(body, p, "travel") is body


def test_splice_locates_the_only_key_and_refuses_lookalikes():
    obj = {"prompt": 'the \\"model\\" word and "model": "fake"', "model": "m"}
    body = json.dumps(obj).encode()
    start, end, repl = model_splice(body, parse_body(body, CT, 1 << 20), "n2")
    assert body[start:end] == b"m" and repl == b"n2"
    assert json.loads(rewrite_model(body, parse_body(body, CT, 1 << 20), "n2")) == {**obj, "model": "n2"}
    # a key-lookalike whose value is not the parsed model: never spliced
    tricky = b'{"x \\"model": "m", "model": "real"}'
    assert model_splice(tricky, parse_body(tricky, CT, 1 << 20), "n") is None


def test_rewrite_with_nested_model_keys_falls_back_to_reencode():
    obj = {"messages": [{"role": "user", "content": 'say "model": "x"'}],
           "tools": [{"function": {"parameters": {"model": "inner"}}}], "model": "m"}
    body = json.dumps(obj).encode()
    out = rewrite_model(body, parse_body(body, CT, 1 << 20), "n")
    assert json.loads(out) == {**obj, "model": "n"}


@pytest.mark.parametrize("body, ctype, exc, code", [
    (b"{", CT, BadRequest, "invalid_json"),
    (b"[]", CT, BadRequest, "invalid_json"),
    (b'{"prompt": "x"}', CT, BadRequest, "missing_model"),
    (b'{"model": 3}', CT, BadRequest, "invalid_model"),
    (b'{"model": "  "}', CT, BadRequest, "invalid_model"),
    (b'{"model": "m"}', "text/plain", BadRequest, "unsupported_content_type"),
    (b'{"model": "m"}', None, BadRequest, "unsupported_content_type"),
    (b'{"model": "m", "prompt": "' + b"x" * 100 + b'"}', CT, BodyTooLarge, "request_too_large"),
])
def test_bad_bodies(body, ctype, exc, code):
    with pytest.raises(exc) as e:
        parse_body(body, ctype, 64)
    assert e.value.code == code
    err = json.loads(e.value.body())["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["message"]


def test_prompt_extraction():
    assert prompt_of({"messages": [{"role": "system", "content": "be nice"},
                                   {"role": "user", "content": [{"type": "text", "text": "hi"}]}]}) == \
        "system:be nice\nuser:hi\n"
    assert prompt_of({"prompt": ["a", "b"]}) == "a\nb"
    assert parse_body(b'{"model":"m","prompt":"p"}', "application/json; charset=utf-8", 100).prompt == "p"


def test_restore_json_and_sse_across_chunks():
    body = b'{"id":"1","model":"t-v2","choices":[{"text":"the \\"model\\": \\"t-v2\\""}]}'
    out = json.loads(restore_json(body, "t-v2", "travel"))
    assert out["model"] == "travel" and out["choices"][0]["text"] == 'the "model": "t-v2"'
    events = b"".join(f'data: {{"model": "t-v2", "i": {i}}}\n\n'.encode() for i in range(3)) + b"data: [DONE]\n\n"
    for cut in range(1, len(events)):
        s = SSERestorer("t-v2", "travel")
        got = s.feed(events[:cut], False) + s.feed(events[cut:], True)
        assert got == events.replace(b'"t-v2"', b'"travel"')
