"""Give the client back the model name it asked for in responses (plain JSON and SSE streams)."""
from __future__ import annotations

import json
import re

_MODEL_PAIR = re.compile(rb'("model"\s*:\s*)"((?:[^"\\]|\\.)*)"')


def _swap(data: bytes, target: str, client: str) -> bytes:
    target_enc = json.dumps(target)[1:-1].encode()
    client_enc = json.dumps(client)[1:-1].encode()

    def sub(m: re.Match) -> bytes:
        return m.group(1) + b'"' + client_enc + b'"' if m.group(2) == target_enc else m.group(0)

    return _MODEL_PAIR.sub(sub, data)


def restore_json(body: bytes, target: str, client: str) -> bytes:
    return _swap(body, target, client)


class SSERestorer:
    """Rewrites SSE chunks line by line; keeps an incomplete trailing line for the next chunk so a
    `"model"` split across chunks is still caught."""

    def __init__(self, target: str, client: str):
        self.target, self.client = target, client
        self.carry = b""

    def feed(self, chunk: bytes, end: bool) -> bytes:
        data = self.carry + chunk
        if end:
            self.carry = b""
            return _swap(data, self.target, self.client)
        cut = data.rfind(b"\n") + 1
        self.carry = data[cut:]
        return _swap(data[:cut], self.target, self.client)
