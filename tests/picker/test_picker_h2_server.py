"""Protocol tests for the picker's own HTTP/2 gRPC server (picker/h2_server.py), against independent
peers over real loopback sockets: grpcio as the gRPC client, and the `h2` library (python-hyper) as
the HTTP/2 client. Frames h2 will not produce (padding on HEADERS, CONTINUATION, protocol errors,
anything after a GOAWAY, which h2 takes as the end of the connection) are written by hand here.
Every test runs twice: over h2c and over TLS (the server's own memory-BIO TLS, the default in the
picker), with the clients verifying its certificate."""
from __future__ import annotations

import asyncio
import hashlib
import random
import ssl
import struct
import time
from typing import NamedTuple

import grpc
import hpack
import pytest
from envoy.config.core.v3 import base_pb2
from envoy.service.ext_proc.v3 import external_processor_pb2 as pb
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as pb_grpc
from h2 import events as ev
from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.settings import SettingCodes

from infershift.picker import h2_server
from infershift.picker.h2_server import ExtProcServer
from infershift.picker.tls import ServerTLS

PROCESS = "/envoy.service.ext_proc.v3.ExternalProcessor/Process"
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
# RFC 9113 section 6 frame types and flags, section 7 error codes
DATA, HEADERS, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = 0, 1, 3, 4, 5, 6, 7, 8, 9
END_STREAM, ACK, END_HEADERS, PADDED, PRIORITY_FLAG = 0x1, 0x1, 0x4, 0x8, 0x20
NO_ERROR, PROTOCOL_ERROR, FRAME_SIZE_ERROR, REFUSED_STREAM, COMPRESSION_ERROR = 0x0, 0x1, 0x6, 0x7, 0x9

REQUEST_HEADERS = [(":method", "POST"), (":scheme", "http"), (":path", PROCESS), (":authority", "picker"),
                   ("content-type", "application/grpc"), ("te", "trailers")]


def frame(ftype: int, flags: int, sid: int, payload: bytes = b"") -> bytes:
    """RFC 9113 4.1: 24-bit length, type, flags, reserved bit + 31-bit stream id, payload."""
    return len(payload).to_bytes(3, "big") + bytes([ftype, flags]) + sid.to_bytes(4, "big") + payload


def grpc_frame(msg) -> bytes:
    """gRPC length-prefixed message (uncompressed) around a protobuf or raw bytes."""
    raw = msg if isinstance(msg, bytes) else msg.SerializeToString()
    return b"\0" + struct.pack(">I", len(raw)) + raw


def headers_msg(tag: str) -> pb.ProcessingRequest:
    hm = base_pb2.HeaderMap(headers=[base_pb2.HeaderValue(key="x-tag", raw_value=tag.encode())])
    return pb.ProcessingRequest(request_headers=pb.HttpHeaders(headers=hm))


def body_msg(body: bytes, end: bool = True) -> pb.ProcessingRequest:
    return pb.ProcessingRequest(request_body=pb.HttpBody(body=body, end_of_stream=end))


def seen_tag(answer: pb.ProcessingResponse) -> bytes:
    return answer.request_headers.response.header_mutation.set_headers[0].header.raw_value


def echoed(answer: pb.ProcessingResponse) -> bytes:
    return answer.request_body.response.body_mutation.body


def payload_bytes(n: int, seed: int = 1) -> bytes:
    return random.Random(seed).randbytes(n)  # not repetitive: a misplaced chunk cannot go unnoticed


# --- the servicer: the server's collaborator -----------------------------------------------------

class State:
    def __init__(self):
        self.kinds: list[str] = []
        self.bodies: list[bytes] = []
        self.done = False
        self.finished = 0
        self.request_id = ""


class Recorder:
    """Answers each message with something derived from it (the header tag, the body echoed or its
    sha256), so which answer reached which stream is checkable; records every stream's life. A tag
    or body b"done" ends the stream early (state.done), a body b"raise" makes handle() fail."""

    def __init__(self, echo: bool = True):
        self.echo = echo
        self.states: list[State] = []

    def new_state(self) -> State:
        st = State()
        self.states.append(st)
        return st

    def handle(self, st: State, msg: pb.ProcessingRequest) -> list[pb.ProcessingResponse]:
        kind = msg.WhichOneof("request")
        st.kinds.append(kind)
        if kind == "request_headers":
            tag = next(h.raw_value for h in msg.request_headers.headers.headers if h.key == "x-tag")
            opt = base_pb2.HeaderValueOption(header=base_pb2.HeaderValue(key="x-seen", raw_value=tag))
            common = pb.CommonResponse(header_mutation=pb.HeaderMutation(set_headers=[opt]))
            answer, seen = pb.ProcessingResponse(request_headers=pb.HeadersResponse(response=common)), tag
        else:
            seen = msg.request_body.body
            st.bodies.append(seen)
            if seen == b"raise":
                raise RuntimeError("servicer failure on purpose")
            reply = seen if self.echo else hashlib.sha256(seen).digest()
            common = pb.CommonResponse(body_mutation=pb.BodyMutation(body=reply))
            answer = pb.ProcessingResponse(request_body=pb.BodyResponse(response=common))
        st.done = seen == b"done"
        return [answer]

    def finish(self, st: State) -> None:
        st.finished += 1


# --- the HTTP/2 client peer ------------------------------------------------------------------------

class Frame(NamedTuple):
    type: int
    flags: int
    sid: int
    payload: bytes
    headers: dict | None  # decoded HEADERS block


class Peer:
    """One client connection. Sends through an h2 H2Connection or raw bytes; everything the server
    sends is split into frames here (kept in order, header blocks decoded) and, up to a GOAWAY, also
    fed to h2, which checks it as an independent implementation (flow control, header rules...)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, use_h2: bool):
        self.reader, self.writer = reader, writer
        self.h2 = H2Connection(H2Configuration(client_side=True))
        self.feed_h2 = use_h2
        self.encoder = hpack.Encoder()  # for raw header blocks (never mixed with h2's on one connection)
        self.decoder = hpack.Decoder()
        self.frames: list[Frame] = []
        self.events: list = []
        self.buf = b""
        self.eof = False
        self.pings = 0

    def flush(self) -> None:
        self.writer.write(self.h2.data_to_send())

    def write(self, data: bytes) -> None:
        self.writer.write(data)

    async def until(self, pred, timeout: float = 5.0, what: str = "condition") -> None:
        """Read from the server until pred(self) holds."""
        deadline = time.monotonic() + timeout
        while not pred(self):
            if self.eof:
                pytest.fail(f"connection closed before {what}")
            left = deadline - time.monotonic()
            try:
                chunk = await asyncio.wait_for(self.reader.read(1 << 20), max(left, 0))
            except asyncio.TimeoutError:
                pytest.fail(f"timed out waiting for {what}")
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                self.eof = True
            self._take(chunk)

    def _take(self, chunk: bytes) -> None:
        self.buf += chunk
        while len(self.buf) >= 9:
            length = int.from_bytes(self.buf[:3], "big")
            if len(self.buf) < 9 + length:
                break
            raw, self.buf = self.buf[:9 + length], self.buf[9 + length:]
            ftype, flags, sid = raw[3], raw[4], int.from_bytes(raw[5:9], "big") & 0x7FFFFFFF
            headers = dict(self.decoder.decode(raw[9:])) if ftype == HEADERS else None
            self.frames.append(Frame(ftype, flags, sid, raw[9:], headers))
            if self.feed_h2:
                self.events += self.h2.receive_data(raw)
                self.writer.write(self.h2.data_to_send())  # h2's own ACKs of SETTINGS and PING
                self.feed_h2 = ftype != GOAWAY  # to h2 a GOAWAY ends the connection; later frames are read raw

    # what the server said, per stream
    def on(self, sid: int, ftype: int) -> list[Frame]:
        return [f for f in self.frames if f.sid == sid and f.type == ftype]

    def status(self, sid: int) -> int | None:
        """grpc-status of the stream's closing HEADERS, None while it is open."""
        last = [f for f in self.on(sid, HEADERS) if f.flags & END_STREAM]
        return int(last[0].headers["grpc-status"]) if last else None

    def answers(self, sid: int) -> list[pb.ProcessingResponse]:
        data, out = b"".join(f.payload for f in self.on(sid, DATA)), []
        while data:
            assert data[0] == 0, "server sent a compressed message"
            n = int.from_bytes(data[1:5], "big")
            out.append(pb.ProcessingResponse.FromString(data[5:5 + n]))
            data = data[5 + n:]
        return out

    def goaways(self) -> list[tuple[int, int]]:
        """(last stream id, error code) of every GOAWAY so far."""
        return [(int.from_bytes(f.payload[:4], "big") & 0x7FFFFFFF, int.from_bytes(f.payload[4:8], "big"))
                for f in self.frames if f.type == GOAWAY]

    async def barrier(self) -> None:
        """PING round trip. The server handles frames in order and writes what they caused before the
        ACK, so once the ACK is here, everything it had to say about earlier frames has arrived too;
        if it closed the connection instead, that is seen as eof."""
        self.pings += 1
        data = b"barrier%d" % self.pings
        self.write(frame(PING, 0, 0, data))
        await self.until(lambda p: p.eof or any(f.type == PING and f.flags & ACK and f.payload == data
                                                for f in p.frames), what="PING ACK")

    # sending through h2
    def open_stream(self, headers=REQUEST_HEADERS, end: bool = False) -> int:
        sid = self.h2.get_next_available_stream_id()
        self.h2.send_headers(sid, headers, end_stream=end)
        self.flush()
        return sid

    async def send(self, sid: int, data: bytes, end: bool = False, chunk: int = 16384) -> None:
        """DATA frames of at most `chunk` bytes, never more than the server's windows allow: when they
        are used up, wait for its WINDOW_UPDATE."""
        data = memoryview(data)  # slices without copying the rest each time
        while True:
            room = min(self.h2.local_flow_control_window(sid), chunk, len(data))
            if room == 0 and data:
                seen = len(self.events)
                await self.until(lambda p: any(isinstance(e, ev.WindowUpdated) for e in p.events[seen:]),
                                 what="WINDOW_UPDATE")
                continue
            last = room == len(data)
            self.h2.send_data(sid, bytes(data[:room]), end_stream=end and last)
            data = data[room:]
            self.flush()
            await self.writer.drain()
            if last:
                return

    async def close(self) -> None:
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except OSError:
            pass


class Harness:
    """Servers and client connections of one test, all closed at its end; over TLS if `tls`."""

    def __init__(self, tls: bool = False):
        self.servers: list[ExtProcServer] = []
        self.peers: list[Peer] = []
        self.tls = ServerTLS() if tls else None

    async def start(self, servicer, **kw) -> int:
        self.server = ExtProcServer(servicer, **kw)
        self.servers.append(self.server)
        return await self.server.start("127.0.0.1", 0, self.tls)

    def client_context(self) -> ssl.SSLContext | None:
        if self.tls is None:
            return None
        ctx = ssl.create_default_context(cadata=self.tls.cert_pem.decode())  # verifies: names localhost
        ctx.set_alpn_protocols(["h2"])
        return ctx

    def channel(self, port: int) -> grpc.aio.Channel:
        if self.tls is None:
            return grpc.aio.insecure_channel(f"127.0.0.1:{port}")
        return grpc.aio.secure_channel(f"127.0.0.1:{port}", grpc.ssl_channel_credentials(self.tls.cert_pem),
                                       options=[("grpc.ssl_target_name_override", "localhost")])

    async def connect(self, port: int, settings: dict | None = None, raw: bool = False) -> Peer:
        ctx = self.client_context()
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx,
                                                      server_hostname="localhost" if ctx else None)
        if ctx is not None:
            assert writer.get_extra_info("ssl_object").selected_alpn_protocol() == "h2"
        p = Peer(reader, writer, use_h2=not raw)
        self.peers.append(p)
        if not raw:
            p.h2.initiate_connection()
            if settings:
                p.h2.update_settings(settings)
            p.flush()
            # both SETTINGS exchanged: h2 now sends within the server's limits and enforces ours
            acks = 2 if settings else 1
            await p.until(lambda p: any(isinstance(e, ev.RemoteSettingsChanged) for e in p.events) and
                          sum(isinstance(e, ev.SettingsAcknowledged) for e in p.events) == acks, what="SETTINGS")
        return p

    async def close(self) -> None:
        for p in self.peers:
            await p.close()
        for s in self.servers:
            await s.stop(grace=0.2)


@pytest.fixture(params=["h2c", "tls"])
async def harness(request):
    h = Harness(tls=request.param == "tls")
    yield h
    await h.close()


# --- 1. a real gRPC client -------------------------------------------------------------------------

async def test_grpcio_bidi_call_gets_answers_in_order_and_ok(harness):
    rec = Recorder()
    port = await harness.start(rec)
    async with harness.channel(port) as channel:
        call = pb_grpc.ExternalProcessorStub(channel).Process()
        await call.write(headers_msg("first"))
        # answered before the next message is written: the stream is live in both directions
        assert seen_tag(await call.read()) == b"first"
        await call.write(body_msg(b"the body"))
        assert echoed(await call.read()) == b"the body"
        await call.done_writing()
        assert await call.read() is grpc.aio.EOF
        assert await call.code() == grpc.StatusCode.OK
    [st] = rec.states
    assert st.kinds == ["request_headers", "request_body"] and st.finished == 1


async def test_grpcio_concurrent_streams_on_one_channel(harness):
    rec = Recorder()
    port = await harness.start(rec)
    async with harness.channel(port) as channel:
        stub = pb_grpc.ExternalProcessorStub(channel)

        async def one(i: int):
            call = stub.Process()
            await call.write(headers_msg(f"stream-{i}"))
            await call.write(body_msg(b"body-%d" % i))
            await call.done_writing()
            return [a async for a in call], await call.code()

        results = await asyncio.gather(*(one(i) for i in range(20)))
        assert len(harness.server.connections) == 1  # all 20 streams shared one HTTP/2 connection
    for i, (answers, code) in enumerate(results):
        assert code == grpc.StatusCode.OK
        assert [seen_tag(answers[0]), echoed(answers[1])] == [b"stream-%d" % i, b"body-%d" % i]
    assert len(rec.states) == 20 and all(st.finished == 1 for st in rec.states)


# --- 2. connection setup ----------------------------------------------------------------------------

async def test_preface_settings_exchange_and_ping(harness):
    port = await harness.start(Recorder())
    p = await harness.connect(port)  # returns once h2 got the server's SETTINGS and its ACK of ours
    first = p.frames[0]
    assert first.type == SETTINGS and not first.flags & ACK  # the server's preface is a SETTINGS frame
    changed = next(e for e in p.events if isinstance(e, ev.RemoteSettingsChanged)).changed_settings
    assert changed[SettingCodes.INITIAL_WINDOW_SIZE].new_value == h2_server.STREAM_WINDOW
    assert changed[SettingCodes.MAX_FRAME_SIZE].new_value == h2_server.MAX_FRAME
    assert changed[SettingCodes.MAX_CONCURRENT_STREAMS].new_value == h2_server.MAX_STREAMS
    # the connection window is opened past the default 65,535 right away
    assert p.h2.outbound_flow_control_window == h2_server.CONN_WINDOW
    p.h2.ping(b"\x01pingme\x02")
    p.flush()
    await p.until(lambda p: any(isinstance(e, ev.PingAckReceived) for e in p.events), what="PING ACK")
    assert [e.ping_data for e in p.events if isinstance(e, ev.PingAckReceived)] == [b"\x01pingme\x02"]


# --- 3. flow control, client to server --------------------------------------------------------------

async def test_big_message_in_many_frames_arrives_whole(harness):
    rec = Recorder(echo=False)
    port = await harness.start(rec)
    p = await harness.connect(port)
    body = payload_bytes(3 * 1024 * 1024)
    sid = p.open_stream()
    await p.send(sid, grpc_frame(body_msg(body)), end=True)  # ~190 DATA frames of 16 KiB, like Envoy's
    await p.until(lambda p: p.status(sid) is not None, what="trailers")
    assert p.status(sid) == 0
    assert rec.states[0].bodies == [body]
    assert echoed(p.answers(sid)[0]) == hashlib.sha256(body).digest()
    # 3 MiB is far past the default 65,535-byte connection window: the server's WINDOW_UPDATE opened it
    assert any(isinstance(e, ev.WindowUpdated) and e.stream_id == 0 for e in p.events)


async def test_message_over_the_stream_window_needs_stream_window_updates(harness):
    rec = Recorder(echo=False)
    port = await harness.start(rec)
    p = await harness.connect(port)
    body = payload_bytes(h2_server.STREAM_WINDOW + 1024 * 1024)  # cannot pass without a stream WINDOW_UPDATE
    sid = p.open_stream()
    await p.send(sid, grpc_frame(body_msg(body)), end=True, chunk=1024 * 1024)  # big frames keep it quick
    await p.until(lambda p: p.status(sid) is not None, what="trailers")
    assert p.status(sid) == 0
    assert any(isinstance(e, ev.WindowUpdated) and e.stream_id == sid for e in p.events)
    assert hashlib.sha256(rec.states[0].bodies[0]).digest() == hashlib.sha256(body).digest()


# --- 4. flow control, server to client --------------------------------------------------------------

async def test_big_answer_waits_for_the_clients_window_and_frame_size(harness):
    port = await harness.start(Recorder())
    p = await harness.connect(port, settings={SettingCodes.INITIAL_WINDOW_SIZE: 1000,
                                              SettingCodes.MAX_FRAME_SIZE: 16384})
    body = payload_bytes(50_000)
    sid = p.open_stream()
    await p.send(sid, grpc_frame(body_msg(body)), end=True)
    await p.barrier()
    # h2 would have raised on anything past its 1000-byte window; the answer stops there, no trailers
    sent = sum(len(f.payload) for f in p.on(sid, DATA))
    assert 0 < sent <= 1000 and p.status(sid) is None
    p.h2.increment_flow_control_window(60_000, stream_id=sid)
    p.flush()
    await p.until(lambda p: p.status(sid) is not None, what="trailers")
    sizes = [len(f.payload) for f in p.on(sid, DATA)]
    assert max(sizes) == 16384  # the window allowed more: the frame size is what cut these
    assert [echoed(a) for a in p.answers(sid)] == [body] and p.status(sid) == 0
    mine = [f for f in p.frames if f.sid == sid and f.type in (DATA, HEADERS)]
    assert mine[-1].type == HEADERS and mine[-1].flags & END_STREAM  # trailers after all the data


async def test_stream_ended_behind_flow_control_takes_no_more_messages(harness):
    rec = Recorder()
    port = await harness.start(rec)
    p = await harness.connect(port, settings={SettingCodes.INITIAL_WINDOW_SIZE: 1000})
    sid = p.open_stream()
    big = payload_bytes(20_000)
    await p.send(sid, grpc_frame(body_msg(big)))  # answered with 20 KB: blocked by the 1000-byte window
    await p.send(sid, grpc_frame(body_msg(b"done")))  # the servicer is done: OK trailers queue behind
    await p.send(sid, grpc_frame(body_msg(b"raise")), end=True)  # too late, the stream has ended
    await p.barrier()
    p.h2.increment_flow_control_window(60_000, stream_id=sid)
    p.flush()
    await p.until(lambda p: p.status(sid) is not None, what="trailers")
    assert rec.states[0].bodies == [big, b"done"]
    assert p.status(sid) == 0


# --- 5. frame shapes a peer may use ----------------------------------------------------------------

async def test_continuation_priority_and_padding_are_accepted(harness):
    rec = Recorder()
    port = await harness.start(rec)
    p = await harness.connect(port, raw=True)
    p.write(PREFACE + frame(SETTINGS, 0, 0))
    block = p.encoder.encode(REQUEST_HEADERS + [("x-filler", "f" * 3000)])
    a, b, c = block[:20], block[20:1500], block[1500:]
    # padded HEADERS with priority fields (pad length, dependency + weight, fragment, padding), two CONTINUATIONs
    p.write(frame(HEADERS, PADDED | PRIORITY_FLAG, 1, bytes([9]) + b"\0\0\0\0\x0f" + a + b"\0" * 9)
            + frame(CONTINUATION, 0, 1, b) + frame(CONTINUATION, END_HEADERS, 1, c))
    msg = grpc_frame(body_msg(b"padded body"))
    p.write(frame(DATA, PADDED, 1, bytes([30]) + msg[:7] + b"\0" * 30)
            + frame(DATA, PADDED | END_STREAM, 1, bytes([0]) + msg[7:]))
    await p.until(lambda p: p.status(1) is not None, what="trailers")
    assert p.status(1) == 0 and [echoed(a) for a in p.answers(1)] == [b"padded body"]
    assert rec.states[0].bodies == [b"padded body"]


# --- 6. what is not the one method -----------------------------------------------------------------

@pytest.mark.parametrize("change", [{":path": "/envoy.service.ext_proc.v3.ExternalProcessor/Other"},
                                    {"content-type": "application/json"}], ids=["unknown method", "not gRPC"])
async def test_other_requests_get_trailers_only_unimplemented(harness, change):
    rec = Recorder()
    port = await harness.start(rec)
    p = await harness.connect(port)
    sid = p.open_stream([(k, change.get(k, v)) for k, v in REQUEST_HEADERS])
    await p.until(lambda p: any(isinstance(e, ev.StreamReset) for e in p.events), what="RST_STREAM")
    [only] = p.on(sid, HEADERS)  # trailers-only: one HEADERS frame, END_STREAM, no DATA
    assert only.flags & END_STREAM and only.headers[":status"] == "200" and only.headers["grpc-status"] == "12"
    assert not p.on(sid, DATA) and rec.states == []
    [reset] = [e for e in p.events if isinstance(e, ev.StreamReset)]
    assert reset.stream_id == sid and reset.error_code == NO_ERROR  # we had not half-closed: stop sending
    ok = p.open_stream()  # the connection still serves the real method
    p.h2.send_data(ok, grpc_frame(headers_msg("after")), end_stream=True)
    p.flush()
    await p.until(lambda p: p.status(ok) is not None, what="trailers")
    assert p.status(ok) == 0 and seen_tag(p.answers(ok)[0]) == b"after"


# --- 7, 8, 10. broken messages, a failing servicer, oversized messages -----------------------------

async def test_malformed_message_fails_only_its_stream(harness):
    rec = Recorder()
    port = await harness.start(rec)
    p = await harness.connect(port)
    bad, good = p.open_stream(), p.open_stream()
    p.h2.send_data(good, grpc_frame(headers_msg("good")))
    p.h2.send_data(bad, grpc_frame(b"\x0a\x05ab"))  # field 1 says 5 bytes follow, 2 do
    p.flush()
    await p.until(lambda p: p.status(bad) is not None, what="trailers")
    assert p.status(bad) == 13
    await p.send(good, grpc_frame(body_msg(b"still here")), end=True)
    await p.until(lambda p: p.status(good) is not None, what="trailers")
    assert p.status(good) == 0
    assert [seen_tag(p.answers(good)[0]), echoed(p.answers(good)[1])] == [b"good", b"still here"]
    assert [st.finished for st in rec.states] == [1, 1]


async def test_servicer_exception_fails_its_stream_and_the_server_goes_on(harness):
    rec = Recorder()
    port = await harness.start(rec)
    p = await harness.connect(port)
    sid = p.open_stream()
    p.h2.send_data(sid, grpc_frame(body_msg(b"raise")))
    p.flush()
    await p.until(lambda p: p.status(sid) is not None, what="trailers")
    assert p.status(sid) == 13 and rec.states[0].finished == 1
    again = p.open_stream()
    await p.send(again, grpc_frame(body_msg(b"fine")), end=True)
    await p.until(lambda p: p.status(again) is not None, what="trailers")
    assert p.status(again) == 0 and echoed(p.answers(again)[0]) == b"fine"


async def test_message_over_max_message_is_resource_exhausted(harness):
    rec = Recorder()
    port = await harness.start(rec, max_message=1000)
    p = await harness.connect(port)
    sid = p.open_stream()
    p.h2.send_data(sid, grpc_frame(body_msg(payload_bytes(2000))))
    p.flush()
    await p.until(lambda p: p.status(sid) is not None, what="trailers")
    assert p.status(sid) == 8 and rec.states[0].kinds == []  # refused on its length, never parsed
    fits = p.open_stream()  # the limit is per message, not per connection
    await p.send(fits, grpc_frame(body_msg(b"x" * 900)), end=True)
    await p.until(lambda p: p.status(fits) is not None, what="trailers")
    assert p.status(fits) == 0


# --- 9, 13, 14. how streams end, and finish() ------------------------------------------------------

async def open_answered_stream(harness, text: str):
    """A server with a Recorder, a client, and one stream that has had an answer and is still open."""
    rec = Recorder()
    p = await harness.connect(await harness.start(rec))
    sid = p.open_stream()
    p.h2.send_data(sid, grpc_frame(headers_msg(text)))
    p.flush()
    await p.until(lambda p: p.answers(sid), what="answer")
    return rec, p, sid


async def test_client_reset_finishes_the_stream_once(harness):
    rec, p, sid = await open_answered_stream(harness, "a")
    p.h2.reset_stream(sid)
    p.flush()
    await p.barrier()
    assert rec.states[0].finished == 1
    await p.close()  # losing the connection later must not finish it again
    await asyncio.wait_for(_no_connections(harness.server), 5)
    assert rec.states[0].finished == 1


async def test_servicer_done_ends_the_stream_before_the_client_half_closes(harness):
    rec = Recorder()
    port = await harness.start(rec)
    p = await harness.connect(port)
    sid = p.open_stream()
    p.h2.send_data(sid, grpc_frame(headers_msg("done")))  # no END_STREAM: our side stays open
    p.flush()
    await p.until(lambda p: any(isinstance(e, ev.StreamReset) for e in p.events), what="RST_STREAM")
    assert p.status(sid) == 0 and seen_tag(p.answers(sid)[0]) == b"done"
    kinds = [type(e) for e in p.events if getattr(e, "stream_id", None) == sid]
    assert kinds.index(ev.TrailersReceived) < kinds.index(ev.StreamReset)
    [reset] = [e for e in p.events if isinstance(e, ev.StreamReset)]
    assert reset.error_code == NO_ERROR and rec.states[0].finished == 1


async def test_servicer_done_on_the_clients_last_message_sends_no_reset(harness):
    rec = Recorder()
    port = await harness.start(rec)
    p = await harness.connect(port)
    sid = p.open_stream()
    p.h2.send_data(sid, grpc_frame(headers_msg("done")), end_stream=True)  # done and half-closed at once
    p.flush()
    await p.until(lambda p: p.status(sid) is not None, what="trailers")
    await p.barrier()
    assert p.status(sid) == 0 and rec.states[0].finished == 1
    assert not [f for f in p.frames if f.type == RST_STREAM and f.sid == sid]  # the stream simply closed


async def test_finish_once_per_stream_in_every_ending(harness):
    rec = Recorder()
    port = await harness.start(rec)
    p = await harness.connect(port)
    endings = {}
    for how, msg in [("half-close", headers_msg("a")), ("servicer done", body_msg(b"done")),
                     ("client reset", headers_msg("b")), ("servicer error", body_msg(b"raise")),
                     ("malformed", b"\x0a\x05ab"), ("connection lost", headers_msg("c"))]:
        sid = endings[how] = p.open_stream()
        p.h2.send_data(sid, grpc_frame(msg), end_stream=how == "half-close")
    p.flush()
    await p.until(lambda p: p.answers(endings["client reset"]), what="answer")
    p.h2.reset_stream(endings["client reset"])
    p.flush()
    await p.barrier()
    ended = ("half-close", "servicer done", "servicer error", "malformed")
    assert [p.status(endings[h]) for h in ended] == [0, 0, 13, 13]
    assert [st.finished for st in rec.states] == [1, 1, 1, 1, 1, 0]  # the last one is still open
    await p.close()
    await asyncio.wait_for(_no_connections(harness.server), 5)
    assert [st.finished for st in rec.states] == [1] * 6


async def test_stop_past_grace_aborts_and_finishes_open_streams(harness):
    rec = Recorder()
    port = await harness.start(rec)
    p = await harness.connect(port, raw=True)  # raw: it never answers the drain PING, so never drains
    p.write(PREFACE + frame(SETTINGS, 0, 0) + frame(HEADERS, END_HEADERS, 1, p.encoder.encode(REQUEST_HEADERS)))
    await p.barrier()
    assert len(rec.states) == 1
    started = time.monotonic()
    await harness.server.stop(grace=0.3)
    assert 0.3 <= time.monotonic() - started < 2
    await asyncio.wait_for(_no_connections(harness.server), 5)
    assert rec.states[0].finished == 1


async def _no_connections(server: ExtProcServer) -> None:
    while server.connections:
        await asyncio.sleep(0.01)


# --- 11. protocol errors end the connection --------------------------------------------------------

def _open(enc: hpack.Encoder, sid: int, flags: int = END_HEADERS) -> bytes:
    return frame(HEADERS, flags, sid, enc.encode(REQUEST_HEADERS))


# A frame over the declared SETTINGS_MAX_FRAME_SIZE cannot be written: the server declares 2^24-1, the
# largest length the 24-bit field holds.
def _case(name: str, bad, code: int, **kw):
    return pytest.param(bad, code, id=name, **kw)


PROTOCOL_ERRORS = [
    _case("DATA on stream 0", lambda e: frame(DATA, 0, 0, b"x"), PROTOCOL_ERROR),
    _case("even client stream id", lambda e: _open(e, 2), PROTOCOL_ERROR),
    _case("HEADERS interrupted by PING", lambda e: _open(e, 1, 0) + frame(PING, 0, 0, b"12345678"),
          PROTOCOL_ERROR),
    _case("HEADERS interrupted by another stream",
          lambda e: _open(e, 1, 0) + frame(CONTINUATION, END_HEADERS, 3, b""), PROTOCOL_ERROR),
    _case("CONTINUATION without HEADERS", lambda e: frame(CONTINUATION, END_HEADERS, 1, b"\x82"), PROTOCOL_ERROR),
    _case("PUSH_PROMISE from a client", lambda e: frame(PUSH_PROMISE, END_HEADERS, 1, b"\0\0\0\x02\x82"),
          PROTOCOL_ERROR),
    _case("PING of 7 bytes", lambda e: frame(PING, 0, 0, b"1234567"), FRAME_SIZE_ERROR),
    _case("SETTINGS of 5 bytes", lambda e: frame(SETTINGS, 0, 0, b"\0\x04\0\0\0"), FRAME_SIZE_ERROR),
    _case("connection WINDOW_UPDATE of 0", lambda e: frame(WINDOW_UPDATE, 0, 0, b"\0\0\0\0"), PROTOCOL_ERROR),
    _case("undecodable header block", lambda e: frame(HEADERS, END_HEADERS, 1, b"\xc6"), COMPRESSION_ERROR),
    _case("even id after an odd one", lambda e: _open(e, 3) + _open(e, 2), PROTOCOL_ERROR),
]


@pytest.mark.parametrize("bad, code", PROTOCOL_ERRORS)
async def test_protocol_error_ends_the_connection_with_goaway(harness, bad, code):
    port = await harness.start(Recorder())
    p = await harness.connect(port, raw=True)
    p.write(PREFACE + frame(SETTINGS, 0, 0) + bad(p.encoder))
    await p.barrier()  # returns on the close, or on an ACK if the frame went through
    assert p.eof
    assert [code for _, code in p.goaways()] == [code]
    assert p.frames[-1].type == GOAWAY


@pytest.mark.parametrize("start", [b"GET / HTTP/1.1\r\nHost: picker\r\n\r\n", b"GET "], ids=["long", "short"])
async def test_bad_preface_gets_goaway(harness, start):
    port = await harness.start(Recorder())
    p = await harness.connect(port, raw=True)
    p.write(start)
    await p.until(lambda p: p.eof, what="close")
    assert p.goaways() == [(0, PROTOCOL_ERROR)]


# --- 12. graceful stop -----------------------------------------------------------------------------

async def test_graceful_stop_lets_the_open_stream_finish(harness):
    rec, p, sid = await open_answered_stream(harness, "before stop")
    started = time.monotonic()
    stopping = asyncio.create_task(harness.server.stop(grace=2))
    await p.until(lambda p: any(f.type == PING and not f.flags & ACK for f in p.frames), what="drain PING")
    assert p.goaways() == [(2**31 - 1, NO_ERROR)] and not p.eof
    # h2 ended at the GOAWAY: answer the PING and finish the stream by hand
    ping = next(f for f in p.frames if f.type == PING and not f.flags & ACK)
    p.write(frame(PING, ACK, 0, ping.payload))
    p.write(frame(DATA, END_STREAM, sid, grpc_frame(body_msg(b"last words"))))
    await p.until(lambda p: p.eof, what="close")
    assert p.status(sid) == 0 and echoed(p.answers(sid)[1]) == b"last words"
    assert p.goaways() == [(2**31 - 1, NO_ERROR), (sid, NO_ERROR)]  # the final one names the last stream
    await stopping
    assert time.monotonic() - started < 1.5  # closed once idle, not at the grace deadline
    assert rec.states[0].finished == 1


async def test_graceful_stop_serves_a_stream_in_flight_at_the_first_goaway(harness):
    rec = Recorder()
    port = await harness.start(rec)
    p = await harness.connect(port, raw=True)
    p.write(PREFACE + frame(SETTINGS, 0, 0))
    await p.barrier()
    stopping = asyncio.create_task(harness.server.stop(grace=2))
    await p.until(lambda p: any(f.type == PING and not f.flags & ACK for f in p.frames), what="drain PING")
    ping = next(f for f in p.frames if f.type == PING and not f.flags & ACK)
    # as if this stream crossed the GOAWAY on the wire: opened before the PING is answered
    p.write(_open(p.encoder, 1) + frame(DATA, END_STREAM, 1, grpc_frame(body_msg(b"in flight"))))
    p.write(frame(PING, ACK, 0, ping.payload))
    await p.until(lambda p: p.eof, what="close")
    await stopping
    assert not p.on(1, RST_STREAM) or int.from_bytes(p.on(1, RST_STREAM)[0].payload, "big") != REFUSED_STREAM
    assert p.status(1) == 0 and echoed(p.answers(1)[0]) == b"in flight"


# --- 13. TLS edges (the server's memory-BIO TLS) ---------------------------------------------------

async def test_tls_server_closes_a_plaintext_client_without_answering():
    h = Harness(tls=True)
    try:
        port = await h.start(Recorder())
        reader, writer = await asyncio.open_connection("127.0.0.1", port)  # h2c to a TLS port, as a misconfigured gateway
        writer.write(PREFACE + frame(SETTINGS, 0, 0))
        data = await asyncio.wait_for(reader.read(), 5)  # until the server closes
        assert data == b"" or data[0] == 0x15  # nothing, or a TLS alert record; never HTTP/2
        writer.close()
        await asyncio.wait_for(_no_connections(h.server), 5)
    finally:
        await h.close()


async def test_tls_bytes_one_at_a_time_still_make_a_call():
    """Handshake and records cut at every byte: the server keeps partial TLS state between reads."""
    h = Harness(tls=True)
    rec = Recorder()
    try:
        port = await h.start(rec)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        ctx = h.client_context()
        inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
        tls = ctx.wrap_bio(inc, out, server_hostname="localhost")

        async def pump_out() -> None:
            data = out.read()
            for i in range(len(data)):
                writer.write(data[i:i + 1])
                await writer.drain()

        async def pump_in() -> None:
            inc.write(await asyncio.wait_for(reader.read(65536), 5))

        while True:
            try:
                tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                await pump_out()
                await pump_in()
        await pump_out()
        assert tls.selected_alpn_protocol() == "h2"
        conn = H2Connection(H2Configuration(client_side=True))
        conn.initiate_connection()
        sid = conn.get_next_available_stream_id()
        conn.send_headers(sid, REQUEST_HEADERS)
        conn.send_data(sid, grpc_frame(body_msg(b"byte by byte")), end_stream=True)
        tls.write(conn.data_to_send())
        await pump_out()
        events, body = [], b""
        while not any(isinstance(e, ev.StreamEnded) for e in events):
            await pump_in()
            try:
                events += conn.receive_data(tls.read(1 << 20))
            except ssl.SSLWantReadError:
                continue
            tls.write(conn.data_to_send())
            await pump_out()
        body = b"".join(e.data for e in events if isinstance(e, ev.DataReceived))
        trailers = next(dict(e.headers) for e in events if isinstance(e, ev.TrailersReceived))
        assert trailers[b"grpc-status"] == b"0"
        assert pb.ProcessingResponse.FromString(body[5:]).request_body.response.body_mutation.body == b"byte by byte"
        writer.close()
    finally:
        await h.close()
