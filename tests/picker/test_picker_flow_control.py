"""Flow control: requests wait in the picker by priority band while no endpoint has room, and are
dispatched as responses free slots. The servicer is fed the protobuf messages Envoy sends (no I/O
here); test_picker_flow_control_dataplane.py runs the same through real Envoy."""
from __future__ import annotations

import json
import random

import pytest
from envoy.service.ext_proc.v3 import external_processor_pb2 as pb

from infershift.picker.config import parse_config
from infershift.picker.envoy_config import HANDOVER_KEY, HANDOVER_NS
from infershift.picker.extproc import ExtProc
from infershift.picker.flowcontrol import Pending
from infershift.picker.metrics_parse import ServerMetrics
from infershift.picker.pool import Pool
from infershift.picker.telemetry import Telemetry
from test_picker_extproc_shapes import headers, md

A, B = "10.0.0.1:8000", "10.0.0.2:8000"


class Clock:
    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t


def make(n=1, detector=None, flow=None, models=None):
    detector = detector or {"type": "concurrency-detector", "parameters": {"maxConcurrency": 1}}
    cfg = parse_config({
        "endpoints": [{"address": f"10.0.0.{i}:8000", "models": ["llama"]} for i in range(1, n + 1)],
        "models": models or {
            "batch": {"criticality": "Sheddable", "targets": [{"model": "llama"}]},
            "chat": {"criticality": "Critical", "targets": [{"model": "llama"}]}},
        "scheduling": {
            "featureGates": ["flowControl"],
            "plugins": [detector, {"type": "queue-scorer"}, {"type": "max-score-picker"}],
            "flowControl": {"defaultRequestTTL": "10s", "saturationDetector": {"pluginRef": detector["type"]},
                            **(flow or {})}}})
    clock = Clock()
    pool = Pool(cfg, clock=clock, rng=random.Random(3), snapshot_ttl=0.0)
    for e in pool.endpoints.values():
        e.scraped = e.metrics = ServerMetrics(engine="vllm")
        e.last_ok = clock.t
    tm = Telemetry()
    tm.attach_pool(pool)
    return ExtProc(pool, tm), tm, clock


def send(svc, model: str, extra=()):
    """A request's messages as Envoy sends them (BUFFERED); returns (state, answers of the body)."""
    st = svc.new_state()
    svc.handle(st, pb.ProcessingRequest(request_headers=headers(
        [(":path", "/v1/completions"), (":method", "POST"), ("content-type", "application/json"), *extra])))
    body = json.dumps({"model": model, "prompt": "hi"}).encode()
    answers = svc.handle(st, pb.ProcessingRequest(request_body=pb.HttpBody(body=body, end_of_stream=True)))
    STATES[id(answers)] = st
    if isinstance(answers, Pending):
        answers.then(lambda later: STATES.__setitem__(id(later), st))
    return st, answers


def dest(answers) -> str | None:
    for a in answers:
        if a.HasField("request_body"):
            for h in a.request_body.response.header_mutation.set_headers:
                if h.header.key == "x-gateway-destination-endpoint":
                    return h.header.raw_value.decode()
    return None


def status(answers) -> int | None:
    for a in answers:
        if a.HasField("immediate_response"):
            return a.immediate_response.status.code
    return None


def respond(svc, answers) -> None:
    """The response of a routed request, to its end, on the stream that routed it (BUFFERED: the
    response comes back on the request's own stream)."""
    st = STATES[id(answers)]
    svc.handle(st, pb.ProcessingRequest(response_headers=headers([(":status", "200"),
                                                                   ("content-type", "application/json")])))
    svc.handle(st, pb.ProcessingRequest(response_body=pb.HttpBody(body=b'{"model":"llama"}', end_of_stream=True)))


def respond_handed_over(svc, answers) -> None:
    """One round trip (hold mode): the response comes back on a response-path stream, with the
    hand-over the request-path stream put in the dynamic metadata."""
    a = answers[0]
    handover = a.dynamic_metadata.fields[HANDOVER_NS].struct_value.fields[HANDOVER_KEY].string_value
    assert handover
    st = svc.new_state()
    svc.handle(st, pb.ProcessingRequest(
        response_headers=headers([(":status", "200"), ("content-type", "application/json")]),
        metadata_context=md(HANDOVER_NS, HANDOVER_KEY, handover)))
    svc.handle(st, pb.ProcessingRequest(response_body=pb.HttpBody(body=b'{"model":"llama"}', end_of_stream=True)))


STATES: dict = {}  # answers (by id) -> the request's stream state


class Delivered:
    """Collects what a Pending answer resolves to, as a transport would."""

    def __init__(self, pending):
        assert isinstance(pending, Pending)
        self.answers = None
        pending.then(self.got)

    def got(self, answers):
        self.answers = answers


def outcome_count(tm, outcome: str, priority: str) -> float:
    return tm.registry.get_sample_value("llm_d_epp_flow_control_requests_total",
                                        {"outcome": outcome, "priority": priority, "inference_pool": "default-pool"}) or 0


def test_waits_while_no_endpoint_has_room_and_higher_priority_goes_first():
    svc, tm, _ = make()
    st1, first = send(svc, "llama")
    assert dest(first) == A and svc.flow.load(svc.pool.endpoints[A]) == 1
    _, batch = send(svc, "batch")
    _, chat = send(svc, "chat")
    # both wait: the gateway is told to wait longer than its message timeout
    assert all(isinstance(x, Pending) and x[0].HasField("override_message_timeout") for x in (batch, chat))
    assert batch[0].override_message_timeout.seconds == 11  # the TTL, plus one second
    b, c = Delivered(batch), Delivered(chat)
    assert svc.flow.run() == 0 and b.answers is c.answers is None
    assert tm.registry.get_sample_value("llm_d_epp_flow_control_queue_size", {
        "fairness_id": "default-flow", "priority": "1", "inference_pool": "default-pool", "model_name": "chat",
        "target_model_name": "llama"}) == 1
    respond(svc, first)  # the first response ends: its slot is free
    assert svc.flow.load(svc.pool.endpoints[A]) == 0
    assert svc.flow.run() == 1
    assert dest(c.answers) == A and b.answers is None  # Critical (priority 1) before Sheddable (-1)
    respond(svc, c.answers)
    svc.flow.run()
    assert dest(b.answers) == A
    assert outcome_count(tm, "Dispatched", "1") == 1 and outcome_count(tm, "Dispatched", "-1") == 1
    assert svc.flow.queued == 0


def test_a_new_request_does_not_pass_waiting_ones_of_its_priority_or_higher():
    svc, _, _ = make(n=2)
    _, r1 = send(svc, "chat")
    _, r2 = send(svc, "chat")
    assert {dest(r1), dest(r2)} == {A, B}
    _, waiting = send(svc, "chat")
    w = Delivered(waiting)
    respond(svc, r1)  # a slot frees; the waiting request is dispatched before any newcomer
    svc.flow.run()
    assert dest(w.answers) == dest(r1)
    _, low = send(svc, "batch")
    assert isinstance(low, Pending)


def test_flows_take_turns_within_a_band():
    svc, _, _ = make()
    _, busy = send(svc, "chat")
    order, answers = [], []
    for tenant in ("x", "x", "x", "y"):
        _, p = send(svc, "chat", [("x-llm-d-inference-fairness-id", tenant)])
        p.then(lambda a, t=tenant: (order.append(t), answers.append(a)))
    last = busy
    for _ in range(4):
        respond(svc, last)
        assert svc.flow.run() == 1
        last = answers[-1]
    assert order == ["x", "y", "x", "x"]  # round robin by fairness id, FCFS within one


def test_band_limit_answers_429_in_the_api_error_shape():
    svc, tm, _ = make(flow={"defaultNegativePriorityBand": {"maxRequests": 1}})
    send(svc, "llama")
    _, queued = send(svc, "batch")
    assert isinstance(queued, Pending)
    _, full = send(svc, "batch")
    assert status(full) == 429
    r = full[0].immediate_response
    err = json.loads(r.body)["error"]
    assert (err["type"], err["code"]) == ("rate_limit_exceeded", "queue_full") and "priority -1" in err["message"]
    assert {h.header.key: h.header.raw_value.decode() for h in r.headers.set_headers}["retry-after"] == "1"
    assert outcome_count(tm, "RejectedCapacity", "-1") == 1
    _, other_band = send(svc, "chat")  # another band has its own limit
    assert isinstance(other_band, Pending)


def test_ttl_expiry_is_429_and_no_endpoint_expiry_is_503():
    svc, tm, clock = make(flow={"noEndpointRequestTTL": "30s"},
                          models={"gone": {"targets": [{"model": "llama"}]}})
    send(svc, "llama")
    _, waiting = send(svc, "llama")
    w = Delivered(waiting)
    clock.t += 9.9
    svc.flow.run()
    assert w.answers is None
    clock.t += 0.2
    svc.flow.run()
    assert status(w.answers) == 429
    assert json.loads(w.answers[0].immediate_response.body)["error"]["code"] == "queue_timeout"
    assert outcome_count(tm, "EvictedTTL", "0") == 1
    # the pool loses its endpoint: a request waits up to noEndpointRequestTTL, then 503
    svc.pool.set_endpoints([])
    _, cold = send(svc, "gone")
    assert isinstance(cold, Pending) and cold[0].override_message_timeout.seconds == 31
    c = Delivered(cold)
    clock.t += 31
    svc.flow.run()
    assert status(c.answers) == 503
    assert outcome_count(tm, "EvictedNoEndpoints", "0") == 1


def test_without_no_endpoint_ttl_an_empty_pool_is_503_at_once():
    svc, _, _ = make()
    svc.pool.set_endpoints([])
    _, r = send(svc, "chat")
    assert status(r) == 503 and not isinstance(r, Pending)


def test_a_request_whose_client_left_leaves_the_queue():
    svc, tm, _ = make()
    _, busy = send(svc, "llama")
    st, waiting = send(svc, "chat")
    _, behind = send(svc, "batch")
    b = Delivered(behind)
    svc.finish(st)  # the stream was reset while it waited
    assert svc.flow.queued == 1 and outcome_count(tm, "EvictedContextCancelled", "1") == 1
    respond(svc, busy)
    svc.flow.run()
    assert dest(b.answers) == A  # the slot went to the next one, not to the cancelled request


def test_load_is_the_poll_plus_sent_minus_finished_since_it():
    svc, _, _ = make(detector={"type": "concurrency-detector", "parameters": {"maxConcurrency": 4}})
    e = svc.pool.endpoints[A]
    _, r1 = send(svc, "llama")
    _, r2 = send(svc, "llama")
    assert svc.flow.load(e) == 2
    respond(svc, r1)
    assert svc.flow.load(e) == 1
    # a new scrape is the new base: the server says 3 running (others' requests too)
    e.scraped = e.metrics = ServerMetrics(running=3.0, engine="vllm")
    assert svc.flow.load(e) == 3
    send(svc, "llama")
    assert svc.flow.load(e) == 4
    _, r4 = send(svc, "llama")
    assert isinstance(r4, Pending)  # 4 in flight = maxConcurrency


def test_batch_capacity_detector_learns_the_batch_size_and_probes_past_it_while_nothing_queues():
    svc, _, _ = make(detector={"type": "batch-capacity-detector"})
    svc.flow.saw(5)  # another priority is in use too: room is the detector's, not only the filter's
    e = svc.pool.endpoints[A]
    det = svc.pool.gen.scheduler.flow_detector
    e.scraped = e.metrics = ServerMetrics(running=6.0, waiting=0.0, kv_usage=0.3, engine="vllm")
    # 6 seen running, no queue: past 6, a probe of max(1, 6 // 8) = 1 per poll
    _, first = send(svc, "llama")
    _, second = send(svc, "llama")
    assert not isinstance(first, Pending) and isinstance(second, Pending)
    w0 = Delivered(second)
    e.scraped = e.metrics = ServerMetrics(running=7.0, waiting=0.0, kv_usage=0.3, engine="vllm")
    assert det.batch_size(e) == 7  # it took one more: a bigger batch
    svc.flow.run()
    assert dest(w0.answers) == A  # the new poll: one more probe
    e.scraped = e.metrics = ServerMetrics(running=8.0, waiting=2.0, kv_usage=0.3, engine="vllm")
    _, r = send(svc, "llama")
    assert isinstance(r, Pending)  # a queue: 10 in flight, past 8, and no probing
    e.scraped = e.metrics = ServerMetrics(running=7.0, waiting=0.0, kv_usage=0.3, engine="vllm")
    w = Delivered(r)
    svc.flow.run()
    assert dest(w.answers) == A  # 7 of 8: within the size seen
    e.scraped = e.metrics = ServerMetrics(running=2.0, waiting=0.0, kv_usage=0.9, engine="vllm")
    _, r1 = send(svc, "llama")
    assert isinstance(r1, Pending)  # KV over 0.8: no room whatever the count


def test_batch_capacity_detector_does_not_stick_at_a_size_seen_while_prefill_queued():
    """A queue at a small batch (prefill the bottleneck, not the batch) stops probing only until
    it drains; the size keeps growing after."""
    svc, _, _ = make(detector={"type": "batch-capacity-detector"})
    e = svc.pool.endpoints[A]
    det = svc.pool.gen.scheduler.flow_detector
    e.scraped = e.metrics = ServerMetrics(running=2.0, waiting=1.0, kv_usage=0.1, engine="vllm")
    assert det.batch_size(e) == 2 and not det.has_room(e, 3, True, 0)
    e.scraped = e.metrics = ServerMetrics(running=3.0, waiting=0.0, kv_usage=0.1, engine="vllm")
    assert det.has_room(e, 3, True, 0) and not det.has_room(e, 3, True, 1)
    e.scraped = e.metrics = ServerMetrics(running=16.0, waiting=0.0, kv_usage=0.1, engine="vllm")
    assert det.batch_size(e) == 16 and det.has_room(e, 17, True, 1) and not det.has_room(e, 17, True, 2)


def test_one_round_trip_responses_free_the_slot_from_the_response_stream():
    from test_picker_one_round_trip import request

    svc, _, _ = make()
    body = json.dumps({"model": "chat", "prompt": "hi"}).encode()
    st1 = svc.new_state()
    first = [a for m in request([body]) for a in svc.handle(st1, m)]
    assert dest_of_headers(first) == A and st1.done  # the request-path stream is done at once
    st2 = svc.new_state()
    out = [svc.handle(st2, m) for m in request([body])]
    w = Delivered(out[-1])
    respond_handed_over(svc, first)
    svc.flow.run()
    assert dest_of_headers(w.answers) == A


def dest_of_headers(answers) -> str | None:
    for a in answers:
        if a.HasField("request_headers"):
            for h in a.request_headers.response.header_mutation.set_headers:
                if h.header.key == "x-gateway-destination-endpoint":
                    return h.header.raw_value.decode()
    return None


def test_flow_control_can_be_switched_off():
    cfg = parse_config({"endpoints": [{"address": A}], "flowControl": False})
    assert cfg.scheduling.flow_control is None
    assert parse_config({"endpoints": [{"address": A}]}).scheduling.flow_control is not None  # on by default
    with pytest.raises(Exception, match="flowControl: expected true or false"):
        parse_config({"endpoints": [{"address": A}], "flowControl": "no"})


def test_room_is_for_the_pool_and_the_scheduler_may_burst_past_an_endpoint_for_affinity():
    """As upstream's detectors: the gate is the pool's (some endpoint has room); the candidates
    are every endpoint short of its safety limit (ideal limit times 1 + headroom), so the scorers
    can keep a prefix on an endpoint that is at its ideal limit while another has room."""
    svc, _, _ = make(n=2, detector={"type": "concurrency-detector",
                                    "parameters": {"maxConcurrency": 1, "headroom": 1.0}})
    gen, fc = svc.pool.gen, svc.flow
    a, b = svc.pool.endpoints[A], svc.pool.endpoints[B]
    eps = [a, b]
    fc.counts[A] = [a.scraped, 1, 0]  # A: one sent, at its ideal limit (its own has_room says no)
    assert not gen.scheduler.flow_detector.has_room(a, fc.load(a), True)
    room, serving = fc.room(gen, eps, "llama")
    assert sorted(e.address for e in room) == [A, B] and serving == 2
    fc.queued = 1  # as while requests wait in the picker (the pool saturated): only where there is room
    assert [e.address for e in fc.room(gen, eps, "llama")[0]] == [B]
    fc.queued = 0
    fc.counts[A] = [a.scraped, 2, 0]  # A at its safety limit (1 * 2): only B
    assert [e.address for e in fc.room(gen, eps, "llama")[0]] == [B]
    fc.counts[B] = [b.scraped, 1, 0]  # nobody has room: the request waits
    assert fc.room(gen, eps, "llama")[0] == []


def test_batch_capacity_detector_filters_only_queueing_endpoints_past_their_headroom():
    svc, _, _ = make(n=2, detector={"type": "batch-capacity-detector", "parameters": {"headroom": 0.5}})
    gen, fc = svc.pool.gen, svc.flow
    a, b = svc.pool.endpoints[A], svc.pool.endpoints[B]
    det = gen.scheduler.flow_detector
    # A: 8 running and no queue — its batch may be bigger: never filtered on the count
    a.scraped = a.metrics = ServerMetrics(running=8.0, waiting=0.0, kv_usage=0.3, engine="vllm")
    b.scraped = b.metrics = ServerMetrics(running=0.0, waiting=0.0, kv_usage=0.0, engine="vllm")
    fc.counts[A] = [a.scraped, 20, 0]
    assert det.admits(a, fc.load(a), True)
    # queueing at 8: filtered from 8 * 1.5 = 12 in flight on
    a.scraped = a.metrics = ServerMetrics(running=8.0, waiting=3.0, kv_usage=0.3, engine="vllm")
    assert fc.load(a) == 11
    assert det.admits(a, 11, True) and not det.admits(a, 12, True)
    room, _ = fc.room(gen, [a, b], "llama")
    assert [e.address for e in room] == [A, B]  # load 11 < 12: still a candidate beside B
    fc.counts[A] = [a.scraped, 1, 0]  # 12 in flight
    assert [e.address for e in fc.room(gen, [a, b], "llama")[0]] == [B]
    # KV past min(1, kvCacheUtilThreshold * (1 + headroom)): filtered whatever the count
    svc2, _, _ = make(detector={"type": "batch-capacity-detector",
                                "parameters": {"headroom": 0.1, "kvCacheUtilThreshold": 0.8}})
    a2 = svc2.pool.endpoints[A]
    det2 = svc2.pool.gen.scheduler.flow_detector
    a2.scraped = a2.metrics = ServerMetrics(running=1.0, waiting=0.0, kv_usage=0.87, engine="vllm")
    assert det2.admits(a2, 1, True)
    a2.scraped = a2.metrics = ServerMetrics(running=1.0, waiting=0.0, kv_usage=0.9, engine="vllm")
    assert not det2.admits(a2, 1, True)


def test_while_requests_wait_an_endpoint_gets_one_dispatch_per_poll():
    """maxUnconfirmed (default: batch size / 8, here 1): a poll that shows several free slots does
    not get them all filled at once while requests wait; the next poll lets the next one go."""
    svc, _, _ = make(detector={"type": "batch-capacity-detector", "parameters": {"maxConcurrency": 8}})
    svc.flow.saw(-1)  # Sheddable traffic too
    e = svc.pool.endpoints[A]
    e.scraped = e.metrics = ServerMetrics(running=8.0, engine="vllm")
    waiting = [Delivered(send(svc, "chat")[1]) for _ in range(3)]
    e.scraped = e.metrics = ServerMetrics(running=5.0, engine="vllm")  # three slots free at once
    svc.flow.run()
    assert [w.answers is not None for w in waiting] == [True, False, False]
    svc.flow.run()
    assert waiting[1].answers is None  # no new poll yet
    e.scraped = e.metrics = ServerMetrics(running=6.0, engine="vllm")  # it saw that one arrive
    svc.flow.run()
    assert [w.answers is not None for w in waiting] == [True, True, False]
    # off (0): every free slot at once
    svc2, _, _ = make(detector={"type": "batch-capacity-detector",
                                "parameters": {"maxConcurrency": 8, "maxUnconfirmed": 0}})
    svc2.flow.saw(-1)
    e2 = svc2.pool.endpoints[A]
    e2.scraped = e2.metrics = ServerMetrics(running=8.0, engine="vllm")
    waiting2 = [Delivered(send(svc2, "chat")[1]) for _ in range(3)]
    e2.scraped = e2.metrics = ServerMetrics(running=5.0, engine="vllm")
    svc2.flow.run()
    assert all(w.answers is not None for w in waiting2)
    # a batch of 16: two per poll
    svc3, _, _ = make(detector={"type": "batch-capacity-detector", "parameters": {"maxConcurrency": 16}})
    svc3.flow.saw(-1)
    e3 = svc3.pool.endpoints[A]
    e3.scraped = e3.metrics = ServerMetrics(running=16.0, engine="vllm")
    waiting3 = [Delivered(send(svc3, "chat")[1]) for _ in range(3)]
    e3.scraped = e3.metrics = ServerMetrics(running=12.0, engine="vllm")
    svc3.flow.run()
    assert [w.answers is not None for w in waiting3] == [True, True, False]


def test_with_one_priority_in_use_requests_wait_only_past_the_safety_limit():
    """Holding them here would reorder nothing, and a server's queue lets it batch prefills: with
    one priority in the last MIXED_WINDOW seconds, room is the scheduling filter's (a queueing
    endpoint past its batch size x 1.5); once another priority arrives, the detector's."""
    from infershift.picker.flowcontrol import MIXED_WINDOW

    svc, _, clock = make(detector={"type": "batch-capacity-detector"})
    e = svc.pool.endpoints[A]
    e.scraped = e.metrics = ServerMetrics(running=8.0, waiting=2.0, kv_usage=0.3, engine="vllm")
    sent = [send(svc, "chat")[1] for _ in range(2)]  # 10, 11 in flight: past 8, short of 12
    assert not any(isinstance(r, Pending) for r in sent)
    _, r = send(svc, "chat")
    assert isinstance(r, Pending)  # 12 = 8 * 1.5: past the safety limit, it waits
    w = Delivered(r)
    e.scraped = e.metrics = ServerMetrics(running=8.0, waiting=1.0, kv_usage=0.3, engine="vllm")
    svc.flow.run()
    assert dest(w.answers) == A
    # a Sheddable request now: two priorities in use, the detector's room (past 8 with a queue: none)
    _, b = send(svc, "batch")
    assert isinstance(b, Pending)
    # ten seconds later only Critical is in use again
    Delivered(b)
    clock.t += MIXED_WINDOW + 1
    e.scraped = e.metrics = ServerMetrics(running=8.0, waiting=1.0, kv_usage=0.3, engine="vllm")
    e.last_ok = clock.t
    svc.flow.saw(1)
    assert not svc.flow.mixed(clock.t)

