"""YAML as Kubernetes and Pulumi read it, minus the silent surprise: a key given twice in one
mapping is an error naming the key and both lines (PyYAML keeps the last one; `kubectl apply`
refuses such a document), rather than one of the two values quietly winning."""
from __future__ import annotations

from typing import Any

import yaml


class DuplicateKeyError(yaml.YAMLError):
    pass


class StrictLoader(yaml.SafeLoader):
    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            # `<<: *anchor` merges are YAML's own override mechanism: keys given beside one win
            # over the merged ones legitimately; only keys written twice are mistakes.
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            try:
                first = seen.setdefault(key, line)
            except TypeError:  # an unhashable key: let the base class report it
                continue
            if first != line:
                raise DuplicateKeyError(f"key {key!r} is given twice (lines {first} and {line}); "
                                        "YAML keeps only the last, so one of them would be silently ignored")
        return super().construct_mapping(node, deep=deep)


def load(text: str) -> Any:
    return yaml.load(text, Loader=StrictLoader)  # noqa: S506 (a SafeLoader subclass)


def load_all(text: str):
    return yaml.load_all(text, Loader=StrictLoader)  # noqa: S506
