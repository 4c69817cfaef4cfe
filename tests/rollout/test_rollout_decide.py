"""The gates' decisions on series: a bad canary is caught, a good one is not rolled back by noise,
and nothing is decided before the minimum sample count."""
from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest

from infershift.rollout.decide import judge, wilson
from infershift.rollout.window import Histogram, Window
from infershift.spec.rollouts import Gates

# the picker's upstream buckets (TTFT, NTPOT, e2e), as the windows from /metrics carry them
from tests.rollout.series import E2E, NTPOT, TTFT, side

GATES = Gates.model_validate({
    "ttftP90": {"tolerance": 0.25}, "itlP90": {"tolerance": 0.25}, "e2eP90": {"tolerance": 0.25},
    "errorRate": {"tolerance": 0.01}, "shedRate": {"max": 0.2}, "outputTokensPerSecond": {"tolerance": 0.25}})


def test_wilson_bounds_match_known_values():
    # 95 % two-sided Wilson interval for 5/100 is [0.0215, 0.1118] (Newcombe 1998, method 3): the
    # one-sided 97.5 % bounds
    low, high = wilson(5, 100, 0.975)
    assert low == pytest.approx(0.0215, abs=5e-4) and high == pytest.approx(0.1118, abs=5e-4)
    assert wilson(0, 0, 0.95) == (0.0, 1.0)
    assert wilson(0, 50, 0.95)[0] == 0.0


def test_histogram_quantile_as_promql():
    h = Histogram([0.1, 0.2, 0.4, math.inf], [10, 50, 100, 100])
    assert h.quantile(0.5) == pytest.approx(0.2)
    assert h.quantile(0.9) == pytest.approx(0.2 + 0.2 * 40 / 50)
    assert h.above(0.3) == pytest.approx(25)
    assert h.minus(Histogram([0.1, 0.2, 0.4, math.inf], [5, 25, 50, 50])).counts == [5, 25, 50, 50]
    # a reset in between: the later histogram is the window
    assert h.minus(Histogram([0.1, 0.2, 0.4, math.inf], [50, 60, 200, 200])).counts == h.counts


@pytest.mark.parametrize("seed", range(40))
def test_a_good_canary_is_not_rolled_back_by_noise(seed):
    rng = random.Random(seed)
    # same distributions on both sides, the canary with a tenth of the traffic, a 1 % error rate each
    stable = side(rng, 900, ttft=0.12, itl=0.02, tokens=120, error_rate=0.01)
    canary = side(rng, 100, ttft=0.12, itl=0.02, tokens=120, error_rate=0.01)
    result = judge(GATES, canary, stable, min_requests=100)
    assert result.verdict == "pass", result.reason


@pytest.mark.parametrize("seed", range(20))
@pytest.mark.parametrize("fault, gate", [
    ({"ttft": 0.36}, "ttft_p90"),                       # 3x slower first token
    ({"error_rate": 0.08}, "error_rate"),               # 8 % errors against 1 %
    ({"itl": 0.05}, "itl_p90"),                         # 2.5x slower decode
])
def test_a_bad_canary_is_caught(seed, fault, gate):
    rng = random.Random(1000 + seed)
    stable = side(rng, 900, ttft=0.12, itl=0.02, tokens=120, error_rate=0.01)
    canary = side(rng, 300, **{"ttft": 0.12, "itl": 0.02, "tokens": 120, "error_rate": 0.01, **fault})
    result = judge(GATES, canary, stable, min_requests=100)
    assert result.verdict == "fail"
    assert gate in [g.gate for g in result.gates if g.verdict == "fail"], result.reason


def test_no_verdict_before_the_minimum_sample_count():
    rng = random.Random(7)
    stable = side(rng, 900, ttft=0.12, itl=0.02, tokens=120, error_rate=0.0)
    # a terrible canary, but only 30 responses: wait
    canary = side(rng, 30, ttft=1.0, itl=0.2, tokens=120, error_rate=0.5)
    result = judge(GATES, canary, stable, min_requests=100)
    assert result.verdict == "wait" and "30 of 100" in result.reason


def test_small_counts_do_not_fail_on_a_raw_ratio():
    # 1 error in 40 (2.5 %) against a clean stable: the raw ratio is over stable + 1 %, the bound is not
    stable = Window(responses=2000, errors=0)
    canary = Window(responses=40, errors=1)
    gates = Gates.model_validate({"errorRate": {"tolerance": 0.01}})
    assert judge(gates, canary, stable, min_requests=40).verdict == "pass"
    # ... 15 in 200 is
    assert judge(gates, Window(responses=200, errors=15), stable, min_requests=40).verdict == "fail"


def test_the_last_step_compares_with_the_baseline():
    rng = random.Random(3)
    baseline = side(rng, 500, ttft=0.12, itl=0.02, tokens=120, error_rate=0.0)
    canary = side(rng, 300, ttft=0.5, itl=0.02, tokens=120, error_rate=0.0)
    # at 100 % the stable side gets nothing: relative gates wait without a baseline, judge with one
    assert judge(GATES, canary, Window(), min_requests=100).verdict == "wait"
    assert judge(GATES, canary, Window(), min_requests=100, baseline=baseline).verdict == "fail"


def test_absolute_limits_and_429s_apart_from_errors():
    gates = Gates.model_validate({"e2eP90": {"max": "2s"}, "errorRate": {"max": 0.02}, "shedRate": {"max": 0.1}})
    h = Histogram.from_samples([0.5] * 95 + [1.0] * 5, E2E)
    canary = Window(e2e=h, responses=100, errors=0, shed=40)
    result = judge(gates, canary, Window(), min_requests=50)
    verdicts = {g.gate: g.verdict for g in result.gates}
    assert verdicts == {"e2e_p90": "pass", "error_rate": "pass", "shed_rate": "fail"}
    assert result.verdict == "fail"


def test_series_module_buckets_are_the_pickers():
    from infershift.picker import telemetry
    assert TTFT == telemetry.TTFT and NTPOT == telemetry.NTPOT and E2E == telemetry.GENERAL_LATENCY


# --- recorded series: windows of the local stack's pools (tests/rollout/record_series.py) ---------

RECORDED = json.loads((Path(__file__).parent / "testdata" / "recorded_series.json").read_text())
# the rollout stack's gates, as a person would write them for this canary
RECORDED_GATES = Gates.model_validate({"ttftP90": {"tolerance": 0.5}, "e2eP90": {"tolerance": 0.5},
                                       "errorRate": {"tolerance": 0.02}, "outputTokensPerSecond": {"tolerance": 0.5}})


def _recorded(condition: str) -> list[tuple[Window, Window]]:
    return [(Window.from_json(w["canary"]), Window.from_json(w["stable"]))
            for w in RECORDED["conditions"][condition]["windows"]]


def test_recorded_healthy_canary_passes_every_window():
    windows = _recorded("healthy")
    assert len(windows) >= 8 and all(c.responses >= 40 and s.responses >= 120 for c, s in windows)
    for canary, stable in windows:
        result = judge(RECORDED_GATES, canary, stable, min_requests=40)
        assert result.verdict == "pass", result.reason


@pytest.mark.parametrize("condition, gate", [("errors-30pct", "error_rate"), ("ttft-delay-100ms", "ttft_p90")])
def test_recorded_faulty_canary_fails_every_window(condition, gate):
    for canary, stable in _recorded(condition):
        result = judge(RECORDED_GATES, canary, stable, min_requests=40)
        assert result.verdict == "fail" and gate in {g.gate for g in result.gates if g.verdict == "fail"}, \
            result.reason


def test_recorded_windows_wait_below_the_minimum():
    canary, stable = _recorded("errors-30pct")[0]
    assert judge(RECORDED_GATES, canary, stable, min_requests=int(canary.responses) + 1).verdict == "wait"
