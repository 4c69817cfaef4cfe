"""Report generation from a small recorded run (tests/bench/data/recorded: a trimmed quick run)."""
import json
import shutil
from pathlib import Path

import pytest

from bench import report

DATA = Path(__file__).parent / "data" / "recorded"


@pytest.fixture
def run_dir(tmp_path):
    shutil.copytree(DATA, tmp_path / "run")
    return tmp_path / "run"


def _raw(name):
    return json.loads((DATA / "raw" / f"{name}.json").read_text())["summary"]


def test_report_tables_ratios_and_plots(run_dir):
    text = report.write(run_dir).read_text()
    me, lr = _raw("shared-prefix__infershift__0.8"), _raw("shared-prefix__envoy-lr__0.8")
    ratio = me["ttft_p90"] / lr["ttft_p90"]
    # The ratio table and the target line both carry the ratio computed from the raw figures.
    assert f"| shared-prefix | 0.8x | envoy-lr | {ratio:.2f} |" in text
    verdict = "met" if ratio <= 0.5 else "MISSED"
    assert f"TTFT p90 infershift / Envoy least-request: ratio {ratio:.2f} (target <= 0.5) — **{verdict}**" in text
    best = min(_raw("shared-prefix__sglang-cache-aware__0.8")["ttft_p90"],
               _raw("shared-prefix__vllm-cache-aware__0.8")["ttft_p90"])
    assert f"best of SGLang and vLLM routers: ratio {me['ttft_p90'] / best:.2f}" in text
    # Per-router rows with TTFT p90 in ms.
    assert f"| infershift | 0.8x |" in text and f"| {me['ttft_p90'] * 1000:.0f} |" in text
    # A failure is reported, not hidden.
    assert "vllm-cache-aware: `example failure kept for the report test`" in text
    for scn in ("shared-prefix", "overload", "long-context"):
        png = run_dir / "plots" / f"{scn}-ttft-p90.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"](plots/{png.name})" in text


def test_report_long_context_added_latency_and_criticality(run_dir):
    text = report.write(run_dir).read_text()
    direct, me = _raw("long-context__direct__4"), _raw("long-context__infershift__4")
    added_ms = (me["ttft_mean"] - direct["ttft_mean"]) * 1000
    assert f"| infershift | 4 | {me['ttft_mean'] * 1000:.0f} | {me['ttft_p90'] * 1000:.0f} | {added_ms:.0f} |" in text
    crit = _raw("overload__infershift__2")["by_criticality"]
    shed = crit["Sheddable"]
    assert f"| infershift | 2x | Sheddable | {shed['requests']} | {shed['ok']} | {shed['shed']} |" in text


def test_long_context_target_uses_upstream_figures():
    runs = [
        {"scenario": "long-context", "router": "direct", "level": 20, "mode": "closed",
         "summary": {"ttft_mean": 0.100, "ttft_p90": 0.12, "ok": 40, "errors": 0}, "cores": {"router": 0.0}},
        {"scenario": "long-context", "router": "infershift", "level": 20, "mode": "closed",
         "summary": {"ttft_mean": 0.110, "ttft_p90": 0.13, "ok": 40, "errors": 0}, "cores": {"router": 0.5}},
        {"scenario": "long-context", "router": "infershift", "level": 60, "mode": "closed",
         "summary": {"ttft_mean": 0.300, "ttft_p90": 0.4, "ok": 40, "errors": 0}, "cores": {"router": 0.5}},
        {"scenario": "long-context", "router": "direct", "level": 60, "mode": "closed",
         "summary": {"ttft_mean": 0.100, "ttft_p90": 0.12, "ok": 40, "errors": 0}, "cores": {"router": 0.0}},
    ]
    _, added = report.long_context(runs)
    assert added[("infershift", 20)] == pytest.approx(0.010)
    shared = [{"scenario": "shared-prefix", "router": "infershift", "level": 0.8, "mode": "open",
               "summary": {"ttft_p90": 0.1, "output_tokens_per_s": 100.0}}]
    lines = "\n".join(report.targets(shared, added))
    assert "concurrency 20: infershift adds 10 ms vs upstream 158 ms (target <= 16 ms) — **met**" in lines
    assert "concurrency 60: infershift adds 200 ms vs upstream 426 ms (target <= 43 ms) — **MISSED**" in lines
