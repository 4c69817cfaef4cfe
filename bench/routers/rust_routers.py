"""SGLang's router (PyPI sglang-router) and vLLM's router (PyPI vllm-router), both Rust
binaries behind a Python launcher, installed in their own venv (.venv-routers)."""
from __future__ import annotations

import json
import urllib.request

from ..procs import ROUTERS_VENV, Proc, free_port
from .base import Router, Setup


class RustRouter(Router):
    def __init__(self, kind: str, policy: str):
        super().__init__()
        if kind not in ("sglang", "vllm"):
            raise ValueError(f"kind must be sglang or vllm, got {kind!r}")
        self.kind, self.policy = kind, policy
        self.name = f"{kind}-{policy.replace('_', '-')}"
        pkg = "sglang-router 0.3.2" if kind == "sglang" else "vllm-router 0.1.17"
        self.description = f"{pkg}, --policy {policy}"

    def argv(self, setup: Setup, port: int, prom: int) -> list[str]:
        if self.kind == "sglang":
            head = [str(ROUTERS_VENV / "bin" / "python"), "-m", "sglang_router.launch_router"]
        else:
            head = [str(ROUTERS_VENV / "bin" / "vllm-router")]
        return head + [
            "--host", "127.0.0.1", "--port", str(port),
            "--worker-urls", *[f"http://{a}" for a in setup.addresses],
            "--policy", self.policy,
            "--prometheus-host", "127.0.0.1", "--prometheus-port", str(prom),
            "--log-level", "warn" if self.kind == "sglang" else "warning",
            "--request-timeout-secs", "300",
        ]

    def start(self, setup: Setup) -> str:
        if not (ROUTERS_VENV / "bin" / "python").exists():
            raise RuntimeError(f"{ROUTERS_VENV} is missing: python3.11 -m venv {ROUTERS_VENV} && "
                               f"{ROUTERS_VENV}/bin/pip install sglang-router==0.3.2 vllm-router==0.1.17")
        port, prom = free_port(), free_port()
        p = Proc(self.name, self.argv(setup, port, prom), setup.workdir / f"{self.name}.log")
        self.procs.append(p)
        self.base_url = f"http://127.0.0.1:{port}"
        # Workers register one by one in the background; a request answered early may have seen
        # only some of them, and cache-aware placement would then stick to those.
        n = len(setup.addresses)
        p.wait_for(lambda: healthy_workers(self.base_url) >= n, 90, f"reporting {n} healthy workers")
        return self.base_url


def healthy_workers(base_url: str) -> int:
    with urllib.request.urlopen(base_url + "/workers", timeout=2) as r:
        body = json.loads(r.read())
    return sum(1 for w in body.get("workers", []) if w.get("is_healthy"))
