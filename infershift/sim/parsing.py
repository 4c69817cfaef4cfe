"""Validating an OpenAI-style completion or chat request into what the engine needs."""
from __future__ import annotations

import json
import re
from dataclasses import dataclass

from .errors import bad_request, not_found
from .text import natural_length, prompt_key
from .tokens import block_hashes, count_tokens, render_chat


@dataclass
class Parsed:
    model: str              # the name the client asked for, echoed in the response
    lora: str | None        # adapter name, or None for the base model
    prompt: str | list[int]
    prompt_tokens: int
    max_tokens: int
    target: int             # tokens that will be generated
    end_reason: str         # finish_reason when `target` is reached
    key: int                # selects the deterministic output text
    hashes: list[int]
    stream: bool
    include_usage: bool


# A \uD800-\uDFFF escape: JSON lets it through unpaired, UTF-8 cannot carry it.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")


def parse_json(raw: bytes):
    """A request body as JSON, or 400: not UTF-8, not JSON, nested too deeply for the parser, or a
    string holding an unpaired UTF-16 surrogate (valid JSON text, but no text a model can read)."""
    try:
        obj = json.loads(raw.decode("utf-8"))
    except (ValueError, UnicodeDecodeError):
        raise bad_request("request body is not valid JSON") from None
    except RecursionError:
        raise bad_request("request body is nested too deeply") from None
    if _SURROGATE_ESCAPE.search(raw):
        try:
            json.dumps(obj, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise bad_request("request body holds an unpaired UTF-16 surrogate escape") from None
        except RecursionError:
            raise bad_request("request body is nested too deeply") from None
    return obj


def _int(body: dict, name: str, minimum: int) -> int | None:
    v = body.get(name)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int):
        raise bad_request(f"{name} must be an integer", name)
    if v < minimum:
        raise bad_request(f"{name} must be at least {minimum}, got {v}", name)
    return v


def _bool(body: dict, name: str) -> bool:
    v = body.get(name, False)
    if v is None:
        return False
    if not isinstance(v, bool):
        raise bad_request(f"{name} must be a boolean", name)
    return v


def _prompt(body: dict) -> str | list[int]:
    if "prompt" not in body:
        raise bad_request("prompt is required", "prompt")
    p = body["prompt"]
    if isinstance(p, list) and len(p) == 1 and isinstance(p[0], (str, list)):
        p = p[0]  # a batch of one
    if isinstance(p, str):
        if not p:
            raise bad_request("prompt must not be empty", "prompt")
        return p
    if isinstance(p, list) and p and all(isinstance(t, int) and not isinstance(t, bool) for t in p):
        return p
    if isinstance(p, list) and len(p) > 1:
        raise bad_request("batched prompts are not supported by the simulator; send one prompt per request",
                          "prompt")
    raise bad_request("prompt must be a non-empty string or a list of token ids", "prompt")


def _messages(body: dict) -> str:
    msgs = body.get("messages")
    if not isinstance(msgs, list) or not msgs:
        raise bad_request("messages must be a non-empty list", "messages")
    for i, m in enumerate(msgs):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str):
            raise bad_request(f"messages[{i}] must be an object with a string role", "messages")
        c = m.get("content")
        if c is not None and not isinstance(c, (str, list)):
            raise bad_request(f"messages[{i}].content must be a string or a list of parts", "messages")
        for j, part in enumerate(c if isinstance(c, list) else ()):
            if not isinstance(part, dict):
                raise bad_request(f"messages[{i}].content[{j}] must be an object", "messages")
            if "text" in part and not isinstance(part["text"], str):
                raise bad_request(f"messages[{i}].content[{j}].text must be a string", "messages")
    return render_chat(msgs)


def parse(body, chat: bool, *, served: list[str], adapters: dict, max_model_len: int,
          block_size: int, seed: int) -> Parsed:
    if not isinstance(body, dict):
        raise bad_request("request body must be a JSON object")
    model = body.get("model")
    if model is None:
        model = served[0]
    if not isinstance(model, str):
        raise bad_request("model must be a string", "model")
    if model in served:
        lora = None
    elif model in adapters:
        lora = model
    else:
        raise not_found(f"The model `{model}` does not exist.", "model")
    n = _int(body, "n", 1)
    if n is not None and n != 1:
        raise bad_request("n > 1 is not supported by the simulator", "n")
    stream = _bool(body, "stream")
    opts = body.get("stream_options")
    include_usage = False
    if opts is not None:
        if not stream:
            raise bad_request("Stream options can only be defined when `stream=True`.", "stream_options")
        if not isinstance(opts, dict):
            raise bad_request("stream_options must be an object", "stream_options")
        include_usage = _bool(opts, "include_usage")
    prompt: str | list[int]
    if chat:
        prompt = _messages(body)
        where = "messages"
        max_tokens = _int(body, "max_completion_tokens", 1)
        if max_tokens is None:
            max_tokens = _int(body, "max_tokens", 1)
    else:
        prompt = _prompt(body)
        where = "prompt"
        max_tokens = _int(body, "max_tokens", 1)
    ptoks = count_tokens(prompt) if isinstance(prompt, str) else len(prompt)
    if max_tokens is None:
        max_tokens = max_model_len - ptoks
    if ptoks + max_tokens > max_model_len or max_tokens < 1:
        asked = ptoks + max(max_tokens, 0)
        raise bad_request(
            f"This model's maximum context length is {max_model_len} tokens. However, you requested "
            f"{asked} tokens ({ptoks} in the {where}, {max(max_tokens, 0)} in the completion). "
            f"Please reduce the length of the {where} or completion.", where)
    min_tokens = _int(body, "min_tokens", 0) or 0
    ignore_eos = _bool(body, "ignore_eos")
    key = prompt_key(seed, model, prompt)
    natural = max(natural_length(key), min_tokens)
    if ignore_eos or natural >= max_tokens:
        target, reason = max_tokens, "length"
    else:
        target, reason = natural, "stop"
    return Parsed(model=model, lora=lora, prompt=prompt, prompt_tokens=ptoks, max_tokens=max_tokens,
                  target=target, end_reason=reason, key=key,
                  hashes=block_hashes(prompt, block_size, lora), stream=stream,
                  include_usage=include_usage)
