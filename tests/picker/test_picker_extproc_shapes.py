"""Protocol shapes our test Envoy does not produce (a list-valued subset hint, the served endpoint in
`envoy.lb` metadata), fed to the servicer as the protobuf messages Envoy would send."""
from __future__ import annotations

import asyncio
import json
import random

from envoy.config.core.v3 import base_pb2
from envoy.service.ext_proc.v3 import external_processor_pb2 as pb
from google.protobuf import struct_pb2

from infershift.picker.config import parse_config
from infershift.picker.extproc import ExtProc
from infershift.picker.pool import Pool
from infershift.picker.telemetry import Telemetry


def make():
    cfg = parse_config({"endpoints": [{"address": f"10.0.0.{i}:8000", "models": ["llama"]} for i in range(1, 5)]})
    pool = Pool(cfg, clock=lambda: 100.0, rng=random.Random(3))
    for e in pool.endpoints.values():
        e.last_ok = 100.0
    tm = Telemetry()
    return ExtProc(pool, tm), tm


def headers(pairs, eos=False):
    return pb.HttpHeaders(headers=base_pb2.HeaderMap(
        headers=[base_pb2.HeaderValue(key=k, raw_value=v.encode()) for k, v in pairs]), end_of_stream=eos)


def run(svc, msgs):
    async def it():
        for m in msgs:
            yield m

    async def go():
        return [r async for r in svc.Process(it(), None)]

    return asyncio.run(go())


def md(ns, key, value) -> base_pb2.Metadata:
    s = struct_pb2.Struct()
    s.update({key: value})
    m = base_pb2.Metadata()
    m.filter_metadata[ns].CopyFrom(s)
    return m


def dest_of(resp):
    common = resp.request_body.response if resp.HasField("request_body") else resp.request_headers.response
    hdr = {h.header.key: h.header.raw_value.decode() for h in common.header_mutation.set_headers}
    meta = resp.dynamic_metadata.fields["envoy.lb"].struct_value.fields["x-gateway-destination-endpoint"].string_value
    assert hdr["x-gateway-destination-endpoint"] == meta  # header and metadata carry the same value
    return hdr


def test_list_subset_hint_and_served_metadata():
    svc, tm = make()
    body = json.dumps({"model": "llama", "prompt": "hi"}).encode()
    subset = md("envoy.lb.subset_hint", "x-gateway-destination-endpoint-subset", ["10.0.0.3:8000"])
    out = run(svc, [
        pb.ProcessingRequest(request_headers=headers([(":path", "/v1/completions"), ("content-type", "application/json")])),
        pb.ProcessingRequest(request_body=pb.HttpBody(body=body, end_of_stream=True), metadata_context=subset),
        pb.ProcessingRequest(response_headers=headers([(":status", "200"), ("content-type", "application/json")]),
                             metadata_context=md("envoy.lb", "x-gateway-destination-endpoint-served", "10.0.0.3:8000")),
    ])
    hdr = dest_of(out[1])
    assert hdr["x-gateway-destination-endpoint"] == "10.0.0.3:8000"
    assert "x-request-id" in hdr and len(hdr["x-request-id"]) == 36  # generated: the request had none
    served = tm.registry.get_sample_value("infershift_picker_served_total",
                                          {"pool": "default-pool", "endpoint": "10.0.0.3:8000", "picked": "true"})
    assert served == 1


def test_request_without_body_is_routed_on_headers():
    svc, _ = make()
    out = run(svc, [pb.ProcessingRequest(request_headers=headers([(":path", "/v1/models"), (":method", "GET"),
                                                                   ("x-request-id", "abc")], eos=True))])
    assert len(out) == 1 and out[0].HasField("request_headers")
    hdr = dest_of(out[0])
    assert hdr["x-gateway-destination-endpoint"].startswith("10.0.0.") and "x-request-id" not in hdr
