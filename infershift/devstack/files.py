"""Atomic file replacement: readers (Envoy's watched directory, the pickers' reload,
the stack watcher) see the old file or the new one, never a half-written one."""
from __future__ import annotations

from pathlib import Path

import yaml

from infershift.spec.files import write_atomic

__all__ = ["write_atomic", "write_yaml", "write_yaml_all"]


def write_yaml(path: Path, data: dict) -> None:
    write_atomic(path, yaml.safe_dump(data, sort_keys=False))


def write_yaml_all(path: Path, docs: list[dict]) -> None:
    write_atomic(path, yaml.safe_dump_all(docs, sort_keys=False) if docs else "")
