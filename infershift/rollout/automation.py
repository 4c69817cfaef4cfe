"""Apply through Pulumi's Automation API (`pulumi.automation`): a cloud stack's edits go live with
`pulumi up`, its output streamed to the log. The Automation API drives the Pulumi CLI, so one must
be installed (or `pulumi_command` names its directory, as the realengine build puts it)."""
from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

from .controller import RolloutError


def project_dir(stack_file: Path) -> Path:
    """The Pulumi project the stack file belongs to: the nearest directory above it with a Pulumi.yaml."""
    for d in [stack_file.parent, *stack_file.parents]:
        if (d / "Pulumi.yaml").is_file():
            return d
    raise RolloutError(f"{stack_file}: no Pulumi.yaml above it: not in a Pulumi project")


def _project_name(stack_file: Path) -> str:
    import yaml

    return str(yaml.safe_load((project_dir(stack_file) / "Pulumi.yaml").read_text())["name"])


def stack_name(stack_file: Path) -> str:
    return stack_file.name.removeprefix("Pulumi.").removesuffix(".yaml")


class AutomationApply:
    def __init__(self, pulumi_root: str | None = None, env: dict[str, str] | None = None,
                 log: Callable[[str], None] = lambda msg: print(msg, flush=True), program: Callable[[], None] | None = None):
        self.pulumi_root = pulumi_root
        self.env = env or {}
        self.log = log
        self.program = program
        """An inline program (the Automation API serves it itself); None: the project's own program."""

    def stack(self, stack_file: Path):
        from pulumi import automation as auto

        root = self.pulumi_root
        if root is None and shutil.which("pulumi") is None:
            raise RolloutError("the Automation API runs the Pulumi CLI, and there is none on PATH "
                               "(install it, or give its directory: --pulumi-root)")
        try:
            command = auto.PulumiCommand(root=root) if root else None
            opts = auto.LocalWorkspaceOptions(work_dir=str(project_dir(stack_file)), pulumi_command=command,
                                              env_vars={**os.environ, **self.env})
            if self.program is not None:
                return auto.select_stack(stack_name(stack_file), project_name=_project_name(stack_file),
                                         program=self.program, opts=opts)
            return auto.select_stack(stack_name(stack_file), work_dir=str(project_dir(stack_file)), opts=opts)
        except auto.CommandError as e:
            raise RolloutError(f"pulumi: {str(e).strip()[-600:]}") from None

    def apply(self, stack_file: Path) -> str:
        from pulumi import automation as auto

        stack = self.stack(stack_file)
        try:
            result = stack.up(on_output=lambda line: self.log(f"pulumi up: {line.rstrip()}"))
        except auto.CommandError as e:
            raise RolloutError(f"pulumi up failed: {str(e).strip()[-600:]}") from None
        changes = ", ".join(f"{k} {v}" for k, v in (result.summary.resource_changes or {}).items())
        return f"pulumi up: {result.summary.result} ({changes or 'no changes'})"
