"""Deterministic token approximation (about four characters per token) and
prompt-block hashing for the prefix cache."""
from __future__ import annotations

CHARS_PER_TOKEN = 4


def count_tokens(text: str) -> int:
    return (len(text) + CHARS_PER_TOKEN - 1) // CHARS_PER_TOKEN


def render_chat(messages: list[dict]) -> str:
    """A fixed chat template, so equal conversation prefixes give equal prompt prefixes."""
    parts = []
    for m in messages:
        parts.append(f"<|{m['role']}|>\n{message_text(m.get('content'))}\n")
    parts.append("<|assistant|>\n")
    return "".join(parts)


def message_text(content) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    # OpenAI content parts: only text parts carry tokens here.
    return "".join(p.get("text", "") for p in content if isinstance(p, dict))


def block_hashes(prompt: str | list[int], block_size: int, salt: object = None) -> list[int]:
    """Chain hashes of the prompt's full blocks: block i's hash covers blocks 0..i.

    `salt` (the LoRA adapter name) keeps adapters' caches apart, as vLLM does.
    Python's hash() is per-process, which is all an in-process cache needs.
    """
    out = []
    prev = hash(salt)
    if isinstance(prompt, str):
        step = block_size * CHARS_PER_TOKEN
        full = len(prompt) // step
        for i in range(full):
            prev = hash((prev, prompt[i * step:(i + 1) * step]))
            out.append(prev)
    else:
        full = len(prompt) // block_size
        for i in range(full):
            prev = hash((prev, tuple(prompt[i * block_size:(i + 1) * block_size])))
            out.append(prev)
    return out
