"""The gates' verdicts on one step's window: the canary against the stable side (or absolute
limits), with no verdict before the minimum sample count.

Noise is handled by bounds, not raw ratios of small counts:

- rates (errors, 429s): the canary fails only when the *lower* end of the Wilson score interval
  of its rate (one-sided, at `gates.confidence`) is over the limit (the upper end of stable's
  interval + tolerance, or `max`). Two errors in forty requests do not fail a step; five in a hundred against a clean
  stable do. (Wilson, "Probable inference ...", JASA 22 (1927); the interval recommended over
  the normal approximation for small counts by Brown, Cai & DasGupta, Stat. Sci. 16 (2001).)
- p90 latencies: the limit is stable's p90 × (1 + tolerance), or `max`. If the canary's p90 were
  at the limit, the share of its requests above the limit would be 10 %; it fails only when the
  Wilson lower bound of that share is over 10 %, i.e. when its p90 is over the limit with the
  given confidence. A single slow request in a small window moves a p90 estimate a lot; it does
  not move this bound much.
- output tokens/s (tokens per second of request time) is a ratio of sums over all the window's
  responses, so it is stable once `minRequests` responses are in; compared as is.

When the stable side got too few responses in the window (the last step sends it little or
nothing), relative gates use the latest stable window that had enough (`baseline`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Literal

from infershift.spec.rollouts import Gates, LatencyGate, RateGate, ThroughputGate

from .window import Histogram, Window

Verdict = Literal["pass", "fail", "wait"]
QUANTILE = 0.9
TAIL = 1 - QUANTILE
LABELS = {"ttft_p90": "TTFT p90", "itl_p90": "ITL p90", "e2e_p90": "e2e p90", "error_rate": "error rate",
          "shed_rate": "429 rate", "output_tokens_per_second": "output tok/s"}


def wilson(k: float, n: float, confidence: float) -> tuple[float, float]:
    """One-sided Wilson score bounds (lower, upper) of a binomial proportion k/n."""
    if n <= 0:
        return 0.0, 1.0
    z = NormalDist().inv_cdf(confidence)
    p = min(max(k / n, 0.0), 1.0)
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass
class GateResult:
    gate: str
    verdict: Verdict
    canary: float | None
    stable: float | None
    limit: float | None
    reason: str = ""

    @property
    def label(self) -> str:
        return LABELS.get(self.gate, self.gate)

    def to_json(self) -> dict:
        return {"gate": self.gate, "verdict": self.verdict, "canary": self.canary, "stable": self.stable,
                "limit": self.limit, "reason": self.reason}


@dataclass
class StepResult:
    verdict: Verdict
    canary_requests: float
    stable_requests: float
    gates: list[GateResult] = field(default_factory=list)
    reason: str = ""

    def to_json(self) -> dict:
        return {"verdict": self.verdict, "canaryRequests": self.canary_requests, "stableRequests": self.stable_requests,
                "reason": self.reason, "gates": [g.to_json() for g in self.gates]}


def _fmt_s(v: float | None) -> str:
    return "-" if v is None else (f"{v * 1000:.0f}ms" if v < 10 else f"{v:.1f}s")


def _latency(name: str, gate: LatencyGate, canary: Histogram, stable: Histogram | None, confidence: float
             ) -> GateResult:
    c90 = canary.quantile(QUANTILE)
    s90 = stable.quantile(QUANTILE) if stable is not None else None
    limits = []
    if gate.tolerance is not None:
        if s90 is None:
            return GateResult(name, "wait", c90, None, None, "no stable latencies to compare with yet")
        limits.append(s90 * (1 + gate.tolerance))
    if gate.max_seconds is not None:
        limits.append(gate.max_seconds)
    limit = min(limits)
    n = canary.count
    if n <= 0:
        return GateResult(name, "wait", c90, s90, limit, "no canary latencies yet")
    slow = canary.above(limit)
    low, _ = wilson(slow, n, confidence)
    if low > TAIL:
        return GateResult(name, "fail", c90, s90, limit,
                          f"{LABELS[name]} {_fmt_s(c90)} over {_fmt_s(limit)}: {slow:.0f} of {n:.0f} requests slower "
                          f"(≥{low:.0%} at {confidence:.0%} confidence; a p90 allows 10%)")
    return GateResult(name, "pass", c90, s90, limit)


def _rate(name: str, gate: RateGate, k: float, n: float, stable: tuple[float, float] | None, confidence: float
          ) -> GateResult:
    rate = k / n if n else None
    stable_rate = stable[0] / stable[1] if stable and stable[1] else None
    limits = []
    if gate.tolerance is not None:
        if stable is None or not stable[1]:
            return GateResult(name, "wait", rate, None, None, "no stable responses to compare with yet")
        # stable's own rate is an estimate too: its upper bound, so its noise cannot fail the canary
        limits.append(wilson(stable[0], stable[1], confidence)[1] + gate.tolerance)
    if gate.max is not None:
        limits.append(gate.max)
    limit = min(limits)
    low, _ = wilson(k, n, confidence)
    if n and low > limit:
        return GateResult(name, "fail", rate, stable_rate, limit,
                          f"{LABELS[name]} {rate:.1%} ({k:.0f} of {n:.0f}; ≥{low:.1%} at {confidence:.0%} "
                          f"confidence) over {limit:.1%}")
    return GateResult(name, "pass", rate, stable_rate, limit)


def _throughput(gate: ThroughputGate, canary: Window, stable: Window | None) -> GateResult:
    name = "output_tokens_per_second"
    c = canary.output_tokens_per_second
    s = stable.output_tokens_per_second if stable is not None else None
    limits = []
    if gate.tolerance is not None:
        if s is None:
            return GateResult(name, "wait", c, None, None, "no stable tokens to compare with yet")
        limits.append(s * (1 - gate.tolerance))
    if gate.min is not None:
        limits.append(gate.min)
    limit = max(limits)
    if c is None:
        return GateResult(name, "wait", None, s, limit, "no canary tokens yet")
    if c < limit:
        return GateResult(name, "fail", c, s, limit, f"output {c:.0f} tok/s under {limit:.0f} tok/s")
    return GateResult(name, "pass", c, s, limit)


def judge(gates: Gates, canary: Window, stable: Window, min_requests: int,
          baseline: Window | None = None, min_stable: int | None = None) -> StepResult:
    """The step's verdict: `wait` until the canary has `min_requests` responses; then `fail` if any
    gate fails, `pass` when all pass."""
    need_stable = min_stable if min_stable is not None else min_requests
    ref: Window | None = stable if stable.responses >= need_stable else baseline
    results: list[GateResult] = []
    conf = gates.confidence
    for name in ("ttft_p90", "itl_p90", "e2e_p90"):
        gate = getattr(gates, name)
        if gate is not None:
            hist = {"ttft_p90": "ttft", "itl_p90": "itl", "e2e_p90": "e2e"}[name]
            results.append(_latency(name, gate, getattr(canary, hist), getattr(ref, hist) if ref else None, conf))
    if gates.error_rate is not None:
        results.append(_rate("error_rate", gates.error_rate, canary.errors, canary.responses,
                             (ref.errors, ref.responses) if ref else None, conf))
    if gates.shed_rate is not None:
        results.append(_rate("shed_rate", gates.shed_rate, canary.shed, canary.responses,
                             (ref.shed, ref.responses) if ref else None, conf))
    if gates.output_tokens_per_second is not None:
        results.append(_throughput(gates.output_tokens_per_second, canary, ref))
    n = canary.responses
    failed = [r for r in results if r.verdict == "fail"]
    if n < min_requests:
        return StepResult("wait", n, stable.responses, results,
                          f"{n:.0f} of {min_requests} canary responses")
    if failed:
        return StepResult("fail", n, stable.responses, results, "; ".join(r.reason for r in failed))
    waiting = [r for r in results if r.verdict == "wait"]
    if waiting:
        return StepResult("wait", n, stable.responses, results, "; ".join(r.reason for r in waiting))
    return StepResult("pass", n, stable.responses, results, "all gates pass")
