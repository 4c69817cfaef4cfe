"""Where a rollout's windows come from: a Prometheus (its HTTP query API) or, without one, the
pickers' own /metrics pages. Both give snapshots of the same series; a window is the difference
of two snapshots, series by series (a series that is new counts from zero; one that fell, its
picker restarted, counts from its new value), then summed per side. So both sources judge the
same numbers, and no `increase()` extrapolation or first-sample loss skews a short window.

The series (infershift/picker/telemetry.py):

- TTFT: `llm_d_epp_request_ttft_seconds` (upstream's, llm-d-router pkg/epp/metrics);
- ITL: `llm_d_epp_request_ntpot_seconds`, upstream's normalized time per output token
  (end-to-end time / output tokens), the EPP's per-token latency;
- end to end: `llm_d_epp_request_duration_seconds`;
- outcomes: `infershift_picker_target_responses_total{status}`: 5xx and responses without a
  status are errors, 429 is shed; a route rollout adds the picker's own 429s
  (`infershift_picker_errors_total{status="429"}`, requests it shed before any model server);
- output tokens/s: `infershift_picker_target_tokens_total{kind="completion"}` over
  `infershift_picker_target_latency_seconds_sum`.

A side is a pool's picker (route rollouts) or one target model of it (model-split rollouts,
`target_model_name` / `target_model` labels). With Prometheus, a pool's series are selected by a
label matcher (`pool_matcher`, default `job="{pool}-epp"`, the picker Service's name, as
`devstack up --prometheus` and most ServiceMonitor / PodMonitoring setups label them).
"""
from __future__ import annotations

import json
import math
import time
import urllib.parse
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from .window import Histogram, Window

TTFT = "llm_d_epp_request_ttft_seconds"
ITL = "llm_d_epp_request_ntpot_seconds"
E2E = "llm_d_epp_request_duration_seconds"
RESPONSES = "infershift_picker_target_responses_total"
TOKENS = "infershift_picker_target_tokens_total"
LATENCY_SUM = "infershift_picker_target_latency_seconds_sum"
PICKER_ERRORS = "infershift_picker_errors_total"
SERIES = (f"{TTFT}_bucket", f"{ITL}_bucket", f"{E2E}_bucket", RESPONSES, TOKENS, LATENCY_SUM, PICKER_ERRORS)

Key = tuple[str, tuple[tuple[str, str], ...]]
Snapshot = dict[Key, float]


@dataclass(frozen=True)
class Side:
    """One side of a rollout: a pool's picker, optionally one target model of it."""

    pool: str
    target: str | None = None

    def label(self) -> str:
        return self.pool if self.target is None else f"{self.pool}/{self.target}"


class Source(Protocol):
    def snapshot(self, pools: Iterable[str]) -> dict[str, tuple[float, Snapshot]]:
        """Pool -> (time, its series now)."""
        ...

    def queries(self, side: Side) -> list[str]:
        """What a person would type to see the same numbers (shown in the report)."""
        ...


def _key(name: str, labels: dict[str, str]) -> Key:
    return name, tuple(sorted(labels.items()))


def parse_text(text: str) -> Snapshot:
    """The series a rollout reads, from a Prometheus text exposition (a picker's /metrics)."""
    from prometheus_client.parser import text_string_to_metric_families

    out: Snapshot = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name in SERIES:
                out[_key(s.name, dict(s.labels))] = float(s.value)
    return out


def _delta(later: Snapshot, earlier: Snapshot) -> Snapshot:
    out = {}
    for k, v in later.items():
        before = earlier.get(k, 0.0)
        out[k] = v - before if v >= before else v
    return out


def _target_of(labels: dict[str, str]) -> str | None:
    return labels.get("target_model_name", labels.get("target_model"))


def to_window(delta: Snapshot, side: Side, seconds: float) -> Window:
    """One side's window from per-series increases."""
    hists: dict[str, dict[float, float]] = {TTFT: {}, ITL: {}, E2E: {}}
    w = Window(seconds=seconds)
    for (name, items), v in delta.items():
        labels = dict(items)
        if name == PICKER_ERRORS:
            # the picker's own rejections carry no target model: a route rollout's side only
            if side.target is None and labels.get("status") == "429":
                w.shed += v
                w.responses += v
            continue
        if side.target is not None and _target_of(labels) != side.target:
            continue
        base = name.removesuffix("_bucket")
        if base in hists:
            le = labels.get("le", "+Inf")
            bound = math.inf if le in ("+Inf", "Inf") else float(le)
            hists[base][bound] = hists[base].get(bound, 0.0) + v
        elif name == RESPONSES:
            w.responses += v
            status = labels.get("status", "")
            if status == "429":
                w.shed += v
            elif status == "none" or status.startswith("5") or not status.isdigit():
                w.errors += v
        elif name == TOKENS and labels.get("kind") == "completion":
            w.output_tokens += v
        elif name == LATENCY_SUM:
            w.latency_seconds += v
    w.ttft, w.itl, w.e2e = (Histogram.of(hists[n]) if hists[n] else Histogram() for n in (TTFT, ITL, E2E))
    return w


def window(earlier: tuple[float, Snapshot], later: tuple[float, Snapshot], side: Side) -> Window:
    return to_window(_delta(later[1], earlier[1]), side, later[0] - earlier[0])


class MetricsPages:
    """The fallback without Prometheus: each pool's picker /metrics, read directly (every replica's,
    when a pool has several: give all their URLs)."""

    def __init__(self, urls: dict[str, list[str]], timeout: float = 5.0):
        self.urls = urls
        self.timeout = timeout

    def snapshot(self, pools: Iterable[str]) -> dict[str, tuple[float, Snapshot]]:
        out = {}
        for pool in pools:
            merged: Snapshot = {}
            now = time.time()
            for i, url in enumerate(self.urls[pool]):
                with urllib.request.urlopen(url, timeout=self.timeout) as r:
                    page = parse_text(r.read().decode())
                # replicas' series kept apart (each resets on its own)
                merged.update({(n, (*labels, ("__replica", str(i)))): v for (n, labels), v in page.items()})
            out[pool] = (now, merged)
        return out

    def queries(self, side: Side) -> list[str]:
        target = f", target_model_name={side.target!r}" if side.target else ""
        return [f"GET {u}: {n}{{{target.lstrip(', ')}}}" for u in self.urls[side.pool]
                for n in (f"{TTFT}_bucket", f"{ITL}_bucket", f"{E2E}_bucket", RESPONSES)][:4]


class PrometheusError(RuntimeError):
    pass


class Prometheus:
    """Any Prometheus-compatible HTTP query API (`/api/v1/query`): a Prometheus server, ACK's
    managed Prometheus, GKE Managed Service for Prometheus's frontend. Each snapshot is one instant
    query per pool at the same evaluation time (`time=`), so both sides are read at one instant."""

    def __init__(self, url: str, pool_matcher: str = 'job="{pool}-epp"', timeout: float = 10.0,
                 headers: dict[str, str] | None = None):
        self.url = url.rstrip("/")
        self.pool_matcher = pool_matcher
        self.timeout = timeout
        self.headers = headers or {}

    def selector(self, pool: str) -> str:
        names = "|".join(SERIES)
        return f'{{__name__=~"{names}", {self.pool_matcher.format(pool=pool)}}}'

    def query(self, promql: str, at: float | None = None) -> list[dict]:
        params = {"query": promql}
        if at is not None:
            params["time"] = f"{at:.3f}"
        req = urllib.request.Request(f"{self.url}/api/v1/query?{urllib.parse.urlencode(params)}", headers=self.headers)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as r:
                body = json.load(r)
        except urllib.error.HTTPError as e:
            raise PrometheusError(f"{self.url}: {e.code} {e.read()[:300]!r} for {promql}") from None
        except OSError as e:
            raise PrometheusError(f"{self.url}: {e}") from None
        if body.get("status") != "success":
            raise PrometheusError(f"{self.url}: {body.get('errorType')}: {body.get('error')} for {promql}")
        return body["data"]["result"]

    def snapshot(self, pools: Iterable[str]) -> dict[str, tuple[float, Snapshot]]:
        at = time.time()
        out = {}
        for pool in pools:
            snap: Snapshot = {}
            for item in self.query(self.selector(pool), at):
                labels = dict(item["metric"])
                name = labels.pop("__name__")
                snap[_key(name, labels)] = float(item["value"][1])
            out[pool] = (at, snap)
        return out

    def queries(self, side: Side) -> list[str]:
        sel = self.pool_matcher.format(pool=side.pool)
        if side.target:
            sel += f', target_model_name="{side.target}"'
        tsel = self.pool_matcher.format(pool=side.pool) + (f', target_model="{side.target}"' if side.target else "")
        return [
            f"histogram_quantile(0.9, sum by (le) (increase({TTFT}_bucket{{{sel}}}[$window])))",
            f"histogram_quantile(0.9, sum by (le) (increase({ITL}_bucket{{{sel}}}[$window])))",
            f"histogram_quantile(0.9, sum by (le) (increase({E2E}_bucket{{{sel}}}[$window])))",
            f'sum(increase({RESPONSES}{{{tsel}, status=~"5..|none"}}[$window])) / sum(increase({RESPONSES}{{{tsel}}}[$window]))',
            f'sum(increase({RESPONSES}{{{tsel}, status="429"}}[$window])) / sum(increase({RESPONSES}{{{tsel}}}[$window]))',
            f'sum(increase({TOKENS}{{{tsel}, kind="completion"}}[$window])) / sum(increase({LATENCY_SUM}{{{tsel}}}[$window]))',
        ]
