"""The simulated servers every router sits in front of: N sims spread over a few processes."""
from __future__ import annotations

import json
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from .metrics_scrape import prefix_counters
from .procs import MAIN_PY, Proc, free_port, http_ok


@dataclass
class SimSpec:
    servers: int = 8
    processes: int = 2            # sims share these; on 2 cores more buys nothing
    profile: str = "h100-8b"
    model: str = "llama-3.1-8b"
    aliases: tuple[str, ...] = ()  # extra served names (the overload workload's criticality classes)
    lora_modules: tuple[str, ...] = ()
    max_loras: int = 1
    max_num_seqs: int | None = None
    num_gpu_blocks: int | None = None
    max_model_len: int | None = None
    time_scale: float = 1.0
    seed: int = 0
    extra: tuple[str, ...] = field(default_factory=tuple)

    def argv(self, servers: int, pod_prefix: str) -> list[str]:
        a = [str(MAIN_PY), "-m", "infershift.sim", "--profile", self.profile, "--model", self.model,
             "--served-model-name", self.model, *self.aliases,
             # Port 0: each server binds a free port and prints it. (`--port 0 --servers 1` is
             # refused by the sim's range check, so a single server gets a probed port.)
             "--servers", str(servers), "--port", str(0 if servers > 1 else free_port()), "--host", "127.0.0.1",
             "--pod-name", pod_prefix, "--time-scale", repr(self.time_scale), "--seed", str(self.seed),
             "--max-loras", str(self.max_loras),
             # the omniscient router and the capacity search ask each server's /admin/predict at the
             # address they route to (no gateway in front here)
             "--admin-port", "same"]
        if self.lora_modules:
            a += ["--lora-modules", *self.lora_modules]
        for flag, v in (("--max-num-seqs", self.max_num_seqs), ("--num-gpu-blocks", self.num_gpu_blocks),
                        ("--max-model-len", self.max_model_len)):
            if v is not None:
                a += [flag, str(v)]
        return a + list(self.extra)


class SimPool:
    def __init__(self, spec: SimSpec, workdir: Path):
        self.spec = spec
        self.workdir = workdir
        self.procs: list[Proc] = []
        self.addresses: list[str] = []   # ip:port of every server

    def start(self) -> "SimPool":
        n, k = self.spec.servers, max(1, min(self.spec.processes, self.spec.servers))
        sizes = [n // k + (1 if i < n % k else 0) for i in range(k)]
        try:
            for i, size in enumerate(sizes):
                p = Proc(f"sim{i}", self.spec.argv(size, f"sim{i}"), self.workdir / f"sim{i}.log")
                self.procs.append(p)
            for p, size in zip(self.procs, sizes):
                for m in p.wait_log(r"listening on http://([\d.]+):(\d+)", size, timeout=60):
                    self.addresses.append(f"{m.group(1)}:{m.group(2)}")
            for a in self.addresses:
                self.procs[0].wait_for(lambda a=a: http_ok(f"http://{a}/health"), 30, f"{a} healthy")
        except BaseException:
            self.stop()
            raise
        return self

    def urls(self) -> list[str]:
        return [f"http://{a}" for a in self.addresses]

    def cpu_seconds(self) -> float:
        return sum(p.cpu_seconds() for p in self.procs)

    def prefix_cache(self) -> tuple[float, float]:
        """(queries, hits) in tokens summed over the pool, from each server's /metrics."""
        q = h = 0.0
        for a in self.addresses:
            with urllib.request.urlopen(f"http://{a}/metrics", timeout=10) as r:
                dq, dh = prefix_counters(r.read().decode())
            q += dq
            h += dh
        return q, h

    def predict(self, address: str, body: dict) -> dict:
        req = urllib.request.Request(f"http://{address}/admin/predict", data=json.dumps(body).encode(),
                                     headers={"content-type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.loads(r.read())

    def stop(self) -> None:
        for p in self.procs:
            p.stop()

    def __enter__(self) -> "SimPool":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
