"""`pulumi config set --path` on a stack file, for machines without the Pulumi CLI (reviews,
the local stack, its demo, tests):

    python -m infershift.spec.config_path -s ack-canary 'routes.inference-route.backends.mymodel-pool-v2' 50

Path syntax as Pulumi's: `a.b`, `a[0]`, `a["key.with.dots"]`; the first segment is the
`infershift:` config key. As with the CLI, "true"/"false" become booleans and integers
numbers (`--type` forces one). The file is replaced atomically, so a running local stack
sees the old file or the new one; like the CLI, the body is rewritten (anchors expanded),
and the header comment is kept.
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Any

import yaml

from .files import write_atomic

NAMESPACE = "infershift"
_SEGMENT = re.compile(r'\.?([^.\[\]"]+)|\["((?:[^"\\]|\\.)*)"\]|\[(\d+)\]')


class ConfigPathError(ValueError):
    pass


def parse_path(path: str) -> list[str | int]:
    """'pools.p.models["/model/llama2"].targets.a' -> ['pools', 'p', 'models', '/model/llama2', 'targets', 'a']."""
    out: list[str | int] = []
    pos = 0
    while pos < len(path):
        m = _SEGMENT.match(path, pos)
        if not m or m.end() == pos:
            raise ConfigPathError(f"invalid config path {path!r} at character {pos + 1}")
        key, quoted, index = m.groups()
        if index is not None:
            out.append(int(index))
        else:
            out.append(key if key is not None else quoted.replace('\\"', '"'))
        pos = m.end()
    if not out or not isinstance(out[0], str):
        raise ConfigPathError(f"config path {path!r} must start with a key")
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


def parse_value(text: str, type_: str = "auto") -> Any:
    """Pulumi's `--path` typing: integers and true/false become numbers and booleans."""
    if type_ == "string":
        return text
    if type_ in ("auto", "int") and re.fullmatch(r"-?[0-9]+", text):
        return int(text)
    if type_ in ("auto", "bool") and text in ("true", "false"):
        return text == "true"
    if type_ == "float":
        try:
            return float(text)
        except ValueError:
            pass
    if type_ != "auto":
        raise ConfigPathError(f"{text!r} is not a {type_}")
    return text


def set_path(document: dict, path: str, value: Any) -> dict:
    """Set `value` at `path` under the document's `config:`; missing maps are created."""
    parts = parse_path(path)
    key = parts[0] if ":" in str(parts[0]) else f"{NAMESPACE}:{parts[0]}"
    config = document.setdefault("config", {})
    if not parts[1:]:
        config[key] = value
        return document
    node: Any = config.setdefault(key, {} if isinstance(parts[1], str) else [])
    where = str(key)
    for part, nxt in zip(parts[1:], parts[2:] + [None]):
        last = nxt is None
        fresh: Any = value if last else ({} if isinstance(nxt, str) else [])
        if isinstance(part, int):
            if not isinstance(node, list):
                raise ConfigPathError(f"{where} is not a list")
            if part == len(node):
                node.append(fresh)
            elif part > len(node):
                raise ConfigPathError(f"{where}[{part}] is past the end of the list")
            elif last:
                node[part] = value
        else:
            if not isinstance(node, dict):
                raise ConfigPathError(f"{where} is not a map")
            if last or part not in node:
                node[part] = fresh
        node = node[part]
        where += f"[{part}]" if isinstance(part, int) else f".{part}"
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


def set_many_in_file(file: Path, values: dict[str, Any], out: Path | None = None) -> None:
    """Several `--path` sets in one atomic write (no invalid state in between)."""
    text = Path(file).read_text()
    document = yaml.safe_load(text) or {}
    for path, value in values.items():
        set_path(document, path, value)
    write_atomic(Path(out or file), _header(text) + yaml.safe_dump(document, sort_keys=False, allow_unicode=True))


def set_in_file(file: Path, path: str, value: Any, out: Path | None = None) -> None:
    set_many_in_file(file, {path: value}, out)


def main(argv: list[str] | None = None) -> int:
    from .load import STACKS_DIR, stack_path

    ap = argparse.ArgumentParser(prog="python -m infershift.spec.config_path", description=__doc__.split("\n\n")[0])
    ap.add_argument("-s", "--stack", required=True)
    ap.add_argument("path")
    ap.add_argument("value")
    ap.add_argument("--type", default="auto", choices=["auto", "string", "int", "bool", "float"])
    ap.add_argument("--stacks-dir", type=Path, default=STACKS_DIR)
    ap.add_argument("--out", type=Path, help="write here instead of editing the stack file in place")
    ns = ap.parse_args(argv)
    file = stack_path(ns.stack, ns.stacks_dir)
    if not file.exists():
        print(f"no stack file {file}", file=sys.stderr)
        return 2
    try:
        set_in_file(file, ns.path, parse_value(ns.value, ns.type), ns.out)
    except ConfigPathError as err:
        print(str(err), file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
