"""OpenAI response shapes: whole completions and the SSE chunks of a stream."""
from __future__ import annotations

import json

from .engine import Request


def usage(r: Request, generated: int | None = None) -> dict:
    g = r.generated if generated is None else generated
    return {"prompt_tokens": r.prompt_tokens, "completion_tokens": g, "total_tokens": r.prompt_tokens + g,
            "prompt_tokens_details": {"cached_tokens": r.cached_tokens}}


def completion(chat: bool, rid: str, created: int, model: str, text: str, r: Request) -> dict:
    if chat:
        choice = {"index": 0, "message": {"role": "assistant", "content": text, "tool_calls": []},
                  "logprobs": None, "finish_reason": r.finish_reason, "stop_reason": None}
    else:
        choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": r.finish_reason,
                  "stop_reason": None}
    return {"id": rid, "object": "chat.completion" if chat else "text_completion", "created": created,
            "model": model, "choices": [choice], "usage": usage(r)}


class SSE:
    """Server-sent event chunks of one stream, assembled from fixed pieces so a token
    costs one json.dumps of its text rather than of a whole dict."""

    def __init__(self, chat: bool, rid: str, created: int, model: str):
        self.chat = chat
        obj = "chat.completion.chunk" if chat else "text_completion"
        self._head = f'data: {{"id":"{rid}","object":"{obj}","created":{created},"model":{json.dumps(model)},'
        self._pre = self._head + '"choices":[{"index":0,' + ('"delta":{"content":' if chat else '"text":')
        self._mid = '},"logprobs":null,"finish_reason":' if chat else ',"logprobs":null,"finish_reason":'

    def token(self, text: str, finish: str | None) -> bytes:
        return f"{self._pre}{json.dumps(text)}{self._mid}{json.dumps(finish)}}}]}}\n\n".encode()

    def role(self) -> bytes:
        """The chat stream's opening chunk."""
        first = {"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": None,
                 "finish_reason": None}
        return f'{self._head}"choices":[{json.dumps(first)}]}}\n\n'.encode()

    def usage(self, u: dict) -> bytes:
        return f'{self._head}"choices":[],"usage":{json.dumps(u)}}}\n\n'.encode()

    DONE = b"data: [DONE]\n\n"
