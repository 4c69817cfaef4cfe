"""What every router launcher provides: start in front of a pool, a base URL, stop, CPU accounting."""
from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..procs import Proc, free_port, start_envoy


@dataclass
class Setup:
    """Everything a launcher needs to know about the pool it fronts."""
    addresses: list[str]               # ip:port of each simulated server
    workdir: Path                      # configs and logs go here
    base_model: str
    # client model name -> criticality ("Critical" | "Standard" | "Sheddable"), all served by base_model
    classes: dict[str, str] = field(default_factory=dict)


class Router:
    name = "router"
    description = ""
    # The process that picks endpoints for a gateway (an ext_proc server), when the router has one
    # apart from its proxy: its CPU per request is reported on its own.
    picker_process: str | None = None

    def __init__(self) -> None:
        self.procs: list[Proc] = []
        self.base_url = ""

    def start(self, setup: Setup) -> str:
        raise NotImplementedError

    def stop(self) -> None:
        for p in reversed(self.procs):
            p.stop()
        self.procs = []

    def start_front_envoy(self, setup: Setup, config: Callable[[int, int], dict]) -> str:
        """Real Envoy in front of the pool: `config(listen_port, admin_port)` is its bootstrap,
        written to the workdir as `<name>-envoy.json`; started (validated, ready on its admin
        port) as one of this router's processes. Returns the base URL clients send to."""
        port, admin = free_port(), free_port()
        path = setup.workdir / f"{self.name}-envoy.json"
        path.write_text(json.dumps(config(port, admin), indent=1))
        self.procs.append(start_envoy(f"{self.name}-envoy", path, admin, setup.workdir))
        self.base_url = f"http://127.0.0.1:{port}"
        return self.base_url

    def unavailable(self) -> str | None:
        """Why this router cannot run on this machine (a part not built), or None. The runner leaves
        such a router out of the run with the reason instead of failing."""
        return None

    def cpu_seconds(self) -> float:
        return sum(p.cpu_seconds() for p in self.procs)

    def cpu_by_process(self) -> dict[str, float]:
        return {p.name: p.cpu_seconds() for p in self.procs}

    def core_processes(self) -> dict[str, int]:
        return {p.name: p.pid for p in self.procs}


def wait_serving(base_url: str, model: str, timeout: float = 60.0) -> None:
    """Ready means a real request comes back 200 through the router (workers discovered, etc.)."""
    body = json.dumps({"model": model, "messages": [{"role": "user", "content": "ping"}],
                       "max_tokens": 1}).encode()
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        try:
            req = urllib.request.Request(base_url + "/v1/chat/completions", data=body,
                                         headers={"content-type": "application/json"})
            with urllib.request.urlopen(req, timeout=10) as r:
                if r.status == 200:
                    return
        except urllib.error.HTTPError as e:
            last = f"HTTP {e.code}: {e.read()[:200]!r}"
        except OSError as e:
            last = str(e)
        time.sleep(0.2)
    raise TimeoutError(f"{base_url} did not serve a request within {timeout}s (last: {last})")
