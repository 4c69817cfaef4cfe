"""The one-round-trip request path (STREAMED body sent without waiting for the headers' answer) and
the hand-over to the response-path stream, fed to the servicer as the protobuf messages Envoy sends."""
from __future__ import annotations

import json
import random

import pytest
from envoy.extensions.filters.http.ext_proc.v3 import processing_mode_pb2 as pm
from envoy.service.ext_proc.v3 import external_processor_pb2 as pb
from test_picker_extproc_shapes import headers, md, run

from infershift.picker import restore_header
from infershift.picker.config import parse_config
from infershift.picker.envoy_config import HANDOVER_KEY, HANDOVER_NS, RESTORE_HEADER
from infershift.picker.errors import ConfigError
from infershift.picker.extproc import ExtProc
from infershift.picker.pool import Pool
from infershift.picker.telemetry import Telemetry

ONE_RT = pb.ProtocolConfiguration(request_body_mode=pm.ProcessingMode.STREAMED,
                                  send_body_without_waiting_for_header_response=True)


def make(sample=1.0, wall=1000.0, flow=True, response_model="client"):
    cfg = parse_config({"endpoints": [{"address": f"10.0.0.{i}:8000", "models": ["llama", "sql-v1"]} for i in (1, 2)],
                        "models": {"sql": {"targets": [{"model": "sql-v1"}]}}, "flowControl": flow,
                        **({"responseModel": response_model} if response_model else {}),
                        "limits": {"maxBodyBytes": 4096}, "telemetry": {"responseSampleRate": sample}})
    pool = Pool(cfg, clock=lambda: 100.0, rng=random.Random(3))
    for e in pool.endpoints.values():
        e.last_ok = 100.0
    tm = Telemetry()
    clock = [5.0]
    return ExtProc(pool, tm, clock=lambda: clock[0], wall=lambda: wall), tm, clock


def request(chunks: list[bytes], extra=()) -> list:
    size = str(sum(len(c) for c in chunks))
    msgs = [pb.ProcessingRequest(request_headers=headers([(":path", "/v1/completions"), (":method", "POST"),
                                                          ("content-type", "application/json"),
                                                          ("content-length", size), *extra]),
                                 protocol_config=ONE_RT)]
    for i, c in enumerate(chunks):
        msgs.append(pb.ProcessingRequest(request_body=pb.HttpBody(body=c, end_of_stream=i == len(chunks) - 1)))
    return msgs


def split(body: bytes, n: int) -> list[bytes]:
    k = -(-len(body) // n)
    return [body[i:i + k] for i in range(0, len(body), k)]


def set_headers(resp) -> dict:
    return {h.header.key: h.header.raw_value.decode() for h in resp.request_headers.response.header_mutation.set_headers}


def forwarded(chunks: list[bytes], answers: list) -> bytes:
    """What Envoy sends upstream: each chunk as the picker answered it."""
    out = b""
    for c, a in zip(chunks, answers):
        bm = a.request_body.response.body_mutation
        kind = bm.WhichOneof("mutation")
        out += c if kind is None else (b"" if kind == "clear_body" else bm.body)
    return out


def test_headers_answered_with_the_body_and_only_the_model_chunk_rewritten():
    svc, _, _ = make()
    body = json.dumps({"prompt": "x" * 3000, "model": "sql", "max_tokens": 5}).encode()  # model after the prompt
    chunks = split(body, 4)
    out = run(svc, request(chunks))
    assert len(out) == 1 + len(chunks)  # nothing until the last chunk, then every answer at once
    assert out[0].HasField("request_headers") and all(r.HasField("request_body") for r in out[1:])
    hdr = set_headers(out[0])
    assert hdr["x-gateway-destination-endpoint"].startswith("10.0.0.")
    new = json.loads(forwarded(chunks, out[1:]))
    assert new == {"prompt": "x" * 3000, "model": "sql-v1", "max_tokens": 5}
    assert int(hdr["content-length"]) == len(forwarded(chunks, out[1:]))
    changed = [a.request_body.response.HasField("body_mutation") for a in out[1:]]
    assert changed == [False, False, False, True]  # the prompt's chunks are not sent back


def test_ambiguous_model_key_is_reencoded_into_the_first_chunk():
    svc, _, _ = make()
    body = json.dumps({"model": "sql", "prompt": "p", "metadata": {"model": "other"}}).encode()
    chunks = split(body, 3)
    out = run(svc, request(chunks))
    assert json.loads(forwarded(chunks, out[1:]))["model"] == "sql-v1"
    assert json.loads(forwarded(chunks, out[1:]))["metadata"] == {"model": "other"}


def test_under_flow_control_every_response_comes_back():
    # its end frees the endpoint's slot, so it is not sampled out
    svc, _, _ = make(sample=0.0)
    chunks = split(json.dumps({"model": "llama", "prompt": "y" * 500}).encode(), 2)
    out = run(svc, request(chunks))
    assert RESTORE_HEADER in set_headers(out[0])
    addr = out[0].request_headers.response.header_mutation.set_headers[0].header.raw_value.decode()
    assert svc.flow.load(svc.pool.endpoints[addr]) == 1  # counted as sent, until its response ends


def test_unchanged_body_gets_empty_answers_and_no_length():
    svc, _, _ = make(sample=0.0, flow=False)
    chunks = split(json.dumps({"model": "llama", "prompt": "y" * 500}).encode(), 2)
    out = run(svc, request(chunks))
    assert [a.request_body.response.HasField("body_mutation") for a in out[1:]] == [False, False]
    hdr = set_headers(out[0])
    assert "content-length" not in hdr and RESTORE_HEADER not in hdr  # sampled out, nothing to restore
    assert not out[0].request_headers.response.header_mutation.remove_headers
    # a client sending the marker itself does not get a response stream
    out = run(svc, request(chunks, [(RESTORE_HEADER, "1")]))
    assert list(out[0].request_headers.response.header_mutation.remove_headers) == [RESTORE_HEADER]


def test_oversize_body_is_rejected_before_the_end():
    svc, tm, _ = make()
    chunks = [b'{"model": "llama", "prompt": "' + b"z" * 3000, b"z" * 3000, b'"}']
    out = run(svc, request(chunks))
    assert out[0].immediate_response.status.code == 413
    assert json.loads(out[0].immediate_response.body)["error"]["code"] == "request_too_large"
    assert len(out) == 2 and out[1].HasField("request_body")  # the chunk after the answer is let through
    assert tm.registry.get_sample_value("infershift_picker_errors_total",
                                        {"pool": "default-pool", "status": "413", "code": "request_too_large"}) == 1


def test_hand_over_to_the_response_stream_restores_and_measures():
    svc, tm, clock = make(wall=1000.0)
    out = run(svc, request([json.dumps({"model": "sql", "prompt": "q"}).encode()]))
    assert set_headers(out[0])[RESTORE_HEADER] == "1"
    handover = out[0].dynamic_metadata.fields[HANDOVER_NS].struct_value.fields[HANDOVER_KEY].string_value
    h = restore_header.decode(handover)
    assert (h.target_model, h.client_model, h.started) == ("sql-v1", "sql", 1000.0)
    picked = h.picked
    # the response-path stream: another servicer (another replica), its wall clock 0.25 s later
    svc2, tm2, _ = make(wall=1000.25)
    meta = md(HANDOVER_NS, HANDOVER_KEY, handover)
    meta.filter_metadata["envoy.lb"].update({"x-gateway-destination-endpoint-served": picked})
    resp_body = b'{"id":"1","model":"sql-v1","choices":[]}'
    out2 = run(svc2, [
        pb.ProcessingRequest(response_headers=headers([(":status", "200"), ("content-type", "application/json")]),
                             metadata_context=meta),
        pb.ProcessingRequest(response_body=pb.HttpBody(body=resp_body, end_of_stream=True)),
    ])
    assert out2[0].mode_override.response_body_mode == pm.ProcessingMode.BUFFERED
    assert json.loads(out2[1].response_body.response.body_mutation.body)["model"] == "sql"
    labels = {"pool": "default-pool", "target_model": "sql-v1"}
    assert tm2.registry.get_sample_value("infershift_picker_target_ttfb_seconds_sum", labels) == 0.25
    assert tm2.registry.get_sample_value("infershift_picker_target_responses_total", {**labels, "status": "200"}) == 1
    assert tm2.registry.get_sample_value("infershift_picker_served_total",
                                         {"pool": "default-pool", "endpoint": picked, "picked": "true"}) == 1
    # the request stream itself records no response telemetry (it never sees the response)
    assert tm.registry.get_sample_value("infershift_picker_target_responses_total", {**labels, "status": "none"}) is None


def test_by_default_the_response_keeps_the_served_target_as_the_guides_show():
    svc, _, _ = make(response_model=None)
    out = run(svc, request([json.dumps({"model": "sql", "prompt": "q"}).encode()]))
    handover = out[0].dynamic_metadata.fields[HANDOVER_NS].struct_value.fields[HANDOVER_KEY].string_value
    svc2, tm2, _ = make(wall=1000.25, response_model=None)
    resp_body = b'{"id":"1","model":"sql-v1","choices":[]}'
    out2 = run(svc2, [
        pb.ProcessingRequest(response_headers=headers([(":status", "200"), ("content-type", "application/json")]),
                             metadata_context=md(HANDOVER_NS, HANDOVER_KEY, handover)),
        pb.ProcessingRequest(response_body=pb.HttpBody(body=resp_body, end_of_stream=True)),
    ])
    # streamed past for telemetry only: nothing buffered, the body untouched
    assert out2[0].mode_override.response_body_mode == pm.ProcessingMode.STREAMED
    assert not out2[1].response_body.response.HasField("body_mutation")
    labels = {"pool": "default-pool", "target_model": "sql-v1"}
    assert tm2.registry.get_sample_value("infershift_picker_target_responses_total", {**labels, "status": "200"}) == 1


def test_response_model_must_be_served_or_client():
    with pytest.raises(ConfigError, match="responseModel: expected served or client, got 'target'"):
        parse_config({"endpoints": [{"address": "10.0.0.1:8000"}], "responseModel": "target"})


def test_response_stream_without_hand_over_is_passed_through():
    svc, tm, _ = make()
    out = run(svc, [pb.ProcessingRequest(response_headers=headers([(":status", "200")]))])
    assert len(out) == 1 and not out[0].response_headers.response.header_mutation.set_headers


def test_hand_over_codec_rejects_foreign_values():
    h = restore_header.Handover('m"1', "c\u00e9", "10.0.0.1:8000", 12.5)
    assert restore_header.decode(restore_header.encode(h)) == h
    assert restore_header.encode(h).isascii()
    for bad in ("", "1", "[2,\"a\",\"b\",\"c\",1]", "{}", "[1,\"a\",\"b\",\"c\",\"x\"]", "not json"):
        assert restore_header.decode(bad) is None


def test_big_or_unsized_uploads_extend_the_message_timer():
    from infershift.picker.envoy_config import BIG_BODY_BYTES, UPLOAD_TIMEOUT_S

    svc, _, _ = make()

    def first_answer(extra):
        msgs = [pb.ProcessingRequest(request_headers=headers([(":path", "/v1/completions"), *extra]),
                                     protocol_config=ONE_RT)]
        return run(svc, msgs)

    assert first_answer([("content-length", "300")]) == []  # small: nothing until the body is in
    for extra in ([("content-length", str(BIG_BODY_BYTES + 1))], []):
        out = first_answer(extra)
        assert len(out) == 1 and out[0].override_message_timeout.seconds == UPLOAD_TIMEOUT_S
