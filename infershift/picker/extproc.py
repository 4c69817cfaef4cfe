"""The Envoy ext_proc servicer: the endpoint-picker protocol over a per-request gRPC stream."""
from __future__ import annotations

import logging
import time
import uuid

from envoy.config.core.v3 import base_pb2
from envoy.extensions.filters.http.ext_proc.v3 import processing_mode_pb2 as pm
from envoy.service.ext_proc.v3 import external_processor_pb2 as pb
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as pb_grpc
from envoy.type.v3 import http_status_pb2
from google.protobuf import duration_pb2, struct_pb2

from infershift import contract

from . import answers, restore_header
from .decide import Decision, candidates, decide, prepare
from .ejection import Ejector
from .envoy_config import BIG_BODY_BYTES, HANDOVER_KEY, HANDOVER_NS, RESTORE_HEADER, UPLOAD_TIMEOUT_S
from .errors import BodyTooLarge, PickerError
from .flowcontrol import FlowController, Pending
from .pool import Pool
from .response_body import SSERestorer, restore_json
from .telemetry import RequestLabels, Telemetry, UsageReader, priority_of

log = logging.getLogger("picker.extproc")

DEST, SERVED = contract.DESTINATION_HEADER, contract.DESTINATION_SERVED_HEADER
SUBSET_NS, SUBSET_KEY = contract.SUBSET_NAMESPACE, contract.SUBSET_KEY
LB_NS = "envoy.lb"
TARGET_HEADER = contract.TARGET_HEADER
FULL_DUPLEX = pm.ProcessingMode.FULL_DUPLEX_STREAMED
STREAMED = pm.ProcessingMode.STREAMED
ATTRS_NS = "envoy.filters.http.ext_proc"
OVERWRITE = base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD


def _header(key: str, value: str) -> base_pb2.HeaderValueOption:
    return base_pb2.HeaderValueOption(header=base_pb2.HeaderValue(key=key, raw_value=value.encode()),
                                      append_action=OVERWRITE)


def _headers_dict(hm) -> dict[str, str]:
    # raw_value is what Envoy sends; an empty one falls back to the legacy string field
    return {h.key: h.raw_value.decode("utf-8", "replace") or h.value for h in hm.headers}


def _lb_metadata(dest: str) -> struct_pb2.Struct:
    """The destination as dynamic metadata (envoy.lb), the protocol's second channel beside the header."""
    md = struct_pb2.Struct()
    md.get_or_create_struct(LB_NS)[DEST] = dest
    return md


def _metadata_value(md, ns: str, key: str):
    s = md.filter_metadata.get(ns)
    if s is None or key not in s.fields:
        return None
    v = s.fields[key]
    kind = v.WhichOneof("kind")
    if kind == "string_value":
        return v.string_value
    if kind == "list_value":
        return [x.string_value for x in v.list_value.values if x.WhichOneof("kind") == "string_value"]
    return None


def _served_from(msg) -> str | None:
    served = _metadata_value(msg.metadata_context, LB_NS, SERVED)
    if isinstance(served, str) and served:
        return served
    attrs = msg.attributes.get(ATTRS_NS)
    if attrs is not None and "upstream.address" in attrs.fields:
        return attrs.fields["upstream.address"].string_value or None
    return None


INTERNAL_ERROR = "picker_internal_error"
# 429 (shed) and 503 (no ready endpoint) are worth retrying: say when (the OpenAI SDK honours it).
RETRY_AFTER_SECONDS = "1"


def _error_response(err: PickerError, request_id: str) -> pb.ProcessingResponse:
    headers = [_header("content-type", "application/json"), _header("x-request-id", request_id)]
    if err.status in (429, 503):
        headers.append(_header("retry-after", RETRY_AFTER_SECONDS))
    return pb.ProcessingResponse(immediate_response=pb.ImmediateResponse(
        status=http_status_pb2.HttpStatus(code=err.status),
        headers=pb.HeaderMutation(set_headers=headers),
        body=err.body(),
        details=f"picker_{err.code}",
    ))


class RequestState:
    __slots__ = ("headers", "request_id", "new_request_id", "start", "decision", "full_duplex", "chunks",
                 "status", "ttfb", "sse", "restore", "done", "outcome", "served", "resp_duplex",
                 "held_headers", "resp_chunks", "hold", "target", "client", "picked", "labels", "usage",
                 "first_byte", "resp_len", "streaming", "flow_item", "shadow")

    def __init__(self):
        self.headers: dict[str, str] = {}
        self.request_id = ""
        self.new_request_id = False
        self.start = 0.0
        self.decision: Decision | None = None
        self.full_duplex = False
        self.chunks: list[bytes] = []
        self.status = 0
        self.ttfb = None
        self.sse: SSERestorer | None = None
        self.restore = False
        self.done = False
        self.outcome = "unknown"
        self.served = None
        self.resp_duplex = False
        self.held_headers = None  # full-duplex JSON rewrite: header response sent with the final body
        self.resp_chunks: list[bytes] = []
        # one round trip: the headers are answered with the body (STREAMED, sent without waiting)
        self.hold = False
        self.target: str | None = None  # target and client model, picked endpoint: from the decision,
        self.client: str | None = None  # or on a response-path stream from the restore header
        self.picked: str | None = None
        # telemetry: upstream metric labels, and what the response body showed (UsageReader)
        self.labels: RequestLabels | None = None
        self.usage: UsageReader | None = None
        self.first_byte: float | None = None
        self.resp_len: int | None = None
        self.streaming = False
        self.flow_item = None  # flowcontrol.Item while the request waits in the picker
        # the answer log (config answerLog, answers.py): None while it is off; on, whether the
        # request is a mirrored copy (its host ends in -shadow)
        self.shadow: bool | None = None


class ExtProc(pb_grpc.ExternalProcessorServicer):
    def __init__(self, pool: Pool, telemetry: Telemetry, clock=time.perf_counter, wall=time.time):
        self.pool = pool
        self.tm = telemetry
        self.clock = clock
        self.wall = wall  # crosses streams (and replicas) in the restore header
        self.ejector = Ejector()  # endpoints whose requests fail leave the candidate set (ejection.py)
        self.flow = FlowController(pool, telemetry)  # requests wait here by priority (flowcontrol.py)
        # The common answer (one-round-trip setup, model passed through, nothing sampled) depends only
        # on the destination and the chunk count: built once, shared (transports only serialize it).
        self._plain_answers: dict[tuple[str, int], list] = {}

    async def Process(self, request_iterator, context):
        """grpc.aio / grpclib entry point; h2_server calls new_state, handle and finish itself."""
        st = RequestState()
        try:
            async for msg in request_iterator:
                answers = self.handle(st, msg)
                if answers.__class__ is Pending:  # waits in flow control: send what goes now, then the rest
                    for r in answers:
                        yield r
                    answers = await answers.wait()
                for r in answers:
                    yield r
        except Exception:
            # A bug must not go unnoticed: Envoy applies the pool's failure mode to the broken stream.
            log.exception("ext_proc stream failed", extra={"request_id": st.request_id})
            raise
        finally:
            self.finish(st)

    @staticmethod
    def new_state() -> RequestState:
        return RequestState()

    def handle(self, st: RequestState, msg) -> list:
        """One ProcessingRequest in, the answers to send back (in order) out. Never raises: a broken
        stream would let Envoy apply the pool's failure mode, and FailOpen would send the request on
        unvalidated and unscheduled (issue 13)."""
        kind = msg.WhichOneof("request")
        try:
            if kind == "request_headers":
                return self._on_request_headers(st, msg)
            if kind == "request_body":
                return self._on_request_body(st, msg)
            if kind == "response_headers":
                return self._on_response_headers(st, msg)
            if kind == "response_body":
                return self._on_response_body(st, msg)
            if kind == "request_trailers":
                return [pb.ProcessingResponse(request_trailers=pb.TrailersResponse())]
            if kind == "response_trailers":
                return [pb.ProcessingResponse(response_trailers=pb.TrailersResponse())]
            return []
        except Exception:
            return self._internal_error(st, kind, msg)

    def _internal_error(self, st: RequestState, kind: str | None, msg) -> list:
        """A bug on one request: logged with its traceback; on the request path it gets a 500 in the
        API's error shape (the stream stays healthy), on the response path the response passes on."""
        log.exception("picker error on a request", extra={"request_id": st.request_id, "phase": kind})
        try:
            self.tm.errors.labels(self.pool.gen.config.pool_name, "500", INTERNAL_ERROR).inc()
        except Exception:  # telemetry must not turn one error into a broken stream
            pass
        if kind == "response_headers":
            return [pb.ProcessingResponse(response_headers=pb.HeadersResponse())]
        if kind == "response_body":
            b = msg.response_body
            if st.resp_duplex:
                return [pb.ProcessingResponse(response_body=pb.BodyResponse(response=pb.CommonResponse(
                    body_mutation=pb.BodyMutation(streamed_response=pb.StreamedBodyResponse(
                        body=b.body, end_of_stream=b.end_of_stream)))))]
            return [pb.ProcessingResponse(response_body=pb.BodyResponse())]
        if kind == "response_trailers":
            return [pb.ProcessingResponse(response_trailers=pb.TrailersResponse())]
        st.done, st.outcome = True, "500"
        err = PickerError("The endpoint picker failed on this request.", code=INTERNAL_ERROR)
        return [_error_response(err, st.request_id or str(uuid.uuid4()))]

    # --- request path -------------------------------------------------------------------------

    def _on_request_headers(self, st: RequestState, msg) -> list:
        st.start = self.clock()
        st.headers = _headers_dict(msg.request_headers.headers)
        rid = st.headers.get("x-request-id")
        if not rid:
            rid, st.new_request_id = str(uuid.uuid4()), True
        st.request_id = rid
        pc = msg.protocol_config
        st.full_duplex = pc.request_body_mode == FULL_DUPLEX
        st.resp_duplex = pc.response_body_mode == FULL_DUPLEX
        st.hold = pc.request_body_mode == STREAMED and pc.send_body_without_waiting_for_header_response
        if msg.request_headers.end_of_stream:  # no body: any ready endpoint will do
            return self._route(st, None, msg)
        if st.hold and not _small_body(st.headers):
            # the headers' answer waits for the whole body: let a big upload take longer than message_timeout
            return [pb.ProcessingResponse(override_message_timeout=duration_pb2.Duration(seconds=UPLOAD_TIMEOUT_S))]
        if st.full_duplex or st.hold:
            return []  # the header response waits until the whole body has been seen
        muts = [_header("x-request-id", rid)] if st.new_request_id else []
        return [pb.ProcessingResponse(request_headers=pb.HeadersResponse(
            response=pb.CommonResponse(header_mutation=pb.HeaderMutation(set_headers=muts))))]

    def _on_request_body(self, st: RequestState, msg) -> list:
        if st.hold and st.done:  # answered early (413): Envoy may still be sending chunks
            return [pb.ProcessingResponse(request_body=pb.BodyResponse())]
        st.chunks.append(msg.request_body.body)
        if st.hold and not msg.request_body.end_of_stream:
            limit = self.pool.gen.config.max_body_bytes
            size = sum(len(c) for c in st.chunks)
            if size > limit:  # don't keep an oversize body in memory
                st.done, st.outcome = True, "413"
                return [self._reject(st, BodyTooLarge(
                    f"Request body is over {size} bytes; the limit is {limit} bytes."), None)]
            return []
        if not msg.request_body.end_of_stream:
            if st.full_duplex:
                limit = self.pool.gen.config.max_body_bytes
                if sum(len(c) for c in st.chunks) > limit:  # don't keep buffering an oversize body
                    return self._route(st, b"".join(st.chunks), msg)
            return []
        chunks, st.chunks = st.chunks, []
        body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        return self._route(st, body, msg, chunks)

    def _reject(self, st: RequestState, e: PickerError, body: bytes | None) -> pb.ProcessingResponse:
        pool_name = self.pool.gen.config.pool_name
        self.tm.errors.labels(pool_name, str(e.status), e.code or "").inc()
        model = "" if body is None else self._model_label(_model_guess(body), self.pool.gen)
        if e.status == 429:
            self.tm.shed.labels(pool_name, model).inc()
        self.tm.requests.labels(pool_name, model, "", "", str(e.status)).inc()
        self.tm.request_error(self.pool.gen.config, model, e.status, st.headers)
        if self.pool.gen.config.answer_log is not None:
            answers.emit(pool=pool_name, request_id=st.request_id, model=model or None, target=None,
                         shadow=answers.is_shadow(st.headers), status=e.status, ttft=None,
                         e2e=self.clock() - st.start if st.start else None, reader=None, streaming=False,
                         endpoint=None, max_chars=0)
        log.info("request rejected", extra={"request_id": st.request_id, "status": e.status,
                                            "code": e.code, "error": e.message})
        return _error_response(e, st.request_id)

    def _route(self, st: RequestState, body: bytes | None, msg, chunks: list[bytes] | None = None) -> list:
        t0 = self.clock()
        gen = self.pool.gen  # one generation for the whole decision, even if a reload lands meanwhile
        pool_name = gen.config.pool_name
        subset = _metadata_value(msg.metadata_context, SUBSET_NS, SUBSET_KEY)
        if isinstance(subset, str):
            subset = [s for s in subset.split(",") if s]
        if self.ejector.until:
            subset = self.ejector.narrow(subset, self.pool.endpoints)
        flow = self.flow.spec_of(gen)
        try:
            pre, room = None, None
            if flow is not None and body is not None:
                pre = prepare(self.pool, gen, st.headers, body)
                if pre is not None:
                    room = self._admit(st, gen, flow, pre, subset, body, msg, chunks, t0)
                    if room.__class__ is Pending:
                        return room
            d = decide(self.pool, gen, st.headers, body, subset, pre, room)
            if self.pool.lora.rules:  # on-demand LoRA: 503 adapter_loading while the picker loads it there
                self.pool.lora.before_route(d.target_model, d.endpoints[0])
        except PickerError as e:
            self.tm.decided(pool_name, self.clock() - t0)
            st.done, st.outcome = True, str(e.status)
            return [self._reject(st, e, body)]
        self.tm.decided(pool_name, self.clock() - t0)
        return self._answer(st, d, gen, body, chunks)

    def _admit(self, st: RequestState, gen, flow, pre, subset, body: bytes, msg, chunks, t0: float):
        """Flow control on arrival: the endpoints with room (None: all of them), or a Pending answer
        while the request waits in its priority band (flowcontrol.py)."""
        fc = self.flow
        parsed, routed = pre
        target = routed.target_model
        eps = candidates(self.pool, subset)
        prio = priority_of(gen.config, routed.client_model, st.headers)
        fc.saw(prio)
        if not fc.waiting_at_or_above(prio):
            room, serving = fc.room(gen, eps, target)
            if room:
                return None if len(room) == serving else room
            if not serving and not flow.no_endpoint_ttl:
                return None  # no endpoint for it at all: decide() answers 503 now
        else:
            serving = sum(1 for e in eps if e.can_serve(target))
        labels = self.tm.labels_for(gen.config, routed.client_model, target, st.headers)

        def dispatch(room: list) -> list:
            t1 = self.clock()
            try:
                d = decide(self.pool, self.pool.gen, st.headers, body, subset, pre, room)
                if self.pool.lora.rules:
                    self.pool.lora.before_route(d.target_model, d.endpoints[0])
            except PickerError as e:
                return reject(e)
            self.tm.decided(gen.config.pool_name, self.clock() - t1)
            return self._answer(st, d, gen, body, chunks)

        def reject(e: PickerError) -> list:
            st.done, st.outcome = True, str(e.status)
            return [self._reject(st, e, body)]

        item = fc.enqueue(gen, st, prio, routed.fairness_id, len(body), target, subset, labels, dispatch, reject,
                          no_endpoints=not serving)
        st.flow_item = item
        ttl = flow.no_endpoint_ttl if not serving and flow.no_endpoint_ttl else flow.ttl
        # the gateway waits for this answer: longer than its message timeout (up to its max_message_timeout)
        item.pending.append(pb.ProcessingResponse(override_message_timeout=duration_pb2.Duration(
            seconds=min(int(ttl) + 1, UPLOAD_TIMEOUT_S))))
        return item.pending

    def _answer(self, st: RequestState, d: Decision, gen, body: bytes | None, chunks: list[bytes] | None) -> list:
        """The answers for a decided request (routed now, or dispatched by flow control)."""
        pool_name = gen.config.pool_name
        flow_on = self.flow.spec_of(gen) is not None
        if flow_on and d.target_model:
            self.flow.sent(d.endpoints[0])
        st.decision = d
        st.outcome = "routed"
        st.target, st.client, st.picked = d.target_model, d.client_model, d.endpoints[0].address
        st.labels = self.tm.labels_for(gen.config, d.client_model, d.target_model, st.headers)
        record = gen.config.answer_log is not None  # the answer log: every answer comes back to be logged
        if record:
            st.shadow = answers.is_shadow(st.headers)
        dest = d.destination
        handover = False
        if st.hold:
            # Responses skip this stream; the response filter runs only if this header is set.
            st.done = True
            # under flow control every response comes back: its end frees the endpoint's slot
            handover = d.target_model and (d.target_model != d.client_model or flow_on or record
                                           or self.pool.rng.random() < gen.config.response_sample_rate)
            if (body is not None and not handover and not d.rewritten and not st.new_request_id
                    and RESTORE_HEADER not in st.headers):
                self._count_routed(pool_name, d, st, dest, body, False)
                return self._plain(dest, len(chunks) if chunks else 1)
        muts = [_header(DEST, dest)]
        if st.new_request_id:
            muts.append(_header("x-request-id", st.request_id))
        if d.rewritten:
            muts.append(_header("content-length", str(d.body_length)))
        md = _lb_metadata(dest)
        if handover:
            muts.append(_header(RESTORE_HEADER, "1"))
            md.get_or_create_struct(HANDOVER_NS)[HANDOVER_KEY] = restore_header.encode(restore_header.Handover(
                d.target_model, d.client_model or d.target_model, st.picked, self.wall(), st.labels.priority,
                st.labels.fairness, st.request_id, st.shadow))
        # the response comes back to the picker: on a response-path stream (hand-over), or on this one
        self._count_routed(pool_name, d, st, dest, body, bool(handover) or (not st.hold and bool(d.target_model)))
        common = pb.CommonResponse(header_mutation=pb.HeaderMutation(set_headers=muts))
        if st.hold and not handover and RESTORE_HEADER in st.headers:
            common.header_mutation.remove_headers.append(RESTORE_HEADER)  # a client's own: no response stream
        if body is None:
            return [pb.ProcessingResponse(request_headers=pb.HeadersResponse(response=common), dynamic_metadata=md)]
        if st.hold:
            return [pb.ProcessingResponse(request_headers=pb.HeadersResponse(response=common), dynamic_metadata=md),
                    *_streamed_body_answers(chunks or [body], d)]
        new_body = d.body if d.body is not None else body
        if st.full_duplex:
            return [
                pb.ProcessingResponse(request_headers=pb.HeadersResponse(response=common), dynamic_metadata=md),
                pb.ProcessingResponse(request_body=pb.BodyResponse(response=pb.CommonResponse(
                    body_mutation=pb.BodyMutation(streamed_response=pb.StreamedBodyResponse(
                        body=new_body, end_of_stream=True))))),
            ]
        if d.body is not None:
            common.body_mutation.body = d.body
        return [pb.ProcessingResponse(request_body=pb.BodyResponse(response=common), dynamic_metadata=md)]

    def _count_routed(self, pool_name: str, d: Decision, st: RequestState, dest: str, body: bytes | None,
                      comes_back: bool) -> None:
        self.tm.child(self.tm.requests, pool_name, d.client_model or "", d.target_model or "",
                      d.endpoints[0].address, "routed").inc()
        self.tm.request_routed(st.labels, len(body) if body else 0, st.request_id if comes_back else None)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("routed", extra={"request_id": st.request_id, "model": d.client_model,
                                       "target_model": d.target_model, "endpoint": dest})

    def _plain(self, dest: str, n_chunks: int) -> list:
        key = (dest, n_chunks)
        answers = self._plain_answers.get(key)
        if answers is None:
            if len(self._plain_answers) >= 1024:  # fallback lists can make many destinations
                self._plain_answers.clear()
            md = _lb_metadata(dest)
            common = pb.CommonResponse(header_mutation=pb.HeaderMutation(set_headers=[_header(DEST, dest)]))
            answers = self._plain_answers[key] = [
                pb.ProcessingResponse(request_headers=pb.HeadersResponse(response=common), dynamic_metadata=md),
                *(pb.ProcessingResponse(request_body=pb.BodyResponse()) for _ in range(n_chunks))]
        return answers

    def _model_label(self, model: str, gen) -> str:
        """Client-supplied names become metric labels only if the pool knows them (bounded cardinality)."""
        if not model or model in gen.config.models:
            return model
        known = any(e.can_serve(model) and e.models() is not None for e in self.pool.endpoints.values())
        return model if known else "other"

    # --- response path ------------------------------------------------------------------------

    def _on_response_headers(self, st: RequestState, msg) -> list:
        now = self.clock()
        if st.decision is None and st.target is None:
            self._adopt_handover(st, msg, now)
        st.ttfb = now - st.start if st.start else None
        h = _headers_dict(msg.response_headers.headers)
        try:
            st.status = int(h.get(":status", "0"))
        except ValueError:
            st.status = 0
        st.served = _served_from(msg)
        self._track(st, msg)
        muts = []
        resp = pb.ProcessingResponse()
        if st.target:
            muts.append(_header(TARGET_HEADER, st.target))
            ctype = h.get("content-type", "")
            if not msg.response_headers.end_of_stream:
                # telemetry reads the body as it passes (size, token usage, first byte): STREAMED, so
                # nothing is buffered for it; restoring a JSON body below needs BUFFERED instead
                st.streaming = ctype.startswith("text/event-stream")
                if st.streaming or "json" in ctype:
                    st.usage = UsageReader() if st.shadow is None else answers.AnswerReader()
                    if not st.resp_duplex:
                        resp.mode_override.response_body_mode = pm.ProcessingMode.STREAMED
            cl = h.get("content-length")
            st.resp_len = int(cl) if cl and cl.isdigit() else None
            if (st.client and st.target != st.client and not msg.response_headers.end_of_stream
                    and self.pool.gen.config.response_model == "client"):
                if ctype.startswith("text/event-stream"):
                    st.sse = SSERestorer(st.target, st.client)
                    if not st.resp_duplex:
                        resp.mode_override.response_body_mode = pm.ProcessingMode.STREAMED
                elif "json" in ctype:
                    st.restore = True
                    if not st.resp_duplex:
                        resp.mode_override.response_body_mode = pm.ProcessingMode.BUFFERED
        resp.response_headers.response.header_mutation.set_headers.extend(muts)
        if st.resp_duplex and st.restore:
            st.held_headers = resp  # content-length is known only once the whole body is in
            return []
        return [resp]

    def _track(self, st: RequestState, msg) -> None:
        """Error tracking from the response path: a 5xx counts against the endpoint that served it,
        a response served elsewhere than picked (the gateway retried) against the picked one."""
        picked = _metadata_value(msg.metadata_context, LB_NS, DEST)
        if isinstance(picked, list):
            picked = ",".join(picked)
        first = (picked or st.picked or "").split(",")[0].strip()
        served = st.served
        if served:
            if st.status >= 500:
                self.ejector.failure(served)
            else:
                self.ejector.success(served)
        if first and served and first != served:
            self.ejector.failure(first)

    def _adopt_handover(self, st: RequestState, msg, now: float) -> None:
        """A response-path stream: what the request-path stream decided comes in the restore header."""
        raw = _metadata_value(msg.metadata_context, HANDOVER_NS, HANDOVER_KEY)
        h = restore_header.decode(raw) if isinstance(raw, str) and raw else None
        if h is None:
            log.debug("response stream without a hand-over", extra={"metadata": str(msg.metadata_context)[:300]})
            return
        st.target, st.client, st.picked = h.target_model, h.client_model, h.picked
        st.labels = self.tm.handover_labels(h.client_model, h.target_model, h.priority, h.fairness)
        st.request_id = h.request_id or st.request_id
        st.shadow = h.shadow
        st.start = now - max(0.0, self.wall() - h.started)  # on this process's clock
        st.outcome = "routed"

    def _on_response_body(self, st: RequestState, msg) -> list:
        b = msg.response_body
        if st.usage is not None and b.body:
            if st.first_byte is None:
                st.first_byte = self.clock() - st.start if st.start else None
            st.usage.feed(b.body)
        if st.resp_duplex:
            return self._on_response_body_duplex(st, b)
        common = pb.CommonResponse()
        if st.sse is not None:
            common.body_mutation.body = st.sse.feed(b.body, b.end_of_stream)
        elif st.restore:
            new = restore_json(b.body, st.target, st.client)
            if new != b.body:
                common.body_mutation.body = new
                common.header_mutation.set_headers.append(_header("content-length", str(len(new))))
        if b.end_of_stream:
            self.finish(st)
        return [pb.ProcessingResponse(response_body=pb.BodyResponse(response=common))]

    def _on_response_body_duplex(self, st: RequestState, b) -> list:
        """FULL_DUPLEX_STREAMED: every chunk must be answered with the bytes to send on."""
        out = []
        if st.restore:
            st.resp_chunks.append(b.body)
            if not b.end_of_stream:
                return []
            data = restore_json(b"".join(st.resp_chunks), st.target, st.client)
            st.resp_chunks = []
            held = st.held_headers
            if held is not None:
                held.response_headers.response.header_mutation.set_headers.append(
                    _header("content-length", str(len(data))))
                out.append(held)
                st.held_headers = None
        elif st.sse is not None:
            data = st.sse.feed(b.body, b.end_of_stream)
        else:
            data = b.body
        out.append(pb.ProcessingResponse(response_body=pb.BodyResponse(response=pb.CommonResponse(
            body_mutation=pb.BodyMutation(streamed_response=pb.StreamedBodyResponse(
                body=data, end_of_stream=b.end_of_stream))))))
        if b.end_of_stream:
            self.finish(st)
        return out

    def finish(self, st: RequestState) -> None:
        if st.done:
            return
        st.done = True
        item = st.flow_item
        if item is not None and not item.done:  # it was still waiting in flow control
            self.flow.cancel(item)
            return
        if not st.target:
            return
        if st.picked and self.flow.counts:
            self.flow.finished(st.picked.split(",")[0])
        pool_name = self.pool.gen.config.pool_name
        tm = self.tm
        u = st.usage
        labels = st.labels or RequestLabels(st.client or st.target, st.target)
        total = self.clock() - st.start if st.start else None
        tm.response_done(pool_name, labels, st.status, st.ttfb, st.first_byte, total,
                         u.size if u is not None and u.chunks else st.resp_len, u.usage if u is not None else None,
                         st.streaming, st.request_id or None)
        if st.shadow is not None:
            spec = self.pool.gen.config.answer_log
            answers.emit(pool=pool_name, request_id=st.request_id, model=st.client, target=st.target,
                         shadow=st.shadow, status=st.status,
                         ttft=st.first_byte if st.first_byte is not None else st.ttfb, e2e=total, reader=u,
                         streaming=st.streaming, endpoint=st.served or st.picked,
                         max_chars=spec.max_text_chars if spec is not None else 2000)
        if st.served:
            picked = st.served == st.picked
            tm.child(tm.served, pool_name, st.served, "true" if picked else "false").inc()
            if not picked:  # Envoy fell back (or ignored the pick): worth a line in the logs
                log.info("served by another endpoint than picked", extra={
                    "request_id": st.request_id, "picked": st.picked, "served": st.served})


def _small_body(headers: dict[str, str]) -> bool:
    try:
        return int(headers.get("content-length", "")) <= BIG_BODY_BYTES
    except ValueError:
        return False  # chunked upload: size unknown


def _streamed_body_answers(chunks: list[bytes], d: Decision) -> list[pb.ProcessingResponse]:
    """STREAMED mode wants one answer per chunk, in order. Unchanged chunks get an empty answer; a
    rewritten `model` replaces only the chunk that holds it (a 220 KB prompt is not sent back)."""
    out = [pb.ProcessingResponse(request_body=pb.BodyResponse()) for _ in chunks]
    if not d.rewritten:
        return out
    which, off = None, 0
    if d.splice is not None:
        start, end, repl = d.splice
        for i, c in enumerate(chunks):
            if off <= start and end <= off + len(c):
                which = i
                break
            off += len(c)
    if which is not None:
        c = chunks[which]
        out[which].request_body.response.body_mutation.body = c[:start - off] + repl + c[end - off:]
        return out
    out[0].request_body.response.body_mutation.body = d.body  # re-encoded: all of it in the first chunk
    for r in out[1:]:
        r.request_body.response.body_mutation.clear_body = True
    return out


def _model_guess(body: bytes) -> str:
    """Best-effort model label for a rejected request (never raises)."""
    import json

    try:
        m = json.loads(body).get("model")
        return m if isinstance(m, str) and len(m) < 200 else ""
    except Exception:
        return ""
