"""The end-of-rollout report: Markdown with every step's gates and the queries, a PNG timeline,
and the recorded polls and windows."""
from __future__ import annotations

import json
import random

from infershift import spec as stackspec
from infershift.rollout import report
from infershift.rollout.controller import Outcome, Step
from infershift.rollout.decide import judge
from infershift.rollout.metrics import Prometheus, Side
from tests.rollout.conftest import TESTDATA
from tests.rollout.series import side


def test_report_files(tmp_path):
    ro = stackspec.load_file(TESTDATA / "Pulumi.rollout.yaml").rollouts["v2"]
    rng = random.Random(5)
    history = []
    for i, (percent, error_rate) in enumerate([(25, 0.0), (50, 0.3)]):
        stable = side(rng, 300, ttft=0.1, itl=0.02, tokens=50, error_rate=0.0)
        canary = side(rng, 100, ttft=0.1, itl=0.02, tokens=50, error_rate=error_rate)
        history.append(Step(1000.0 + i * 5, i, percent, judge(ro.gates, canary, stable, ro.min_requests)))
    outcome = Outcome("RolledBack", history[-1].result.reason, history)
    prom = Prometheus("http://127.0.0.1:9")
    md = report.write(tmp_path, "v2", ro, outcome, {"pool-v2": prom.queries(Side("pool-v2"))}, "Prometheus")
    text = md.read_text()
    assert text.startswith("# Rollout `v2`: RolledBack")
    assert "| 1/3 | 25 | 100 | 300 |" in text and "| 2/3 | 50 | 100 | 300 |" in text
    assert "error rate" in text and 'llm_d_epp_request_ttft_seconds_bucket{job="pool-v2-epp"}' in text
    png = (tmp_path / "timeline.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    data = json.loads((tmp_path / "history.json").read_text())
    assert [p["verdict"] for p in data["polls"]] == ["pass", "fail"]
