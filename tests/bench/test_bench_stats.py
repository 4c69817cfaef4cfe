import random
import statistics

import pytest

from bench.arrivals import poisson_offsets
from bench.stats import percentile, summarize


def test_percentile_interpolates_like_numpy_default():
    xs = list(range(1, 11))  # numpy.percentile(1..10, q): 50 -> 5.5, 90 -> 9.1, 99 -> 9.91
    assert percentile(xs, 50) == pytest.approx(5.5)
    assert percentile(xs, 90) == pytest.approx(9.1)
    assert percentile(xs, 99) == pytest.approx(9.91)
    assert percentile(xs, 0) == 1 and percentile(xs, 100) == 10
    assert percentile([7.0], 90) == 7.0


def test_percentile_ignores_input_order_and_empty_is_none():
    xs = [5, 1, 4, 2, 3]
    assert percentile(xs, 50) == 3
    assert percentile([], 50) is None
    with pytest.raises(ValueError, match="q must be in"):
        percentile(xs, 101)


def _rec(status, ttft=None, e2e=1.0, out=10, itl=(), crit=None):
    return {"status": status, "ttft": ttft, "e2e": e2e, "output_tokens": out, "itl": list(itl),
            "prompt_tokens": 100, "cached_tokens": 50, "tags": {"criticality": crit} if crit else {}}


def test_summarize_counts_classes_and_only_successes_in_latency():
    recs = [_rec("ok", 0.1, itl=[0.01, 0.02], crit="Critical"), _rec("ok", 0.3, crit="Critical"),
            _rec("shed", crit="Sheddable", out=0), _rec("error", out=0, crit="Sheddable"),
            _rec("ok", 0.2, crit="Sheddable")]
    s = summarize(recs, wall=2.0)
    assert (s["requests"], s["ok"], s["shed"], s["errors"]) == (5, 3, 1, 1)
    assert s["ttft_p50"] == pytest.approx(0.2)
    assert s["itl_p50"] == pytest.approx(0.015)
    assert s["output_tokens"] == 30 and s["output_tokens_per_s"] == pytest.approx(15.0)
    assert s["by_criticality"]["Critical"]["ok"] == 2
    assert s["by_criticality"]["Sheddable"]["shed"] == 1
    assert s["by_criticality"]["Sheddable"]["errors"] == 1


def test_poisson_arrivals_have_exponential_gaps():
    rate = 50.0
    offs = poisson_offsets(rate, 20000, random.Random(3))
    gaps = [b - a for a, b in zip([0.0] + offs, offs)]
    m = statistics.fmean(gaps)
    assert m == pytest.approx(1 / rate, rel=0.03)
    # Exponential: standard deviation equals the mean (coefficient of variation 1).
    assert statistics.pstdev(gaps) / m == pytest.approx(1.0, abs=0.05)
    assert offs == sorted(offs)


def test_poisson_arrivals_deterministic_and_bounded():
    a = poisson_offsets(10, 100, random.Random(1))
    assert a == poisson_offsets(10, 100, random.Random(1))
    assert a != poisson_offsets(10, 100, random.Random(2))
    short = poisson_offsets(10, 1000, random.Random(1), duration=2.0)
    assert 5 < len(short) < 45 and short[-1] <= 2.0
    with pytest.raises(ValueError, match="rate"):
        poisson_offsets(0, 10, random.Random(1))
