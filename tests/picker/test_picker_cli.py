"""Command line: flags override the file, --endpoints-file, clear exit on a bad config."""
from __future__ import annotations

import os
import subprocess
import sys

from infershift.picker.__main__ import parse_args
from infershift.picker.app import load
from bench.pickerbench.procs import REPO


def test_flags_override_file(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("pool: {name: a, namespace: x}\nendpoints: [{address: '10.0.0.1:8000'}]\n")
    eps = tmp_path / "eps.txt"
    eps.write_text("# pool members\n10.0.0.2:8000 pod-2\n10.0.0.3:8001\n\n")
    opts = parse_args(["--config", str(cfg), "--pool-name", "b", "--pool-namespace", "y", "--poll-interval", "20ms",
                       "--stale-after", "2s", "--endpoints-file", str(eps), "--grpc-port", "1", "--health-port", "2",
                       "--metrics-port", "3", "--host", "0.0.0.0", "--fallbacks", "1", "--log-level", "warning"])
    assert (opts.grpc_port, opts.health_port, opts.metrics_port, opts.host, opts.fallbacks) == (1, 2, 3, "0.0.0.0", 1)
    c = load(opts)
    assert (c.pool_name, c.pool_namespace, c.poll_interval, c.stale_after) == ("b", "y", 0.02, 2.0)
    assert [(e.address, e.name) for e in c.endpoints] == [("10.0.0.2:8000", "pod-2"), ("10.0.0.3:8001", "10.0.0.3:8001")]


def test_bad_config_exits_2_naming_the_field(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("endpoints: [{address: 'nohost'}]\n")
    r = subprocess.run([sys.executable, "-m", "infershift.picker", "--config", str(cfg)], capture_output=True, text=True,
                       timeout=60, cwd=str(REPO), env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert r.returncode == 2 and "endpoints[0].address" in r.stderr
