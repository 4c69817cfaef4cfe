"""Apply a `pulumi config set --path` edit to a stack file, for reviews and tests without the CLI.

    python -m components.config_path -s ack-canary 'routes.inference-route.backends.mymodel-pool-v2' 50

Path syntax as Pulumi's: `a.b`, `a[0]`, `a["key.with.dots"]`; the first segment is the
`infershift:` config key. As with the CLI, "true"/"false" become booleans and integers numbers.
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Any

import yaml

NAMESPACE = "infershift"
_SEGMENT = re.compile(r'\["((?:[^"\\]|\\.)*)"\]|\[(\d+)\]|\.?([^.\[\]]+)')


class PathError(ValueError):
    pass


def parse_path(path: str) -> list[str | int]:
    out: list[str | int] = []
    pos = 0
    while pos < len(path):
        if path[pos] == "." and out:
            pos += 1
        m = _SEGMENT.match(path, pos)
        if not m or m.end() == pos:
            raise PathError(f"cannot parse config path {path!r} at character {pos}")
        quoted, index, plain = m.groups()
        out.append(int(index) if index is not None else (quoted if quoted is not None else plain))
        pos = m.end()
    if not out or not isinstance(out[0], str):
        raise PathError(f"config path {path!r} must start with a config key")
    return out


def format_path(segments: list[str | int]) -> str:
    out = ""
    for seg in segments:
        if isinstance(seg, int):
            out += f"[{seg}]"
        elif re.fullmatch(r"[^.\[\]\"]+", seg):
            out += ("." if out else "") + seg
        else:
            out += f'["{seg}"]'
    return out


def parse_value(text: str) -> Any:
    if text in ("true", "false"):
        return text == "true"
    if re.fullmatch(r"-?[0-9]+", text):
        return int(text)
    return text


def set_path(document: dict, path: str, value: Any) -> dict:
    """Set `path` (under the `infershift:` namespace) in a stack file document, in place."""
    segments = parse_path(path)
    config = document.setdefault("config", {})
    key = f"{NAMESPACE}:{segments[0]}" if ":" not in segments[0] else segments[0]
    if len(segments) == 1:
        config[key] = value
        return document
    node = config.setdefault(key, [] if isinstance(segments[1], int) else {})
    for seg, nxt in zip(segments[1:-1], segments[2:]):
        empty = [] if isinstance(nxt, int) else {}
        if isinstance(seg, int):
            if not isinstance(node, list):
                raise PathError(f"{path}: [{seg}] indexes a map")
            while len(node) <= seg:
                node.append(None)
            if node[seg] is None:
                node[seg] = empty
            node = node[seg]
        else:
            if not isinstance(node, dict):
                raise PathError(f"{path}: {seg!r} is a key of a list")
            if node.get(seg) is None:
                node[seg] = empty
            node = node[seg]
    last = segments[-1]
    if isinstance(last, int):
        while len(node) <= last:
            node.append(None)
    node[last] = value
    return document


def weight_paths(spec) -> list[str]:
    """Every canary weight (and mirror share) of a StackSpec, as `--path` strings."""
    out = []
    for r, route in spec.routes.items():
        out += [format_path(["routes", r, "backends", p]) for p in route.backends]
    for p, pool in spec.pools.items():
        for m, routing in pool.models.items():
            out += [format_path(["pools", p, "models", m, "targets", t]) for t in routing.targets]
    out += [format_path(["mirrors", m, "percent"]) for m in spec.mirrors]
    return out


def _header(text: str) -> str:
    lines = []
    for line in text.splitlines(keepends=True):
        if line.startswith("#") or not line.strip():
            lines.append(line)
        else:
            break
    return "".join(lines)


def main(argv: list[str] | None = None) -> int:
    from spec import STACKS_DIR, stack_path

    ap = argparse.ArgumentParser(prog="python -m components.config_path", description=__doc__.split("\n\n")[0])
    ap.add_argument("-s", "--stack", required=True)
    ap.add_argument("path")
    ap.add_argument("value")
    ap.add_argument("--stacks-dir", type=Path, default=STACKS_DIR)
    ap.add_argument("--out", type=Path, help="write here instead of editing the stack file in place")
    ns = ap.parse_args(argv)
    file = stack_path(ns.stack, ns.stacks_dir)
    if not file.exists():
        print(f"no stack file {file}", file=sys.stderr)
        return 2
    text = file.read_text()
    try:
        document = set_path(yaml.safe_load(text) or {}, ns.path, parse_value(ns.value))
    except PathError as err:
        print(str(err), file=sys.stderr)
        return 2
    # Like the Pulumi CLI, the body is rewritten (anchors expanded); the header comment is kept.
    (ns.out or file).write_text(_header(text) + yaml.safe_dump(document, sort_keys=False, allow_unicode=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
