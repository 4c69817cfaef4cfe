"""Deterministic output text that names the model that produced it.

Each model gets its own fixed stream of 4-character tokens (from the seed and the
model name); a prompt picks a start offset into it. So (seed, model, prompt) fixes
the answer, slicing costs no per-token Python work, and a canary's answers differ
visibly from the stable model's.
"""
from __future__ import annotations

import hashlib
import random
from functools import lru_cache

_WORDS = (  # noqa: SIM905 (a sentence of words reads better than a list literal)
    "the of and to in is it for on as at by an be or we do if so up no my go me he "
    "us am oh ok ai ml id io ui os"
).split()
_STREAM_TOKENS = 4096
_TOKEN_CHARS = 4


@lru_cache(maxsize=256)
def _stream(seed: int, model: str) -> str:
    rng = random.Random(f"{seed}:{model}")
    # Every token is exactly 4 characters: a space and a 3-letter piece.
    pieces = []
    for _ in range(_STREAM_TOKENS):
        w = rng.choice(_WORDS)
        pieces.append((" " + w + "xyzq"[rng.randrange(4)] * 3)[:_TOKEN_CHARS])
    s = "".join(pieces)
    return s + s  # doubled so any slice up to _STREAM_TOKENS tokens needs no wrap


def prompt_key(seed: int, model: str, prompt: str | list[int]) -> int:
    h = hashlib.blake2b(f"{seed}\0{model}\0".encode(), digest_size=8)
    h.update(prompt.encode() if isinstance(prompt, str) else repr(prompt).encode())
    return int.from_bytes(h.digest(), "big")


def natural_length(key: int) -> int:
    """How many tokens the model 'wants' to write before its end-of-sequence."""
    return 32 + (key >> 20) % 480


def marker(model: str) -> str:
    return f"[{model}]"


class Output:
    """Token texts of one answer; token 0 carries the model marker."""

    def __init__(self, seed: int, model: str, key: int):
        self._s = _stream(seed, model)
        self._off = key % _STREAM_TOKENS   # in tokens
        self._marker = marker(model)

    def text(self, start: int, end: int) -> str:
        """Concatenated text of tokens [start, end)."""
        if end <= start:
            return ""
        head = self._marker if start == 0 else ""
        out = []
        i = start
        while i < end:  # only loops again past _STREAM_TOKENS tokens
            n = min(end - i, _STREAM_TOKENS)
            a = ((self._off + i) % _STREAM_TOKENS) * _TOKEN_CHARS   # the doubled stream holds n more
            out.append(self._s[a:a + n * _TOKEN_CHARS])
            i += n
        return head + "".join(out)
