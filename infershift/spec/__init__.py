"""infershift's typed stack config: stack YAML -> StackSpec, shared by the Pulumi
program and the local stack so both read a stack the same way."""
from .checks import Problem, problems, warnings
from .load import (
    STACKS_DIR,
    StackConfigError,
    config_values,
    load_file,
    load_stack,
    stack_names,
    stack_path,
    validate,
)
from .model import StackSpec
from .picker_config import picker_config

__all__ = [
    "Problem", "problems", "warnings", "STACKS_DIR", "StackConfigError", "config_values",
    "load_file", "load_stack", "stack_names", "stack_path", "validate", "StackSpec", "picker_config",
]
