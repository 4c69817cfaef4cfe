"""Stack file -> validated StackSpec, with errors that name the config path."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from infershift.platforms import REGISTRY

from . import strict_yaml
from .base import Problem
from .checks import problems, secret_key_problems
from .model import StackSpec

NAMESPACE = "infershift"


def default_stacks_dir() -> Path:
    """Where stack files are looked up by name: `$INFERSHIFT_STACKS_DIR`; else `./stacks` (a Pulumi
    project's `stackConfigDir`, as in this repository); else the source checkout's `stacks/`."""
    if os.environ.get("INFERSHIFT_STACKS_DIR"):
        return Path(os.environ["INFERSHIFT_STACKS_DIR"])
    here = Path.cwd() / "stacks"
    checkout = Path(__file__).resolve().parents[2] / "stacks"
    return here if here.is_dir() or not checkout.is_dir() else checkout


STACKS_DIR = default_stacks_dir()


class StackConfigError(ValueError):
    """Invalid stack config; `problems` lists each with its path."""

    def __init__(self, source: str, found: list[Problem]):
        self.source = source
        self.problems = found
        lines = "\n".join(f"  - {p}" for p in found)
        super().__init__(f"invalid stack config {source}:\n{lines}")


def stack_path(name: str, stacks_dir: Path = STACKS_DIR) -> Path:
    return stacks_dir / f"Pulumi.{name}.yaml"


def stack_names(stacks_dir: Path = STACKS_DIR) -> list[str]:
    return sorted(p.name[len("Pulumi."):-len(".yaml")] for p in stacks_dir.glob("Pulumi.*.yaml"))


# What a stack file holds for a value set with `pulumi config set --secret`: `{secure: <ciphertext>}`.
# Without the stack's secrets provider it cannot be read, so validation and the offline render see
# this placeholder in its place (the render prints it as `[secret]` too).
SECRET_PLACEHOLDER = "[secret]"


def _is_secure(value) -> bool:
    return isinstance(value, dict) and set(value) == {"secure"}


def _unsecure(value):
    if _is_secure(value):
        return SECRET_PLACEHOLDER
    if isinstance(value, dict):
        return {k: _unsecure(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_unsecure(v) for v in value]
    return value


def _has_secure(value) -> bool:
    if _is_secure(value):
        return True
    if isinstance(value, dict):
        return any(_has_secure(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_secure(v) for v in value)
    return False


def _config(document: dict | None, source: str) -> dict:
    config = (document or {}).get("config") or {}
    if not isinstance(config, dict):
        raise StackConfigError(source, [Problem("config", "`config:` must be a map")])
    values = {}
    for key, value in config.items():
        ns, sep, rest = str(key).partition(":")
        if sep and ns == NAMESPACE:
            values[rest] = value
    return values


def config_values(document: dict | None, source: str = "stack file") -> dict:
    """The `infershift:` keys of a Pulumi stack file's `config:` map, namespace stripped (secret
    values, `{secure: ...}`, as SECRET_PLACEHOLDER)."""
    return {k: _unsecure(v) for k, v in _config(document, source).items()}


def secret_config_keys(document: dict | None, source: str = "stack file") -> set[str]:
    """The `infershift:` keys holding a value set with `--secret` (Pulumi marks the whole key secret)."""
    return {k for k, v in _config(document, source).items() if _has_secure(v)}


def _loc(loc: tuple) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def _pydantic_problems(err: ValidationError) -> list[Problem]:
    found = []
    for e in err.errors():
        # Model-level validators report under their model's path; strip pydantic's prefix.
        msg = e["msg"].removeprefix("Value error, ")
        loc = tuple(p for p in e["loc"] if not (isinstance(p, str) and "[" in p and "function" in p))
        if loc[:1] == ("platform",) and len(loc) > 1 and loc[1] in REGISTRY:
            loc = loc[:1] + loc[2:]  # the union's tag (`kind`), which pydantic puts in the path
        if e["type"] == "union_tag_invalid":
            tag = (e.get("ctx") or {}).get("tag")
            msg = f"unknown platform kind {tag!r} (platforms: {', '.join(sorted(REGISTRY))})"
            loc = loc + ("kind",)
        elif e["type"] == "union_tag_not_found":
            msg = f"`kind` is required (platforms: {', '.join(sorted(REGISTRY))})"
            loc = loc + ("kind",)
        if e["type"] == "extra_forbidden":
            msg = "unknown key (check the spelling; keys are camelCase)"
        found.append(Problem(_loc(loc) or "(top level)", msg))
    return found


def canonical_order(value: Any) -> Any:
    """Every mapping's keys in sorted order, at every depth (lists keep theirs). The Pulumi engine
    hands structured config to the program as JSON with sorted keys (a real `pulumi up` showed it:
    a split's targets arrived in name order, so InferenceModel `targetModels` listed them so), while
    a stack file read here keeps its own order; validating both in one order makes the objects the
    local stack and the render build equal to the ones `pulumi up` deploys."""
    if isinstance(value, dict):
        return {k: canonical_order(value[k]) for k in sorted(value, key=str)}
    if isinstance(value, list):
        return [canonical_order(v) for v in value]
    return value


def validate(values: dict, source: str = "stack config", secret_keys: set[str] | frozenset[str] = frozenset()
             ) -> StackSpec:
    """Validate `infershift:` config values (namespace stripped; `secret_keys`: those set with
    `--secret`); raise StackConfigError."""
    misplaced = secret_key_problems(set(secret_keys))
    if misplaced:
        raise StackConfigError(source, misplaced)
    try:
        spec = StackSpec.model_validate(canonical_order(values))
    except ValidationError as err:
        raise StackConfigError(source, _pydantic_problems(err)) from None
    found = problems(spec)
    if found:
        raise StackConfigError(source, found)
    return spec


def load_file(path: str | Path) -> StackSpec:
    path = Path(path)
    try:
        document = strict_yaml.load(path.read_text())
    except yaml.YAMLError as err:
        raise StackConfigError(str(path), [Problem("(file)", f"not valid YAML: {err}")]) from None
    return validate(config_values(document, str(path)), str(path), secret_config_keys(document, str(path)))


def load_stack(name: str, stacks_dir: Path = STACKS_DIR) -> StackSpec:
    path = stack_path(name, stacks_dir)
    if not path.exists():
        known = ", ".join(stack_names(stacks_dir)) or "none"
        raise StackConfigError(str(path), [Problem("(stack)", f"no stack named {name!r} (stacks: {known})")])
    return load_file(path)
