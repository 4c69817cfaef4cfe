"""The answer log (config `answerLog`, off by default): one JSON log line per answer the picker
sees, keyed by the request's `x-request-id`, for `python -m infershift.shadow report`.

A mirrored request reaches the mirror pool's picker with the same `x-request-id` and a Host /
:authority Envoy marked with `-shadow` (before the port: `example.com-shadow:8080`; Envoy
`Http::Utility` shadowAppendedHost, used by the router's request_mirror_policies). Envoy throws the
shadow's answer away, so this is where it can be recorded: the picker of the pool that serves
the copy sees its response stream, as the primary pool's picker sees the primary's. The report
pairs the two lines of one request id.

Off, nothing here runs: the request path tests one config attribute. On, every routed request's
response comes back to the picker (the hand-over is forced in one-round-trip mode), its body is
kept (up to MAX_BODY_BYTES) beside the usage reader, and at the end of the response one line is
written to stderr with the picker's other JSON logs (logger `picker.answers`, message `answer`).
"""
from __future__ import annotations

import hashlib
import json
import logging

from .telemetry import UsageReader

log = logging.getLogger("picker.answers")
log.setLevel(logging.INFO)  # written whatever --log-level says: they are the data, not diagnostics
MESSAGE = "answer"  # the log line's `msg`: what the report reads
SHADOW_SUFFIX = "-shadow"
MAX_BODY_BYTES = 4 * 1024 * 1024  # an answer body kept past this is cut (the line says `truncated`)


def is_shadow(headers: dict[str, str]) -> bool:
    """A mirrored copy: Envoy appended `-shadow` to its host (before any port)."""
    host = headers.get(":authority") or headers.get("host") or ""
    if host.endswith(SHADOW_SUFFIX):
        return True
    head, sep, port = host.rpartition(":")
    return bool(sep) and port.isdigit() and head.endswith(SHADOW_SUFFIX)


class AnswerReader(UsageReader):
    """The usage reader that also keeps the body (for the answer's text)."""

    __slots__ = ("parts", "kept")

    def __init__(self):
        super().__init__()
        self.parts: list[bytes] = []
        self.kept = 0

    def feed(self, data: bytes) -> None:
        super().feed(data)
        if self.kept < MAX_BODY_BYTES:
            piece = data[:MAX_BODY_BYTES - self.kept]
            self.parts.append(piece)
            self.kept += len(piece)


def _choice_text(doc) -> str:
    if not isinstance(doc, dict):
        return ""
    choices = doc.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        return ""
    c = choices[0]
    for key in ("message", "delta"):  # chat: whole message, or one streamed delta
        m = c.get(key)
        if isinstance(m, dict) and isinstance(m.get("content"), str):
            return m["content"]
    t = c.get("text")  # completions
    return t if isinstance(t, str) else ""


def answer_text(body: bytes, streaming: bool) -> tuple[str, int, str]:
    """(text, content events, error message) of an OpenAI-shaped answer: a JSON body (chat
    `message.content` or completions `text`), or SSE events whose deltas are concatenated."""
    if streaming:
        parts, events, error = [], 0, ""
        for line in body.split(b"\n"):
            line = line.strip()
            if not line.startswith(b"data:"):
                continue
            data = line[5:].strip()
            if not data or data == b"[DONE]":
                continue
            try:
                ev = json.loads(data)
            except ValueError:
                continue
            piece = _choice_text(ev)
            if piece:
                parts.append(piece)
                events += 1
            elif isinstance(ev, dict) and isinstance(ev.get("error"), dict):
                error = str(ev["error"].get("message", ""))
        return "".join(parts), events, error
    try:
        doc = json.loads(body)
    except ValueError:
        return "", 0, ""
    err = doc.get("error") if isinstance(doc, dict) else None
    return _choice_text(doc), 0, str(err.get("message", "")) if isinstance(err, dict) else ""


def emit(*, pool: str, request_id: str, model: str | None, target: str | None, shadow: bool, status: int,
         ttft: float | None, e2e: float | None, reader: UsageReader | None, streaming: bool,
         endpoint: str | None, max_chars: int) -> None:
    """One answer's line (never raises: the answer log must not break a response)."""
    try:
        text, events, error = "", 0, ""
        truncated = False
        if isinstance(reader, AnswerReader) and reader.parts:
            text, events, error = answer_text(b"".join(reader.parts), streaming)
            truncated = reader.kept < reader.size
        usage = reader.usage if reader is not None else None
        tokens = usage[1] if usage is not None else (events if streaming else None)
        log.info(MESSAGE, extra={
            "request_id": request_id, "pool": pool, "model": model, "target_model": target, "shadow": shadow,
            "status": status, "ttft_s": None if ttft is None else round(ttft, 6),
            "e2e_s": None if e2e is None else round(e2e, 6), "output_tokens": tokens, "streaming": streaming,
            "endpoint": endpoint, "text": text[:max_chars], "text_chars": len(text),
            "text_sha256": hashlib.sha256(text.encode()).hexdigest()[:32],
            "truncated": truncated, "error": error[:300]})
    except Exception:  # pragma: no cover - logged, never raised into the response
        log.exception("answer log failed", extra={"request_id": request_id})
