"""Launcher for the omniscient router (omniscient_proxy.py) as its own process."""
from __future__ import annotations

from ..procs import MAIN_PY, Proc
from .base import Router, Setup


class OmniscientRouter(Router):
    name = "omniscient"
    description = "bench/routers/omniscient_proxy.py: asks every server's /admin/predict, forwards to the lowest TTFT"

    def start(self, setup: Setup) -> str:
        argv = [str(MAIN_PY), "-m", "bench.routers.omniscient_proxy", "--port", "0", "--seed", "0"]
        for a in setup.addresses:
            argv += ["--backend", a]
        p = Proc(self.name, argv, setup.workdir / f"{self.name}.log")
        self.procs.append(p)
        m = p.wait_log(r"listening on http://([\d.]+):(\d+)", 1, timeout=30)[0]
        self.base_url = f"http://{m.group(1)}:{m.group(2)}"
        return self.base_url
