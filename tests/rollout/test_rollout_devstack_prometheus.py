"""`devstack up --prometheus`: a real Prometheus scraping every picker (job <pool>-epp), simulator
and Envoy, stopped with the stack on Ctrl-C."""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from infershift.devstack import prometheus
from infershift.devstack.ports import free_port

TESTDATA = Path(__file__).resolve().parent / "testdata"
REPO = Path(__file__).resolve().parents[2]


def test_devstack_up_with_prometheus(tmp_path):
    if prometheus.binary() is None:
        pytest.skip("no prometheus binary on this machine (apt-get install prometheus; CI installs it)")
    file = tmp_path / "Pulumi.rollout.yaml"
    shutil.copyfile(TESTDATA / "Pulumi.rollout.yaml", file)
    proc = subprocess.Popen([sys.executable, "-m", "infershift.devstack", "up", "--file", str(file), "--listener-port",
                             f"http={free_port()}", "--time-scale", "20", "--workdir", str(tmp_path / "work"),
                             "--prometheus"],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 120
        url = None
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            m = re.search(r"prometheus (http://127\.0\.0\.1:\d+)", line)
            url = url or (m.group(1) if m else None)
            if "devstack: ready" in line:
                break
        assert url, "".join(lines[-30:])
        deadline = time.monotonic() + 30
        while True:
            with urllib.request.urlopen(f"{url}/api/v1/targets", timeout=5) as r:
                targets = json.load(r)["data"]["activeTargets"]
            health = {t["labels"]["job"]: t["health"] for t in targets}
            if set(health.values()) == {"up"} or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert health == {"pool-v1-epp": "up", "pool-v2-epp": "up", "v1": "up", "v2": "up", "envoy": "up"}, health
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
    assert proc.returncode == 0, "".join(lines[-20:])
    assert not [p for p in Path("/proc").iterdir() if p.name.isdigit() and _cmd(p).startswith(str(
        prometheus.binary())) and str(tmp_path) in _cmd(p)]


def _cmd(p: Path) -> str:
    try:
        return (p / "cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""
