"""Routing-quality checks on a run's results: behaviour (prefix-cache hit rates), never timing.

The shared-prefix workload has more groups' system prompts than one server's KV cache holds, so
where requests land decides the servers' prefix-cache hit rate: a router that keeps each group on
a stable server reaches the ceiling, one that spreads groups over every server evicts them. The
check fails when infershift's hit rate falls well below the best cache-aware reference that ran in
the same invocation (SGLang's cache_aware router, the omniscient router). The regression of
issue 13 (an admission filter that sent every request to an empty queue: 60% hits against 94%)
fails it; `python -m bench` (and so `--quick`, CI's smoke run) exits 1 on a failure.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

SCENARIO = "shared-prefix"
SUBJECT = "infershift"
REFERENCES = ("sglang-cache-aware", "omniscient")
# Hit rates are fractions of prompt tokens served from cache, from the servers' own counters. On
# the quick workload (3 servers, 48 groups) SGLang cache_aware and the omniscient router measured
# 94%, infershift 94%, infershift with issue 13's admission filter 66%, Envoy least-request 46%
# (bench/RESULTS.md "Routing-quality check"); 0.10 leaves room for placement noise.
MAX_GAP = 0.10


@dataclass
class Result:
    scenario: str
    level: float
    subject_hit_rate: float | None
    reference: str | None
    reference_hit_rate: float | None
    max_gap: float
    ok: bool | None          # None: not checked (a router or its hit rate is missing)
    message: str


def prefix_affinity(runs: list[dict], ran: set[str], *, max_gap: float = MAX_GAP) -> list[Result]:
    """One result per shared-prefix load level that infershift ran at in this invocation (`ran`:
    the routers run now; results kept from earlier commands are not compared)."""
    rates: dict[float, dict[str, float | None]] = {}
    for r in runs:
        if r["scenario"] == SCENARIO and r["router"] in ran:
            rates.setdefault(r["level"], {})[r["router"]] = r["summary"].get("prefix_cache_hit_rate")
    out = []
    for level in sorted(rates):
        got = rates[level]
        if SUBJECT not in got:
            continue
        subject = got[SUBJECT]
        refs: dict[str, float] = {n: v for n in REFERENCES if (v := got.get(n)) is not None}
        if subject is None or not refs:
            out.append(Result(SCENARIO, level, subject, None, None, max_gap, None,
                              f"{SCENARIO} {level:g}x: not checked (no hit rate for {SUBJECT} or for any of "
                              f"{', '.join(REFERENCES)} in this run)"))
            continue
        ref = max(refs, key=refs.__getitem__)
        ok = subject >= refs[ref] - max_gap
        out.append(Result(SCENARIO, level, subject, ref, refs[ref], max_gap, ok,
                          f"{SCENARIO} {level:g}x: {SUBJECT} prefix-cache hit rate {subject:.0%} vs {ref} "
                          f"{refs[ref]:.0%} (allowed gap {max_gap:.0%}): {'ok' if ok else 'FAILED'}"))
    return out


def as_json(results: list[Result]) -> list[dict]:
    return [asdict(r) for r in results]
