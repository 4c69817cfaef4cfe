"""A tiny end-to-end bench: 2 simulators behind real Envoy round robin, runner + report."""
import json

from bench import report, runner
from bench import workloads as wl
from bench.plan import MODEL, Scenario
from bench.simpool import SimSpec


def test_tiny_bench_end_to_end(tmp_path):
    sc = Scenario(
        "shared-prefix", SimSpec(servers=2, processes=1, model=MODEL, num_gpu_blocks=4096, time_scale=2.0),
        lambda n, seed: wl.shared_prefix(MODEL, n, groups=2, system_tokens=256, question_tokens=16,
                                         output_tokens=8, seed=seed),
        ["envoy-rr"], levels=[0.5], duration=3, min_count=8, capacity_concurrency=8, capacity_count=16)
    meta = runner.run([sc], tmp_path, seed=1, quick=True, argv=["--test"])
    assert meta["failures"] == []
    cap = meta["scenarios"]["shared-prefix"]["capacity"]
    assert cap["requests_per_s"] > 0 and cap["errors"] == 0
    raw = json.loads((tmp_path / "raw" / "shared-prefix__envoy-rr__0.5.json").read_text())
    s = raw["summary"]
    assert raw["rate_per_s"] == cap["requests_per_s"] * 0.5
    assert s["ok"] == raw["count"] >= 8 and s["errors"] == 0
    assert s["ttft_p90"] > 0 and s["output_tokens"] == 8 * s["ok"]
    assert 0 <= s["prefix_cache_hit_rate"] <= 1
    # Round robin over two servers: both got requests.
    assert len(raw["requests_per_pod"]) == 2
    assert raw["cores"]["loadgen"] > 0 and raw["cores"]["sims"] > 0 and raw["cores"]["router"] > 0
    path = report.write(tmp_path)
    text = path.read_text()
    assert "| envoy-rr | 0.5x |" in text
    assert (tmp_path / "plots" / "shared-prefix-ttft-p90.png").stat().st_size > 1000
