"""The guides' YAML and curl commands, read straight out of ../shared/seeds (no copy of ours).

Seeds 002 and 003 show readable YAML: `kubectl apply -f- <<EOF ... EOF` heredocs (003) and
blocks headed `# name.yaml` (002), indented as list items of the page. Seeds 000 and 004 show
them flattened onto one line; their objects are laid out in testdata/seeds (see its README).
"""
from __future__ import annotations

import json
import re
import textwrap
from pathlib import Path

SEEDS = Path(__file__).resolve().parents[3] / "shared" / "seeds"
if not SEEDS.exists():  # a clone next to shared/
    SEEDS = Path(__file__).resolve().parents[2].parent / "shared" / "seeds"


def seed_text(prefix: str) -> str:
    return next(SEEDS.glob(f"{prefix}_*.txt")).read_text(encoding="utf-8")


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def heredocs(text: str) -> list[str]:
    """Every `kubectl apply -f- <<EOF` block that spans lines, dedented."""
    lines, out, i = text.splitlines(), [], 0
    while i < len(lines):
        if lines[i].strip() == "kubectl apply -f- <<EOF":
            j = i + 1
            while j < len(lines) and lines[j].strip() != "EOF":
                j += 1
            out.append(textwrap.dedent("\n".join(lines[i + 1:j])) + "\n")
            i = j
        i += 1
    return out


def named_blocks(text: str) -> dict[str, str]:
    """Blocks headed `# =====` / `# name.yaml` / `# =====` (seed 002), to the end of the indentation."""
    lines, out = text.splitlines(), {}
    for i, line in enumerate(lines):
        m = re.match(r"^(\s+)# (\S+\.yaml)\s*$", line)
        if not m or i == 0 or not lines[i - 1].strip().startswith("# ====="):
            continue
        indent, name, body = len(m.group(1)), m.group(2), []
        for nxt in lines[i + 2:]:
            if nxt.strip() and _indent(nxt) < indent:
                break
            body.append(nxt)
        out[name] = textwrap.dedent("\n".join(body)).rstrip() + "\n"
    return out


def curl_bodies(text: str) -> list[dict]:
    """The JSON bodies of the seed's curl commands (`# ...` translator notes inside them dropped)."""
    out = []
    for m in re.finditer(r"curl [^\n]*?-d '(\{.*?\})'", text, re.S):
        raw = re.sub(r"#[^\n]*", "", m.group(1).replace("\\\n", "\n"))
        out.append(json.loads(raw))
    return out
