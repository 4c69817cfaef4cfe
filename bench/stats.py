"""Percentiles and per-run summaries of load-generator records."""
from __future__ import annotations

import math
from typing import Iterable, Sequence


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0..100) with linear interpolation between ranks (numpy's default).

    None for no values, so a run with no successes reports nothing rather than 0.
    """
    if not 0 <= q <= 100:
        raise ValueError(f"percentile q must be in [0, 100], got {q}")
    xs = sorted(values)
    if not xs:
        return None
    pos = (len(xs) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = math.ceil(pos)
    if lo == hi:
        return float(xs[lo])
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def mean(values: Iterable[float]) -> float | None:
    xs = list(values)
    return sum(xs) / len(xs) if xs else None


def summarize(records: list[dict], wall: float) -> dict:
    """Figures of one run from its per-request records (see loadgen.Record).

    TTFT/e2e percentiles are over successful requests; ITL percentiles over every
    gap between streamed content chunks; throughput is output tokens of successful
    requests over the run's wall time (first send to last completion).
    """
    ok = [r for r in records if r["status"] == "ok"]
    shed = [r for r in records if r["status"] == "shed"]
    err = [r for r in records if r["status"] not in ("ok", "shed")]
    ttft = [r["ttft"] for r in ok if r["ttft"] is not None]
    e2e = [r["e2e"] for r in ok]
    itl = [g for r in ok for g in r.get("itl", ())]
    out_tokens = sum(r["output_tokens"] for r in ok)
    prompt = sum(r.get("prompt_tokens") or 0 for r in ok)
    cached = sum(r.get("cached_tokens") or 0 for r in ok)
    s = {
        "requests": len(records),
        "ok": len(ok),
        "shed": len(shed),
        "errors": len(err),
        "ttft_p50": percentile(ttft, 50),
        "ttft_p90": percentile(ttft, 90),
        "ttft_p99": percentile(ttft, 99),
        "ttft_mean": mean(ttft),
        "itl_p50": percentile(itl, 50),
        "itl_p90": percentile(itl, 90),
        "e2e_p90": percentile(e2e, 90),
        "output_tokens": out_tokens,
        "output_tokens_per_s": out_tokens / wall if wall > 0 else None,
        "prompt_tokens": prompt,
        "cached_tokens_reported": cached,
        "wall_s": wall,
    }
    # Per criticality class, for the overload workload.
    classes = sorted({r.get("tags", {}).get("criticality") for r in records} - {None})
    if classes:
        s["by_criticality"] = {}
        for c in classes:
            sub = [r for r in records if r.get("tags", {}).get("criticality") == c]
            sub_ok = [r["ttft"] for r in sub if r["status"] == "ok" and r["ttft"] is not None]
            s["by_criticality"][c] = {
                "requests": len(sub),
                "ok": sum(1 for r in sub if r["status"] == "ok"),
                "shed": sum(1 for r in sub if r["status"] == "shed"),
                "errors": sum(1 for r in sub if r["status"] not in ("ok", "shed")),
                "ttft_p50": percentile(sub_ok, 50),
                "ttft_p90": percentile(sub_ok, 90),
            }
    return s
