"""infershift's typed stack config: stack YAML -> StackSpec, shared by the Pulumi
program and the local stack so both read a stack the same way.

Exports load on first use: the platform plug-ins (`infershift.platforms`) build on
`infershift.spec.base` while the spec's model builds on them, so importing this package must not
import the model.
"""
from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

_EXPORTS = {
    "Problem": "base", "problems": "checks", "warnings": "checks",
    "STACKS_DIR": "load", "StackConfigError": "load", "config_values": "load", "load_file": "load",
    "load_stack": "load", "stack_names": "load", "stack_path": "load", "validate": "load",
    "secret_config_keys": "load", "SECRET_PLACEHOLDER": "load",
    "StackSpec": "model", "picker_config": "picker_file",
}
__all__ = [
    "SECRET_PLACEHOLDER", "STACKS_DIR", "Problem", "StackConfigError", "StackSpec", "config_values", "load_file", "load_stack",
    "picker_config", "problems", "secret_config_keys", "stack_names", "stack_path", "validate", "warnings",
]

if TYPE_CHECKING:
    from .base import Problem
    from .checks import problems, warnings
    from .load import (
        SECRET_PLACEHOLDER,
        STACKS_DIR,
        StackConfigError,
        config_values,
        load_file,
        load_stack,
        secret_config_keys,
        stack_names,
        stack_path,
        validate,
    )
    from .model import StackSpec
    from .picker_file import picker_config


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
