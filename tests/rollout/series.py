"""Seeded series of one side's responses, as the picker would record them (its buckets)."""
from __future__ import annotations

import random

from infershift.rollout.window import Histogram, Window

# llm-d-router pkg/epp/metrics: TTFT, NTPOT and general latency buckets (as infershift/picker/telemetry.py)
TTFT = (0.005, 0.025, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 1.0, 1.25, 1.5, 2, 3, 4, 5, 6, 8, 10, 15, 20, 30, 45, 60, 120)
NTPOT = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)
E2E = (0.005, 0.025, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 1.0, 1.25, 1.5, 2, 3, 4, 5, 6, 8, 10, 15, 20, 30,
       45, 60, 120, 180, 240, 300, 360, 480, 600, 900, 1200, 1800, 2700, 3600)


def side(rng: random.Random, n: int, ttft: float, itl: float, tokens: int, error_rate: float) -> Window:
    """n responses: lognormal TTFT and per-token times around the given medians (sigma 0.35),
    output lengths uniform within ±50 % of `tokens`, errors at `error_rate`."""
    ttfts, itls, e2es = [], [], []
    out = 0.0
    errors = 0
    for _ in range(n):
        if rng.random() < error_rate:
            errors += 1
            continue
        t = ttft * rng.lognormvariate(0, 0.35)
        per = itl * rng.lognormvariate(0, 0.35)
        k = rng.randint(tokens // 2, tokens * 3 // 2)
        total = t + per * k
        ttfts.append(t)
        itls.append(total / k)
        e2es.append(total)
        out += k
    return Window(Histogram.from_samples(ttfts, TTFT), Histogram.from_samples(itls, NTPOT),
                  Histogram.from_samples(e2es, E2E), responses=n, errors=errors, output_tokens=out,
                  latency_seconds=sum(e2es))
