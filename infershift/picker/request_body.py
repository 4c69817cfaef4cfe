"""Read what the picker needs from an OpenAI-style request body and rewrite its `model`."""
from __future__ import annotations

import json
import re
from dataclasses import dataclass

import orjson

from .errors import BadRequest, BodyTooLarge

COMPLETION_PATHS = frozenset({"/v1/completions", "/v1/chat/completions", "/v1/embeddings", "/v1/responses"})
# A top-level or nested `"model": "<string>"` pair. Inside JSON strings quotes are escaped, so an
# unescaped match is always a real key; when there is more than one we fall back to re-encoding.
_MODEL_PAIR = re.compile(rb'"model"\s*:\s*"((?:[^"\\]|\\.)*)"')
# A \uD800-\uDFFF escape: JSON lets it through unpaired, UTF-8 (headers, the server) cannot carry it.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")


@dataclass
class ParsedBody:
    obj: dict
    model: str
    prompt: str


def is_completion_path(path: str) -> bool:
    return path.split("?", 1)[0] in COMPLETION_PATHS


def _text(content) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # multi-part content: keep the text parts
        out = []
        for p in content:
            text = p.get("text", "") if isinstance(p, dict) else str(p)
            if not isinstance(text, str):
                raise BadRequest("A content part's text must be a string.", param="messages",
                                 code="invalid_request")
            out.append(text)
        return "".join(out)
    return "" if content is None else str(content)


def prompt_of(obj: dict) -> str:
    if "messages" in obj and isinstance(obj["messages"], list):
        return "".join(
            f"{m.get('role', '')}:{_text(m.get('content'))}\n" for m in obj["messages"] if isinstance(m, dict)
        )
    p = obj.get("prompt", obj.get("input"))
    if isinstance(p, list):
        return "\n".join(x if isinstance(x, str) else json.dumps(x) for x in p)
    return _text(p)


def parse_body(body: bytes, content_type: str | None, max_bytes: int) -> ParsedBody:
    if len(body) > max_bytes:
        raise BodyTooLarge(f"Request body is {len(body)} bytes; the limit is {max_bytes} bytes.")
    ctype = (content_type or "").split(";", 1)[0].strip().lower()
    if ctype != "application/json" and not ctype.endswith("+json"):
        raise BadRequest(f"Content-Type must be application/json, got {content_type or 'none'!r}.",
                         code="unsupported_content_type")
    try:
        # orjson parses a 220 KB prompt ~3x faster; what it refuses (invalid JSON, or what only the
        # stdlib takes: NaN, integers over 64 bits) goes to json, which decides and words the error
        try:
            obj = orjson.loads(body)
        except orjson.JSONDecodeError:
            obj = json.loads(body)
            # what orjson refuses and json takes includes unpaired surrogates (\ud800): no UTF-8 text
            if _SURROGATE_ESCAPE.search(body):
                json.dumps(obj, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise BadRequest("The JSON body of your request holds an unpaired UTF-16 surrogate escape.",
                         code="invalid_json") from None
    except (ValueError, UnicodeDecodeError) as e:
        raise BadRequest(f"We could not parse the JSON body of your request: {e}", code="invalid_json") from None
    except RecursionError:
        raise BadRequest("The JSON body of your request is nested too deeply.", code="invalid_json") from None
    if not isinstance(obj, dict):
        raise BadRequest("The request body must be a JSON object.", code="invalid_json")
    model = obj.get("model")
    if model is None:
        raise BadRequest("You must provide a model parameter.", param="model", code="missing_model")
    if not isinstance(model, str) or not model.strip():
        raise BadRequest("The model parameter must be a non-empty string.", param="model", code="invalid_model")
    return ParsedBody(obj, model, prompt_of(obj))


def model_splice(body: bytes, parsed: ParsedBody, new_model: str) -> tuple[int, int, bytes] | None:
    """(start, end, replacement): the bytes to swap so `model` reads new_model, when the key is
    unambiguous; None when the body must be re-encoded. Big prompts are never copied or re-encoded."""
    n = body.count(b'"model"')  # a C scan: the regex only runs where the key is
    if n == 0:
        return None
    if n == 1:
        m = _MODEL_PAIR.search(body, body.find(b'"model"'))
        if m is None:
            return None
    else:
        matches = list(_MODEL_PAIR.finditer(body))
        if len(matches) != 1:
            return None
        m = matches[0]
    try:
        old = json.loads(b'"' + m.group(1) + b'"')
    except ValueError:
        return None
    if old != parsed.model:
        return None
    return m.start(1), m.end(1), json.dumps(new_model)[1:-1].encode()


def rewrite_model(body: bytes, parsed: ParsedBody, new_model: str,
                  splice: tuple[int, int, bytes] | None = None) -> bytes:
    """The body with `model` set to new_model; splices bytes when the key is unambiguous (big prompts)."""
    if new_model == parsed.model:
        return body
    splice = splice or model_splice(body, parsed, new_model)
    if splice is not None:
        start, end, repl = splice
        return body[:start] + repl + body[end:]
    obj = dict(parsed.obj)
    obj["model"] = new_model
    try:
        return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()
    except RecursionError:  # orjson parsed it (1024 levels), the stdlib cannot write it back
        raise BadRequest("The JSON body of your request is nested too deeply.", code="invalid_json") from None
