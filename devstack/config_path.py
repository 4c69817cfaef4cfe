"""`pulumi config set --path` on a stack file, for machines without the Pulumi CLI (the
demo, tests, CI): the same path syntax and value typing, written atomically so the
running local stack sees the old file or the new one."""
from __future__ import annotations

import re
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


def parse_value(text: str, type_: str = "auto") -> Any:
    """Pulumi's `--path` typing: integers and true/false become numbers and booleans."""
    if type_ == "string":
        return text
    if type_ in ("auto", "int") and re.fullmatch(r"-?[0-9]+", text):
        return int(text)
    if type_ in ("auto", "bool") and text in ("true", "false"):
        return text == "true"
    if type_ == "float":
        return float(text)
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
    node = config.setdefault(key, {} if isinstance(parts[1], str) else [])
    where = key
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


def set_in_file(file: Path, path: str, value: Any) -> None:
    document = yaml.safe_load(Path(file).read_text()) or {}
    set_path(document, path, value)
    write_atomic(Path(file), yaml.safe_dump(document, sort_keys=False))


def set_many_in_file(file: Path, values: dict[str, Any]) -> None:
    """Several `--path` sets in one atomic write (no invalid state in between)."""
    document = yaml.safe_load(Path(file).read_text()) or {}
    for path, value in values.items():
        set_path(document, path, value)
    write_atomic(Path(file), yaml.safe_dump(document, sort_keys=False))
