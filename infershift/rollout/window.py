"""One side's window: what the stable or the canary side did between two instants.

Histograms are cumulative bucket counts as Prometheus exposes them (`le` upper bounds, the last
+Inf). Quantiles interpolate linearly inside a bucket, as PromQL's `histogram_quantile` does
(prometheus/promql/quantile.go), so the figures here read like a dashboard's.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field


@dataclass
class Histogram:
    bounds: list[float] = field(default_factory=list)
    """Upper bounds, increasing, the last +Inf."""
    counts: list[float] = field(default_factory=list)
    """Cumulative counts per bound."""

    @property
    def count(self) -> float:
        return self.counts[-1] if self.counts else 0.0

    @classmethod
    def of(cls, buckets: dict[float, float]) -> Histogram:
        bounds = sorted(buckets)
        counts = [buckets[b] for b in bounds]
        # a counter reset or a scrape racing an observation can leave a dent: counts never fall
        for i in range(1, len(counts)):
            counts[i] = max(counts[i], counts[i - 1])
        return cls(bounds, counts)

    @classmethod
    def from_samples(cls, values: list[float], bounds: tuple[float, ...] | list[float]) -> Histogram:
        edges = sorted(bounds) + ([math.inf] if not bounds or sorted(bounds)[-1] != math.inf else [])
        return cls(edges, [float(sum(1 for v in values if v <= b)) for b in edges])

    def minus(self, earlier: Histogram) -> Histogram:
        """This histogram's increase since `earlier` (the same buckets; a reset counts from zero)."""
        if not earlier.counts:
            return Histogram(list(self.bounds), list(self.counts))
        before = dict(zip(earlier.bounds, earlier.counts))
        if any(before.get(b, 0.0) > c for b, c in zip(self.bounds, self.counts)):
            return Histogram(list(self.bounds), list(self.counts))  # restarted in between
        return Histogram.of({b: c - before.get(b, 0.0) for b, c in zip(self.bounds, self.counts)})

    def plus(self, other: Histogram) -> Histogram:
        if not self.counts:
            return Histogram(list(other.bounds), list(other.counts))
        if not other.counts:
            return Histogram(list(self.bounds), list(self.counts))
        mine, theirs = dict(zip(self.bounds, self.counts)), dict(zip(other.bounds, other.counts))
        return Histogram.of({b: mine.get(b, 0.0) + theirs.get(b, 0.0) for b in set(mine) | set(theirs)})

    def quantile(self, q: float) -> float | None:
        """PromQL-style: linear within the bucket; the +Inf bucket answers its lower bound."""
        n = self.count
        if n <= 0:
            return None
        rank = q * n
        lower_bound, lower_count = 0.0, 0.0
        for b, c in zip(self.bounds, self.counts):
            if c >= rank:
                if math.isinf(b):
                    return lower_bound
                if c == lower_count:
                    return b
                return lower_bound + (b - lower_bound) * (rank - lower_count) / (c - lower_count)
            lower_bound, lower_count = b, c
        return lower_bound

    def above(self, threshold: float) -> float:
        """How many observations exceed `threshold` (linear within its bucket)."""
        lower_bound, lower_count = 0.0, 0.0
        for b, c in zip(self.bounds, self.counts):
            if threshold < b:
                if math.isinf(b):
                    at = lower_count
                else:
                    at = lower_count + (c - lower_count) * (threshold - lower_bound) / (b - lower_bound)
                return self.count - at
            lower_bound, lower_count = b, c
        return 0.0

    def to_json(self) -> dict:
        return {"bounds": ["+Inf" if math.isinf(b) else b for b in self.bounds], "counts": self.counts}

    @classmethod
    def from_json(cls, d: dict) -> Histogram:
        return cls([math.inf if b == "+Inf" else float(b) for b in d["bounds"]], [float(c) for c in d["counts"]])


@dataclass
class Window:
    """One side over one window."""

    ttft: Histogram = field(default_factory=Histogram)
    itl: Histogram = field(default_factory=Histogram)
    e2e: Histogram = field(default_factory=Histogram)
    responses: float = 0.0
    """Responses that came back (any status)."""
    errors: float = 0.0
    """5xx answers and responses without a status (the model server failed)."""
    shed: float = 0.0
    """429s (shed under saturation), counted apart from errors."""
    output_tokens: float = 0.0
    latency_seconds: float = 0.0
    """Sum of the responses' end-to-end times (output tokens per second of request time)."""
    seconds: float = 0.0
    """The window's length."""

    @property
    def error_rate(self) -> float | None:
        return self.errors / self.responses if self.responses else None

    @property
    def shed_rate(self) -> float | None:
        return self.shed / self.responses if self.responses else None

    @property
    def output_tokens_per_second(self) -> float | None:
        return self.output_tokens / self.latency_seconds if self.latency_seconds > 0 else None

    def minus(self, earlier: Window) -> Window:
        """The increase since `earlier`; a counter that fell (its picker restarted) counts from zero."""
        def d(a: float, b: float) -> float:
            return a - b if a >= b else a

        return Window(self.ttft.minus(earlier.ttft), self.itl.minus(earlier.itl), self.e2e.minus(earlier.e2e),
                      d(self.responses, earlier.responses), d(self.errors, earlier.errors), d(self.shed, earlier.shed),
                      d(self.output_tokens, earlier.output_tokens), d(self.latency_seconds, earlier.latency_seconds),
                      self.seconds - earlier.seconds)

    def plus(self, other: Window) -> Window:
        return Window(self.ttft.plus(other.ttft), self.itl.plus(other.itl), self.e2e.plus(other.e2e),
                      self.responses + other.responses, self.errors + other.errors, self.shed + other.shed,
                      self.output_tokens + other.output_tokens, self.latency_seconds + other.latency_seconds,
                      max(self.seconds, other.seconds))

    def to_json(self) -> dict:
        return {"ttft": self.ttft.to_json(), "itl": self.itl.to_json(), "e2e": self.e2e.to_json(),
                "responses": self.responses, "errors": self.errors, "shed": self.shed,
                "outputTokens": self.output_tokens, "latencySeconds": self.latency_seconds, "seconds": self.seconds}

    @classmethod
    def from_json(cls, d: dict) -> Window:
        return cls(Histogram.from_json(d["ttft"]), Histogram.from_json(d["itl"]), Histogram.from_json(d["e2e"]),
                   d["responses"], d["errors"], d["shed"], d["outputTokens"], d["latencySeconds"], d.get("seconds", 0.0))
