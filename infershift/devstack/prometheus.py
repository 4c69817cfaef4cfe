"""A real Prometheus for the local stack (Debian's `prometheus` package, or any `prometheus`
binary on PATH / `$INFERSHIFT_PROMETHEUS`): scrapes every picker (job `<pool>-epp`, the picker
Service's name on a cluster), every simulated replica (job `<Deployment>`) and Envoy
(`/stats/prometheus`, job `envoy`), once a second; supervised like the stack's other processes
and stopped with it. Rollouts read it through its HTTP query API (infershift/rollout/metrics.py).
"""
from __future__ import annotations

import os
import shutil
import urllib.request
from pathlib import Path

import yaml

from .ports import HOST, free_port
from .procs import http_ok


def binary() -> str | None:
    """The Prometheus binary, or None (the Makefile installs Debian's package where it can)."""
    explicit = os.environ.get("INFERSHIFT_PROMETHEUS")
    if explicit:
        return explicit if Path(explicit).is_file() else None
    return shutil.which("prometheus") or ("/usr/bin/prometheus" if Path("/usr/bin/prometheus").is_file() else None)


def scrape_config(stack, interval: str = "1s") -> dict:
    """Prometheus' config for a started LocalStack."""
    jobs = [{"job_name": f"{name}-epp", "static_configs": [{"targets": [f"{HOST}:{p.metrics_port}"],
                                                             "labels": {"pool": name}}]}
            for name, p in stack.pools.items()]
    for group, eps in stack.endpoints.items():
        jobs.append({"job_name": group, "static_configs": [{"targets": [e.address for e in eps]}]})
    jobs.append({"job_name": "envoy", "metrics_path": "/stats/prometheus",
                 "static_configs": [{"targets": [f"{HOST}:{stack.admin_port}"]}]})
    return {"global": {"scrape_interval": interval, "evaluation_interval": interval}, "scrape_configs": jobs}


def start(stack, interval: str = "1s", timeout: float = 30.0) -> str:
    """Start Prometheus for a started LocalStack; its base URL. Raises FileNotFoundError without
    a binary."""
    exe = binary()
    if exe is None:
        raise FileNotFoundError("no prometheus binary (apt-get install prometheus, or set INFERSHIFT_PROMETHEUS)")
    directory = Path(stack.workdir) / "prometheus"
    (directory / "data").mkdir(parents=True, exist_ok=True)
    config = directory / "prometheus.yml"
    config.write_text(yaml.safe_dump(scrape_config(stack, interval), sort_keys=False))
    port = free_port()
    child = stack.supervisor.start("prometheus", [
        exe, f"--config.file={config}", f"--storage.tsdb.path={directory / 'data'}",
        f"--web.listen-address={HOST}:{port}", "--storage.tsdb.retention.time=1d", "--log.level=warn"])
    url = f"http://{HOST}:{port}"
    stack.supervisor.wait_ready(child, lambda: http_ok(f"{url}/-/ready"), timeout)
    stack.notes.append(f"prometheus {url} (scrapes pickers, simulators and Envoy every {interval})")
    return url


def targets_up(url: str) -> dict[str, str]:
    """Scrape job -> health of its targets, as Prometheus reports them."""
    import json

    with urllib.request.urlopen(f"{url}/api/v1/targets", timeout=5) as r:
        body = json.load(r)
    return {t["labels"]["job"]: t["health"] for t in body["data"]["activeTargets"]}
