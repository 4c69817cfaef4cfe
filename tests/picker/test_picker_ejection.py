"""The picker's own error tracking (picker/ejection.py), fed from the response path: failing
endpoints leave the candidate set, come back when their time is up, never all at once."""
from __future__ import annotations

import json

from envoy.service.ext_proc.v3 import external_processor_pb2 as pb
from google.protobuf import struct_pb2
from test_picker_extproc_shapes import headers, make, md, run

from infershift.picker.ejection import Ejector
from infershift.picker.envoy_config import ext_proc_filters

ADDRS = [f"10.0.0.{i}:8000" for i in range(1, 5)]


def test_consecutive_failures_eject_for_a_doubling_time():
    now = [0.0]
    ej = Ejector(clock=lambda: now[0], threshold=3, base_seconds=5, max_seconds=12)
    ej.failure(ADDRS[0])
    ej.failure(ADDRS[0])
    ej.success(ADDRS[0])  # a success in between: the count starts over
    ej.failure(ADDRS[0])
    ej.failure(ADDRS[0])
    assert ej.ejected() == set()
    ej.failure(ADDRS[0])
    assert ej.ejected() == {ADDRS[0]} and ej.ejections == 1
    assert ej.narrow(None, ADDRS) == ADDRS[1:]
    assert ej.narrow([ADDRS[0], ADDRS[2]], ADDRS) == [ADDRS[2]]
    assert ej.narrow([ADDRS[0]], ADDRS) == [ADDRS[0]]  # never all of them
    now[0] = 5.0
    assert ej.ejected() == set() and ej.narrow(None, ADDRS) is None
    for _ in range(3):  # failing again right away: twice as long, then capped
        ej.failure(ADDRS[0])
    assert ej.until[ADDRS[0]] == 15.0
    now[0] = 15.0
    for _ in range(3):
        ej.failure(ADDRS[0])
    assert ej.until[ADDRS[0]] == 27.0
    now[0] = 27.0
    assert ej.ejected() == set()
    ej.success(ADDRS[0])  # back and healthy: the next ejection is short again
    for _ in range(3):
        ej.failure(ADDRS[0])
    assert ej.until[ADDRS[0]] == 32.0


def _response(status: int, served: str, picked: str | None = None):
    attrs = struct_pb2.Struct()
    attrs.update({"upstream.address": served})
    msg = pb.ProcessingRequest(response_headers=headers([(":status", str(status)), ("content-type", "application/json")]))
    msg.attributes["envoy.filters.http.ext_proc"].CopyFrom(attrs)
    if picked is not None:
        msg.metadata_context.CopyFrom(md("envoy.lb", "x-gateway-destination-endpoint", picked))
    return msg


def _pick(svc) -> str:
    body = json.dumps({"model": "llama", "prompt": "hi"}).encode()
    out = run(svc, [
        pb.ProcessingRequest(request_headers=headers([(":path", "/v1/completions"), ("content-type", "application/json")])),
        pb.ProcessingRequest(request_body=pb.HttpBody(body=body, end_of_stream=True))])
    for r in out:
        common = r.request_body.response if r.HasField("request_body") else r.request_headers.response
        for h in common.header_mutation.set_headers:
            if h.header.key == "x-gateway-destination-endpoint":
                return h.header.raw_value.decode()
    raise AssertionError(out)


def test_5xx_and_retried_responses_eject_through_the_response_path():
    svc, _ = make()
    bad = "10.0.0.2:8000"
    for _ in range(3):  # response streams for 5xx answers (no hand-over: the response filter's matcher)
        run(svc, [_response(500, bad)])
    assert svc.ejector.ejected() == {bad}
    assert all(_pick(svc).split(",")[0] != bad for _ in range(40))  # out of the candidate set

    svc, _ = make()
    for _ in range(3):  # served by the fallback: the gateway retried, the pick had failed
        run(svc, [_response(200, "10.0.0.3:8000", picked=f"{bad},10.0.0.3:8000")])
    assert svc.ejector.ejected() == {bad}
    run(svc, [_response(200, "10.0.0.3:8000", picked="10.0.0.3:8000")])  # a plain success clears nothing else
    assert svc.ejector.ejected() == {bad}


def test_the_response_filter_also_runs_for_failures_when_asked():
    plain = ext_proc_filters("picker", fail_open=True)[-1]["typed_config"]["xds_matcher"]
    reporting = ext_proc_filters("picker", fail_open=True, report_failures=True)[-1]["typed_config"]["xds_matcher"]
    text = json.dumps(reporting)
    assert ":status" not in json.dumps(plain)
    assert '"header_name": ":status"' in text and '"header_name": "x-envoy-attempt-count"' in text
    assert "5[0-9][0-9]" in text
