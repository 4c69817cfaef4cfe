"""The ext_proc service on the picker's own small HTTP/2 server, an asyncio Protocol.

Why not grpc.aio: Envoy opens one gRPC stream per HTTP request, and grpc.aio spends about 1 ms of
CPU per stream on a 2-core box (its C core hands every message between a poller thread and the
event loop) before the picker does any work; grpclib (h2) is no cheaper. This server speaks only
what one bidirectional gRPC method needs: RFC 9113 framing and flow control, HPACK decoding (the
`hpack` package) with stateless literal output, gRPC's length-prefixed messages and trailers. It
calls the servicer's synchronous handler straight from `data_received`, with no task per stream,
and writes everything one read produced in one go. TLS (the picker's default) runs inside the
Connection over memory BIOs (`_TLS`): one decrypt per read and one encrypt per write, without
asyncio's TLS transport in between.
"""
from __future__ import annotations

import asyncio
import logging
import ssl

import hpack
from envoy.service.ext_proc.v3 import external_processor_pb2 as pb
from google.protobuf.message import DecodeError
from hpack.table import HeaderTable

from . import h2wire as w
from .flowcontrol import Pending

log = logging.getLogger("picker.h2")

PROCESS = b"/envoy.service.ext_proc.v3.ExternalProcessor/Process"
STREAM_WINDOW = 16 * 1024 * 1024  # a buffered 220 KB prompt crosses without waiting on a window update
CONN_WINDOW = 256 * 1024 * 1024
MAX_FRAME = w.MAX_FRAME_LIMIT
MAX_STREAMS = 10_000
MAX_HEADER_LIST = 64 * 1024
TLS_RECORD = 16 * 1024  # the largest TLS record's plaintext (RFC 8446 5.1)


class ConnectionError_(Exception):
    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = code


class _Table(HeaderTable):
    """HPACK dynamic table that counts its changes, so decoded blocks can be reused until it changes."""

    def __init__(self):
        super().__init__()
        self.generation = 0

    def add(self, name, value):
        self.generation += 1
        return super().add(name, value)

    @property
    def maxsize(self):
        return HeaderTable.maxsize.fget(self)

    @maxsize.setter
    def maxsize(self, value):
        self.generation += 1
        HeaderTable.maxsize.fset(self, value)


class _HeaderDecoder:
    """hpack's decoder behind a cache: Envoy sends every ext_proc stream the same header block (all
    indexed but a literal :path), and pure-Python HPACK with Huffman costs more than the rest of a
    request's framing. An entry is good while the table's generation is the one it was decoded at."""

    def __init__(self, max_header_list: int, size: int = 64):
        self.decoder = hpack.Decoder(max_header_list_size=max_header_list)
        self.table = self.decoder.header_table = _Table()
        self.cache: dict[bytes, list] = {}
        self.generation = 0
        self.size = size

    def decode(self, block: bytes) -> list:
        if self.table.generation != self.generation:
            self.cache.clear()
            self.generation = self.table.generation
        hit = self.cache.get(block)
        if hit is not None:
            return hit
        headers = self.decoder.decode(block, raw=True)
        if self.table.generation == self.generation:  # the block left the table alone: reusable
            if len(self.cache) >= self.size:
                self.cache.clear()
            self.cache[block] = headers
        return headers


class _Pieces:
    """Bytes that arrive in pieces (a frame, a gRPC message), joined once `need` of them are in:
    one copy, not one per piece."""

    __slots__ = ("parts", "have", "need")

    def __init__(self, first: bytes, need: int):
        self.parts, self.have, self.need = [first], len(first), need

    def add(self, data) -> bool:
        """Keep data; True once `need` bytes are in."""
        self.parts.append(data)
        self.have += len(data)
        return self.have >= self.need

    def joined(self) -> bytes:
        return b"".join(self.parts)


class _Stream:
    __slots__ = ("sid", "state", "partial", "started", "send_window", "pending", "trailer", "remote_done",
                 "unacked")

    def __init__(self, sid: int, state, send_window: int):
        self.sid = sid
        self.state = state
        self.partial: _Pieces | None = None  # an incomplete gRPC message
        self.started = False  # response headers sent
        self.send_window = send_window
        self.pending: list[bytes] = []  # DATA payloads waiting for flow-control window
        self.trailer: bytes | None = None  # trailers waiting behind pending data
        self.remote_done = False  # the client half-closed
        self.unacked = 0  # DATA bytes received and not yet returned in a WINDOW_UPDATE


class _TLS:
    """TLS for one connection through memory BIOs, driven by the Connection itself: asyncio's TLS
    transport (sslproto) wraps every read and write in its own buffering and flow-control steps,
    which cost more than the record layer for the picker's small messages."""

    __slots__ = ("incoming", "outgoing", "obj", "ready", "closed")

    def __init__(self, ctx: ssl.SSLContext):
        self.incoming, self.outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.obj = ctx.wrap_bio(self.incoming, self.outgoing, server_side=True)
        self.ready = False  # handshake done
        self.closed = False  # the peer's close_notify came

    def feed(self, data) -> bytes:
        """Ciphertext in; the plaintext it completes (b"" if none yet). Sets `closed` on close_notify."""
        self.incoming.write(data)
        if not self.ready:
            try:
                self.obj.do_handshake()
            except ssl.SSLWantReadError:
                return b""
            self.ready = True
        chunks = []
        while True:
            try:
                # One record (at most 16 KiB) per call. Not more: read(n) allocates n bytes first, and
                # above glibc's mmap threshold that is an mmap/munmap per record (measured: twice
                # the TLS cost of a 220 KB prompt).
                chunk = self.obj.read(TLS_RECORD)
            except ssl.SSLWantReadError:  # all of it read
                break
            except ssl.SSLZeroReturnError:
                chunk = b""
            if not chunk:  # with memory BIOs an empty read is the close_notify
                self.closed = True
                break
            chunks.append(chunk)
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)


class Connection(asyncio.Protocol):
    def __init__(self, server: ExtProcServer, tls_context: ssl.SSLContext | None = None):
        self.server = server
        self.tls = _TLS(tls_context) if tls_context is not None else None
        self.servicer = server.servicer
        self.transport: asyncio.Transport | None = None
        self.partial: _Pieces | None = None  # an incomplete frame (or preface)
        self.preface = False
        self.streams: dict[int, _Stream] = {}
        self.last_sid = 0
        self.decoder = _HeaderDecoder(MAX_HEADER_LIST)
        self.peer_window = w.DEFAULT_WINDOW  # the client's initial stream window (its SETTINGS)
        self.peer_frame = w.DEFAULT_FRAME
        self.conn_send = w.DEFAULT_WINDOW
        self.conn_unacked = 0
        self.out: list[bytes] = []
        self.cont: tuple[int, int, list[bytes]] | None = None  # a header block awaiting CONTINUATION
        self.blocked: dict[int, _Stream] = {}
        self.draining = False  # GOAWAY sent: close once the ping has come back and no stream is open
        self.drain_acked = False

    # --- asyncio.Protocol -----------------------------------------------------------------------

    def connection_made(self, transport) -> None:
        self.transport = transport
        self.server.connections.add(self)
        self.out.append(w.settings({w.MAX_CONCURRENT_STREAMS: MAX_STREAMS, w.INITIAL_WINDOW_SIZE: STREAM_WINDOW,
                                    w.MAX_FRAME_SIZE: MAX_FRAME, w.MAX_HEADER_LIST_SIZE: MAX_HEADER_LIST,
                                    w.ENABLE_PUSH: 0}))
        self.out.append(w.window_update(0, CONN_WINDOW - w.DEFAULT_WINDOW))
        self._flush()

    def connection_lost(self, exc) -> None:
        self.server.connections.discard(self)
        streams, self.streams = self.streams, {}
        for s in streams.values():
            self._finish(s)
        self.transport = None

    def pause_writing(self) -> None:  # the peer reads slower than we answer: stop reading from it
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.transport is not None:
            self.transport.resume_reading()

    def data_received(self, data: bytes) -> None:
        tls = self.tls
        if tls is None:
            self._received(data)
            return
        was_ready = tls.ready
        try:
            plain = tls.feed(data)
        except ssl.SSLError as e:  # e.g. a plaintext client: no TLS handshake, nothing to answer
            log.warning("TLS handshake or record failed; closing the connection", extra={"error": str(e)})
            if self.transport is not None:
                if tls.outgoing.pending:  # the alert, if OpenSSL made one
                    self.transport.write(tls.outgoing.read())
                self.transport.close()
            return
        if tls.outgoing.pending and self.transport is not None:  # handshake messages, alerts, key updates
            self.transport.write(tls.outgoing.read())
        if plain:
            self._received(plain)
        elif tls.ready and not was_ready:
            self._flush()  # what waited for the handshake (our SETTINGS)
        if tls.closed:  # the peer is done: answer its close_notify with ours and close
            self._hang_up()

    def _received(self, data: bytes) -> None:
        if self.partial is not None:
            if not self.partial.add(data):
                return
            data, self.partial = self.partial.joined(), None
        try:
            pos = 0
            if not self.preface:
                if len(data) < len(w.PREFACE):
                    if not w.PREFACE.startswith(data):
                        raise ConnectionError_(w.PROTOCOL_ERROR, "not an HTTP/2 connection preface")
                    self.partial = _Pieces(data, len(w.PREFACE))
                    return
                if not data.startswith(w.PREFACE):
                    raise ConnectionError_(w.PROTOCOL_ERROR, "not an HTTP/2 connection preface")
                self.preface, pos = True, len(w.PREFACE)
            n = len(data)
            view = memoryview(data)  # frame payloads are views: a 220 KB body is not copied here
            unpack = w.FRAME_HEADER.unpack_from
            while n - pos >= 9:
                hi, flags, sid = unpack(data, pos)
                length = hi >> 8
                if length > MAX_FRAME:
                    raise ConnectionError_(w.FRAME_SIZE_ERROR, f"frame of {length} bytes")
                end = pos + 9 + length
                if end > n:
                    break
                self._frame(hi & 0xFF, flags, sid & 0x7FFFFFFF, view[pos + 9:end])
                pos = end
                if self.transport is None:
                    return
            if pos < n:
                rest = data[pos:]
                self.partial = _Pieces(rest, 9 if len(rest) < 9 else 9 + (unpack(rest, 0)[0] >> 8))
        except ConnectionError_ as e:
            self._abort(e.code, str(e))
            return
        self._flush()

    # --- frames ----------------------------------------------------------------------------------

    def _frame(self, ftype: int, flags: int, sid: int, payload: bytes) -> None:
        if self.cont is not None and (ftype != w.CONTINUATION or sid != self.cont[0]):
            raise ConnectionError_(w.PROTOCOL_ERROR, "header block interrupted")
        if ftype == w.DATA:
            self._on_data(flags, sid, payload)
        elif ftype == w.HEADERS:
            self._on_headers(flags, sid, payload)
        elif ftype == w.CONTINUATION:
            if self.cont is None:
                raise ConnectionError_(w.PROTOCOL_ERROR, "CONTINUATION without HEADERS")
            self.cont[2].append(bytes(payload))
            if flags & w.END_HEADERS:
                csid, cflags, parts = self.cont
                self.cont = None
                self._on_header_block(csid, cflags, b"".join(parts))
        elif ftype == w.WINDOW_UPDATE:
            self._on_window_update(sid, payload)
        elif ftype == w.SETTINGS:
            self._on_settings(flags, sid, payload)
        elif ftype == w.PING:
            if len(payload) != 8 or sid:
                raise ConnectionError_(w.FRAME_SIZE_ERROR if sid == 0 else w.PROTOCOL_ERROR, "bad PING")
            if not flags & w.ACK:
                self.out.append(w.frame(w.PING, w.ACK, 0, payload))
            elif self.draining:
                self.drain_acked = True
                self._maybe_close()
        elif ftype == w.RST_STREAM:
            if len(payload) != 4 or sid == 0:
                raise ConnectionError_(w.FRAME_SIZE_ERROR if sid else w.PROTOCOL_ERROR, "bad RST_STREAM")
            s = self.streams.pop(sid, None)
            self.blocked.pop(sid, None)
            if s is not None:  # Envoy gave up on the request (client gone, timeout): nothing more to send
                self._finish(s)
                self._maybe_close()
        elif ftype == w.GOAWAY:
            self.draining = self.drain_acked = True  # the peer opens no more streams here
            self._maybe_close()
        elif ftype == w.PUSH_PROMISE:
            raise ConnectionError_(w.PROTOCOL_ERROR, "PUSH_PROMISE from a client")
        # PRIORITY and unknown frame types are ignored (RFC 9113 5.3.2, 5.5)

    @staticmethod
    def _unpad(flags: int, payload: bytes) -> bytes:
        if flags & w.PADDED:
            if not payload or payload[0] >= len(payload):
                raise ConnectionError_(w.PROTOCOL_ERROR, "padding longer than the frame")
            return payload[1:len(payload) - payload[0]]
        return payload

    def _on_headers(self, flags: int, sid: int, payload: bytes) -> None:
        if sid == 0:
            raise ConnectionError_(w.PROTOCOL_ERROR, "HEADERS on stream 0")
        payload = self._unpad(flags, payload)
        if flags & w.PRIORITY_FLAG:
            payload = payload[5:]
        if not flags & w.END_HEADERS:
            self.cont = (sid, flags, [bytes(payload)])
            return
        self._on_header_block(sid, flags, bytes(payload))

    def _on_header_block(self, sid: int, flags: int, block: bytes) -> None:
        try:  # decoded even for streams refused below: the HPACK table must stay in step with the peer
            headers = self.decoder.decode(block)
        except hpack.HPACKError as e:
            raise ConnectionError_(w.COMPRESSION_ERROR, f"header block: {e}") from None
        if sid % 2 == 0:
            raise ConnectionError_(w.PROTOCOL_ERROR, f"client stream {sid} has an even id")
        s = self.streams.get(sid)
        if s is not None:  # trailers from the client end its side
            if not flags & w.END_STREAM:
                self._reset(s, w.PROTOCOL_ERROR)
            elif s.trailer is not None:  # already ended here; only its queued data is still going out
                s.remote_done = True
            else:
                self._end(s)
            return
        if sid <= self.last_sid:
            return  # a stream we already closed; its frames were in flight
        self.last_sid = sid
        # while draining, streams sent before the client saw our GOAWAY are still served (see drain)
        if self.drain_acked or len(self.streams) >= MAX_STREAMS:
            self.out.append(w.rst_stream(sid, w.REFUSED_STREAM))
            return
        h = dict(headers)
        s = _Stream(sid, None, self.peer_window)
        s.remote_done = bool(flags & w.END_STREAM)
        if h.get(b":method") != b"POST" or not h.get(b"content-type", b"").startswith(b"application/grpc"):
            self._trailers(s, w.GRPC_UNIMPLEMENTED, "only gRPC POSTs are served here")
            return
        if h.get(b":path") != PROCESS:
            self._trailers(s, w.GRPC_UNIMPLEMENTED, f"unknown method {h.get(b':path', b'').decode('latin-1')}")
            return
        s.state = self.servicer.new_state()
        self.streams[sid] = s
        if s.remote_done:
            self._end(s)

    def _on_data(self, flags: int, sid: int, payload: bytes) -> None:
        if sid == 0:
            raise ConnectionError_(w.PROTOCOL_ERROR, "DATA on stream 0")
        size = len(payload)  # padding counts against flow control too
        self.conn_unacked += size
        if self.conn_unacked >= CONN_WINDOW // 2:
            self.out.append(w.window_update(0, self.conn_unacked))
            self.conn_unacked = 0
        s = self.streams.get(sid)
        if s is None:
            if sid > self.last_sid:
                raise ConnectionError_(w.PROTOCOL_ERROR, f"DATA on idle stream {sid}")
            return  # already closed by us; the peer had it in flight
        if s.remote_done:
            self._reset(s, w.STREAM_CLOSED)
            return
        if s.trailer is not None:  # ended here, answer still queued for window: the rest is dropped
            s.remote_done = bool(flags & w.END_STREAM)
            return
        payload = self._unpad(flags, payload)
        if flags & w.END_STREAM:
            s.remote_done = True  # an early end below then needs no RST_STREAM
        else:
            s.unacked += size
            if s.unacked >= STREAM_WINDOW // 2:
                self.out.append(w.window_update(sid, s.unacked))
                s.unacked = 0
        if s.partial is not None:
            if not s.partial.add(payload) and not flags & w.END_STREAM:
                return
            data, s.partial = s.partial.joined(), None
        else:
            data = payload
        pos, n = 0, len(data)
        while n - pos >= 5:
            if data[pos]:
                self._trailers(s, w.GRPC_UNIMPLEMENTED, "compressed messages are not supported")
                return
            mlen = w.u32(data, pos + 1)
            if mlen > self.server.max_message:
                self._trailers(s, w.GRPC_RESOURCE_EXHAUSTED,
                               f"message of {mlen} bytes is over the limit of {self.server.max_message}")
                return
            end = pos + 5 + mlen
            if end > n:
                break
            if not self._message(s, data[pos + 5:end]):
                return
            pos = end
        if pos < n:  # a copy: a view would pin the whole read
            s.partial = _Pieces(bytes(data[pos:]), 5 if n - pos < 5 else 5 + w.u32(data, pos + 1))
        if flags & w.END_STREAM:
            if s.partial is not None:
                self._trailers(s, w.GRPC_INTERNAL, "stream ended inside a message")
                return
            self._end(s)

    def _message(self, s: _Stream, raw: bytes) -> bool:
        try:
            msg = pb.ProcessingRequest.FromString(raw)
        except DecodeError as e:
            self._trailers(s, w.GRPC_INTERNAL, f"bad ProcessingRequest: {e}")
            return False
        try:
            answers = self.servicer.handle(s.state, msg)
        except Exception:
            # A bug must not go unnoticed: Envoy applies the pool's failure mode to the broken stream.
            log.exception("ext_proc stream failed", extra={"request_id": getattr(s.state, "request_id", "")})
            self._trailers(s, w.GRPC_INTERNAL, "picker error")
            return False
        for a in answers:
            self._send(s, w.grpc_message(a.SerializeToString()))
        if answers.__class__ is Pending:  # waits in flow control: the rest comes later
            answers.then(lambda later: self._deliver(s, later))
            return True
        if s.state.done:
            # Nothing more is expected on this stream: closing it now (OK) tells Envoy so, in the same
            # write as the answer, instead of waiting for its half-close and answering that.
            self._trailers(s, w.GRPC_OK)
            return False
        return True

    def _deliver(self, s: _Stream, answers: list) -> None:
        """The answers to a message that waited in flow control, sent from outside data_received."""
        if self.streams.get(s.sid) is not s:
            return  # reset meanwhile (the servicer cancelled its wait in finish)
        for a in answers:
            self._send(s, w.grpc_message(a.SerializeToString()))
        if s.state.done:
            self._trailers(s, w.GRPC_OK)
        self._flush()

    def _on_window_update(self, sid: int, payload: bytes) -> None:
        if len(payload) != 4:
            raise ConnectionError_(w.FRAME_SIZE_ERROR, "bad WINDOW_UPDATE")
        inc = w.u32(payload) & 0x7FFFFFFF
        if sid == 0:
            if inc == 0:
                raise ConnectionError_(w.PROTOCOL_ERROR, "WINDOW_UPDATE of 0")
            self.conn_send += inc
            if self.conn_send > w.MAX_WINDOW:
                raise ConnectionError_(w.FLOW_CONTROL_ERROR, "connection window over 2^31-1")
        else:
            s = self.streams.get(sid)
            if s is None:
                return
            if inc == 0:
                self._reset(s, w.PROTOCOL_ERROR)
                return
            s.send_window += inc
            if s.send_window > w.MAX_WINDOW:
                self._reset(s, w.FLOW_CONTROL_ERROR)
                return
        self._drain_blocked()

    def _on_settings(self, flags: int, sid: int, payload: bytes) -> None:
        if sid:
            raise ConnectionError_(w.PROTOCOL_ERROR, "SETTINGS on a stream")
        if flags & w.ACK:
            if payload:
                raise ConnectionError_(w.FRAME_SIZE_ERROR, "SETTINGS ACK with a payload")
            return
        if len(payload) % 6:
            raise ConnectionError_(w.FRAME_SIZE_ERROR, "SETTINGS length not a multiple of 6")
        for key, value in w.parse_settings(payload):
            if key == w.INITIAL_WINDOW_SIZE:
                if value > w.MAX_WINDOW:
                    raise ConnectionError_(w.FLOW_CONTROL_ERROR, "initial window over 2^31-1")
                delta, self.peer_window = value - self.peer_window, value
                for s in self.streams.values():
                    s.send_window += delta
            elif key == w.MAX_FRAME_SIZE:
                if not w.DEFAULT_FRAME <= value <= w.MAX_FRAME_LIMIT:
                    raise ConnectionError_(w.PROTOCOL_ERROR, f"max frame size {value}")
                self.peer_frame = value
            elif key == w.ENABLE_PUSH and value > 1:
                raise ConnectionError_(w.PROTOCOL_ERROR, "ENABLE_PUSH not 0 or 1")
            # HEADER_TABLE_SIZE: our output never uses the dynamic table, so any size suits it
        self.out.append(w.frame(w.SETTINGS, w.ACK, 0))
        self._drain_blocked()

    # --- sending ---------------------------------------------------------------------------------

    def _send(self, s: _Stream, data: bytes) -> None:
        if not s.started:
            self.out.append(w.frame(w.HEADERS, w.END_HEADERS, s.sid, w.RESPONSE_HEADERS))
            s.started = True
        if s.pending:
            s.pending.append(data)
            return
        size = len(data)
        if size <= self.peer_frame and size <= self.conn_send and size <= s.send_window:
            self.out.append(w.frame(w.DATA, 0, s.sid, data))
            self.conn_send -= size
            s.send_window -= size
            return
        s.pending.append(data)
        self._push(s)

    def _push(self, s: _Stream) -> None:
        """Send as much of a stream's queued data as the windows allow, then its trailers."""
        while s.pending:
            room = min(self.conn_send, s.send_window, self.peer_frame)
            if room <= 0:
                self.blocked[s.sid] = s
                return
            data = s.pending[0]
            chunk = data[:room]
            self.out.append(w.frame(w.DATA, 0, s.sid, chunk))
            self.conn_send -= len(chunk)
            s.send_window -= len(chunk)
            if len(chunk) == len(data):
                s.pending.pop(0)
            else:
                s.pending[0] = data[len(chunk):]
        self.blocked.pop(s.sid, None)
        if s.trailer is not None:
            block, s.trailer = s.trailer, None
            self.out.append(w.frame(w.HEADERS, w.END_HEADERS | w.END_STREAM, s.sid, block))
            self._close(s)

    def _drain_blocked(self) -> None:
        for s in list(self.blocked.values()):
            self._push(s)
            if self.conn_send <= 0:
                break

    def _trailers(self, s: _Stream, code: int, message: str = "") -> None:
        """End our side; a stream still open from the client is reset (NO_ERROR) so it stops sending."""
        if s.trailer is not None:
            return  # already ended: the first status stands
        block = w.trailers(code, message)
        if not s.started:
            block = w.RESPONSE_HEADERS + block  # trailers-only response
            s.started = True
        if s.pending:
            s.trailer = block
            return
        self.out.append(w.frame(w.HEADERS, w.END_HEADERS | w.END_STREAM, s.sid, block))
        self._close(s)

    def _close(self, s: _Stream) -> None:
        if self.streams.pop(s.sid, None) is not None:
            self._finish(s)
        if not s.remote_done:
            self.out.append(w.rst_stream(s.sid, w.NO_ERROR))
        self._maybe_close()

    def _reset(self, s: _Stream, code: int) -> None:
        self.out.append(w.rst_stream(s.sid, code))
        self.blocked.pop(s.sid, None)
        if self.streams.pop(s.sid, None) is not None:
            self._finish(s)
        self._maybe_close()

    def _end(self, s: _Stream) -> None:
        """The client half-closed: the servicer has seen everything; finish with OK."""
        s.remote_done = True
        self._trailers(s, w.GRPC_OK)

    def _finish(self, s: _Stream) -> None:
        if s.state is None:
            return
        try:
            self.servicer.finish(s.state)
        except Exception:
            log.exception("ext_proc stream finish failed", extra={"request_id": getattr(s.state, "request_id", "")})

    def _flush(self) -> None:
        if self.out and self.transport is not None:
            data = b"".join(self.out) if len(self.out) > 1 else self.out[0]
            tls = self.tls
            if tls is None:
                self.transport.write(data)
            elif not tls.ready:
                return  # kept until the handshake is done
            else:
                tls.obj.write(data)
                self.transport.write(tls.outgoing.read())
        self.out.clear()

    def _abort(self, code: int, message: str) -> None:
        log.warning("closing an ext_proc connection", extra={"h2_error": code, "error": message})
        self.out.append(w.goaway(self.last_sid, code, message.encode()[:200]))
        self._flush()
        self._hang_up()

    # --- shutdown --------------------------------------------------------------------------------

    def drain(self) -> None:
        """Graceful close: GOAWAY with the highest id, so streams Envoy already sent still count, and a
        PING; once its ACK is back every such stream has arrived, and the connection closes when idle."""
        if self.draining or self.transport is None:
            return
        self.draining = True
        self.out.append(w.goaway(w.MAX_WINDOW, w.NO_ERROR))
        self.out.append(w.frame(w.PING, 0, 0, b"drain\0\0\0"))
        self._flush()

    def _maybe_close(self) -> None:
        if self.draining and self.drain_acked and not self.streams and self.transport is not None:
            self.out.append(w.goaway(self.last_sid, w.NO_ERROR))
            self._flush()
            self._hang_up()

    def _hang_up(self) -> None:
        """Close after what was flushed; over TLS with a close_notify first (RFC 8446 6.1)."""
        if self.transport is None:
            return
        tls = self.tls
        if tls is not None and tls.ready:
            try:
                tls.obj.unwrap()
            except ssl.SSLError:
                pass  # SSLWantReadError: the peer's close_notify is not awaited
            if tls.outgoing.pending:
                self.transport.write(tls.outgoing.read())
        self.transport.close()


class ExtProcServer:
    """Listens and keeps its connections, for a graceful stop."""

    def __init__(self, servicer, max_message: int = 64 * 1024 * 1024):
        self.servicer = servicer  # extproc.ExtProc: new_state(), handle(state, msg) -> [answers], finish(state)
        self.max_message = max_message
        self.connections: set[Connection] = set()
        self._server: asyncio.AbstractServer | None = None

    async def start(self, host: str, port: int, tls=None) -> int:
        """`tls`: a tls.ServerTLS (each Connection runs TLS itself, over memory BIOs), or None for h2c."""
        loop = asyncio.get_running_loop()
        ctx = tls.ssl_context() if tls is not None else None
        self._server = await loop.create_server(lambda: Connection(self, ctx), host, port, reuse_address=True)
        return self._server.sockets[0].getsockname()[1]

    async def stop(self, grace: float = 2.0) -> None:
        if self._server is None:
            return
        self._server.close()
        for c in list(self.connections):
            c.drain()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        while self.connections and loop.time() < deadline:
            await asyncio.sleep(0.02)
        for c in list(self.connections):
            if c.transport is not None:
                c.transport.abort()
        await self._server.wait_closed()
