"""Helpers for the picker tests: HTTP calls, the model-server pool, a running stack and its config."""
from __future__ import annotations

import http.client
import json
import os
import time
import urllib.request
from dataclasses import dataclass, field

import pytest
import yaml

from bench.pickerbench.procs import (free_port, http_get, start_envoy, start_modelservers, start_picker, tempdir,
                          wait_until)
from envoy_gateway import gateway_config


@dataclass
class Resp:
    status: int
    headers: dict
    body: bytes

    def json(self):
        return json.loads(self.body)


def request(port: int, method: str, path: str, body=None, headers: dict | None = None, timeout=30) -> Resp:
    hdrs = dict(headers or {})
    if isinstance(body, (dict, list)):
        body = json.dumps(body).encode()
        hdrs.setdefault("content-type", "application/json")
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request(method, path, body=body, headers=hdrs)
        r = c.getresponse()
        return Resp(r.status, {k.lower(): v for k, v in r.getheaders()}, r.read())
    finally:
        c.close()


def complete(port: int, model: str, prompt: str = "hello", headers=None, **extra) -> Resp:
    return request(port, "POST", "/v1/completions", {"model": model, "prompt": prompt, **extra}, headers)


@dataclass
class Servers:
    proc: object
    ports: dict[str, int]  # server key -> port

    def addr(self, key: str) -> str:
        return f"127.0.0.1:{self.ports[key]}"

    def admin(self, key: str, **state) -> dict:
        req = urllib.request.Request(f"http://{self.addr(key)}/admin", data=json.dumps(state).encode(),
                                     method="POST", headers={"content-type": "application/json"})
        with urllib.request.urlopen(req, timeout=5) as r:
            return json.loads(r.read())

    def seen(self, key: str) -> list[dict]:
        return json.loads(http_get(f"http://{self.addr(key)}/admin")[1])["seen"]


@dataclass
class Stack:
    workdir: str
    servers: Servers
    config_path: str
    picker: object = None
    envoys: list = field(default_factory=list)
    grpc_port: int = 0
    metrics_port: int = 0
    health_port: int = 0

    def metrics(self) -> str:
        return http_get(f"http://127.0.0.1:{self.metrics_port}/metrics")[1]

    def metric(self, name: str, **labels) -> float:
        """Sum of samples of `name` whose labels include `labels`."""
        total = 0.0
        for line in self.metrics().splitlines():
            if not line.startswith(name + "{"):
                continue
            lab, value = line[len(name) + 1:].rsplit("} ", 1)
            if all(f'{k}="{v}"' in lab for k, v in labels.items()):
                total += float(value)
        return total

    def wait_scraped(self, servers: "Servers", timeout: float = 20, **want) -> None:
        """Poll the picker's gauges until it has scraped the given state, e.g. a1=(waiting, kv, loras),
        in a scrape that started after this call."""
        since = time.time()

        def ok():
            for key, (waiting, kv, loras) in want.items():
                addr = servers.addr(key)
                if (self.metric("infershift_picker_endpoint_last_scrape_timestamp_seconds", endpoint=addr) <= since or self.metric("infershift_picker_endpoint_queue_depth", endpoint=addr) != waiting
                        or abs(self.metric("infershift_picker_endpoint_kv_cache_usage", endpoint=addr) - kv) > 1e-9
                        or self.metric("infershift_picker_endpoint_active_loras", endpoint=addr) != loras):
                    return False
            return True
        wait_until(ok, timeout, f"picker to scrape {want}")
        time.sleep(0.05)  # past the 10 ms scheduling snapshot

    def write_config(self, cfg: dict) -> None:
        tmp = self.config_path + ".tmp"
        with open(tmp, "w") as f:
            yaml.safe_dump(cfg, f)
        os.replace(tmp, self.config_path)  # atomic, like a ConfigMap update

    def envoy(self, **kw) -> int:
        """Start one more Envoy in front of this stack's picker; returns its listener port."""
        lp, ap = free_port(), free_port()
        cfg = gateway_config(listen_port=lp, admin_port=ap, picker_port=kw.pop("picker_port", self.grpc_port),
                             pool=[self.servers.addr(k) for k in kw.pop("pool_keys", self.servers.ports)], **kw)
        self.envoys.append(start_envoy(cfg, self.workdir, ap))
        return lp


SERVER_SPECS = {
    # two target ports of one pod, serving the base model and two registered LoRA adapters
    "a1": {"name": "pod-a", "models": ["llama"], "adapters": ["sql-v1", "sql-v2"], "max_lora": 2},
    "a2": {"name": "pod-a", "models": ["llama"], "adapters": ["sql-v1", "sql-v2"], "max_lora": 2},
    "b": {"name": "pod-b", "models": ["llama"], "adapters": ["sql-v1", "sql-v2"], "max_lora": 2},
    # a different base model in the same pool (seed 004's reasoning pool mixes QwQ and others)
    "q": {"name": "pod-q", "models": ["qwq-32b"], "max_lora": 0},
    # SGLang-format metrics
    "s1": {"name": "pod-s1", "models": ["mistral"], "style": "sglang"},
    "s2": {"name": "pod-s2", "models": ["mistral"], "style": "sglang"},
}


def base_config(servers: Servers, **over) -> dict:
    cfg = {
        "pool": {"name": "test-pool", "namespace": "default"},
        "endpoints": [{"address": servers.addr(k), "name": f"{SERVER_SPECS[k]['name']}-{k}"} for k in SERVER_SPECS],
        "models": {
            "sql": {"criticality": "Critical",
                    "targets": [{"model": "sql-v1", "weight": 70}, {"model": "sql-v2", "weight": 30}]},
            "batch": {"criticality": "Sheddable", "targets": [{"model": "llama", "weight": 1}]},
        },
        "sessionHeader": "x-session-id",
        "limits": {"maxBodyBytes": 256 * 1024},
        "metrics": {"pollInterval": "20ms", "staleAfter": "400ms", "modelsInterval": "500ms"},
        "telemetry": {"responseSampleRate": 1.0},  # tests count every response
        # the restore path (the default, "served", leaves the target's name: test_picker_response_model.py)
        "responseModel": "client",
    }
    cfg.update(over)
    return cfg


