"""Kubernetes names derived from free text (model names such as `meta-llama/Llama-3.1-8B`)."""
from __future__ import annotations

import hashlib
import re

_INVALID = re.compile(r"[^a-z0-9-]+")


def dns_label(*parts: str, max_len: int = 63) -> str:
    """Join parts into an RFC 1123 label; a short hash keeps lossy or long names unique."""
    raw = "-".join(parts)
    name = _INVALID.sub("-", raw.lower()).strip("-")
    name = re.sub(r"-{2,}", "-", name)
    # Two model names may differ only in characters the label cannot hold ("A.b" vs "a-b").
    lossy = name != raw
    if lossy or len(name) > max_len or not name:
        digest = hashlib.sha256(raw.encode()).hexdigest()[:6]
        name = f"{name[: max_len - 7].rstrip('-')}-{digest}" if name else f"x-{digest}"
    return name
