"""Pair a mirror's primary and shadow answers by request id and compare them per target model.

Input: the pickers' answer lines (picker config `answerLog`, picker/answers.py), one JSON object per
line, from any mix of files (the local stack's picker logs, `kubectl logs` of a cluster's pickers,
with or without a `[pod/...]` prefix); every other line is skipped.

Per target model (the primary's; an unpaired shadow counts under its own):
- pairs: request ids with both a primary and a shadow answer; unpaired on either side
- error rates: answers with a status other than 200 among each side's answers
- TTFT and end-to-end deltas (shadow minus primary, seconds), p50 and p90, over pairs both 200
- output-length ratio: the median over those pairs of shadow / primary output tokens
- exact match: the share of those pairs whose answers are identical (the hash of the whole text)
- overlap: the mean token-set Jaccard index of the two texts (lower-cased words and numbers,
  `\\w+`; two empty answers count 1): |A ∩ B| / |A ∪ B|, 1 for the same words in any order, 0 for
  none shared. It reads the logged text (up to the picker's `maxTextChars`).
"""
from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

MESSAGE = "answer"
LOGGER = "picker.answers"
ALL = "(all)"
_WORD = re.compile(r"\w+")


@dataclass(frozen=True)
class Answer:
    request_id: str
    pool: str
    target: str | None
    shadow: bool
    status: int
    ttft: float | None
    e2e: float | None
    tokens: int | None
    text: str
    sha: str | None
    at: float | None = None
    """When the picker logged it (the line's `ts`, seconds since the epoch)."""

    @property
    def ok(self) -> bool:
        return self.status == 200


def parse_line(line: str) -> Answer | None:
    """An answer line, or None for any other line (other logs, a `kubectl logs --prefix` prefix is skipped)."""
    i = line.find("{")
    if i < 0 or '"answer"' not in line:
        return None
    try:
        d = json.loads(line[i:])
    except ValueError:
        return None
    if not isinstance(d, dict) or d.get("msg") != MESSAGE or d.get("logger", LOGGER) != LOGGER:
        return None
    rid = d.get("request_id")
    if not isinstance(rid, str) or not rid:
        return None

    def num(k: str) -> float | None:
        v = d.get(k)
        return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None

    tokens = d.get("output_tokens")
    status = d.get("status")
    text = d.get("text")
    return Answer(rid, str(d.get("pool") or ""), d.get("target_model") or None, d.get("shadow") is True,
                  status if isinstance(status, int) else 0, num("ttft_s"), num("e2e_s"),
                  tokens if isinstance(tokens, int) and not isinstance(tokens, bool) else None,
                  text if isinstance(text, str) else "", d.get("text_sha256") or None, _epoch(d.get("ts")))


def _epoch(ts) -> float | None:
    """The picker's `ts` (UTC, ISO 8601 with a Z) as seconds since the epoch."""
    if not isinstance(ts, str):
        return None
    try:
        when = dt.datetime.fromisoformat(ts.replace("Z", "+00:00"))
    except ValueError:
        return None
    return when.timestamp() if when.tzinfo is not None else None


def read(paths: Iterable[Path | str]) -> list[Answer]:
    out = []
    for p in paths:
        with open(p, errors="replace") as f:
            for line in f:
                a = parse_line(line)
                if a is not None:
                    out.append(a)
    return out


@dataclass
class Pair:
    primary: Answer
    shadow: Answer


@dataclass
class Pairing:
    pairs: list[Pair] = field(default_factory=list)
    primaries: list[Answer] = field(default_factory=list)  # no shadow answer
    shadows: list[Answer] = field(default_factory=list)    # no primary answer
    duplicates: int = 0  # a second answer of one side for the same request id (the first one is kept)


def pair(answers: Iterable[Answer]) -> Pairing:
    sides: dict[str, list[Answer | None]] = {}
    dup = 0
    for a in answers:
        slot = sides.setdefault(a.request_id, [None, None])
        i = 1 if a.shadow else 0
        if slot[i] is None:
            slot[i] = a
        else:
            dup += 1
    out = Pairing(duplicates=dup)
    for p, s in sides.values():
        if p is not None and s is not None:
            out.pairs.append(Pair(p, s))
        elif p is not None:
            out.primaries.append(p)
        elif s is not None:
            out.shadows.append(s)
    return out


def jaccard(a: str, b: str) -> float:
    x, y = set(_WORD.findall(a.lower())), set(_WORD.findall(b.lower()))
    if not x and not y:
        return 1.0
    return len(x & y) / len(x | y)


def same(p: Answer, s: Answer) -> bool:
    if p.sha and s.sha:
        return p.sha == s.sha
    return p.text == s.text


def quantile(xs: list[float], q: float) -> float | None:
    """Linear interpolation between closest ranks (numpy's default)."""
    if not xs:
        return None
    v = sorted(xs)
    pos = (len(v) - 1) * q
    lo = int(pos)
    hi = min(lo + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (pos - lo)


@dataclass
class ModelStats:
    model: str
    pairs: int = 0
    compared: int = 0  # pairs where both answered 200
    unpaired_primary: int = 0
    unpaired_shadow: int = 0
    primary_answers: int = 0
    shadow_answers: int = 0
    primary_errors: int = 0
    shadow_errors: int = 0
    ttft_deltas: list[float] = field(default_factory=list)
    e2e_deltas: list[float] = field(default_factory=list)
    length_ratios: list[float] = field(default_factory=list)
    exact: int = 0
    overlaps: list[float] = field(default_factory=list)

    @property
    def primary_error_rate(self) -> float | None:
        return self.primary_errors / self.primary_answers if self.primary_answers else None

    @property
    def shadow_error_rate(self) -> float | None:
        return self.shadow_errors / self.shadow_answers if self.shadow_answers else None

    @property
    def exact_match(self) -> float | None:
        return self.exact / self.compared if self.compared else None

    @property
    def overlap(self) -> float | None:
        return sum(self.overlaps) / len(self.overlaps) if self.overlaps else None

    @property
    def length_ratio(self) -> float | None:
        return quantile(self.length_ratios, 0.5)

    def ttft_delta(self, q: float) -> float | None:
        return quantile(self.ttft_deltas, q)

    def e2e_delta(self, q: float) -> float | None:
        return quantile(self.e2e_deltas, q)

    def summary(self) -> dict:
        return {
            "model": self.model, "pairs": self.pairs, "compared": self.compared,
            "unpaired_primary": self.unpaired_primary, "unpaired_shadow": self.unpaired_shadow,
            "primary_answers": self.primary_answers, "shadow_answers": self.shadow_answers,
            "primary_error_rate": self.primary_error_rate, "shadow_error_rate": self.shadow_error_rate,
            "ttft_delta_p50_s": self.ttft_delta(0.5), "ttft_delta_p90_s": self.ttft_delta(0.9),
            "e2e_delta_p50_s": self.e2e_delta(0.5), "e2e_delta_p90_s": self.e2e_delta(0.9),
            "output_length_ratio": self.length_ratio, "exact_match": self.exact_match, "overlap": self.overlap,
        }


def _count(st: ModelStats, a: Answer) -> None:
    if a.shadow:
        st.shadow_answers += 1
        st.shadow_errors += not a.ok
    else:
        st.primary_answers += 1
        st.primary_errors += not a.ok


def _compare(st: ModelStats, pr: Pair) -> None:
    p, s = pr.primary, pr.shadow
    st.pairs += 1
    _count(st, p)
    _count(st, s)
    if not (p.ok and s.ok):
        return
    st.compared += 1
    if p.ttft is not None and s.ttft is not None:
        st.ttft_deltas.append(s.ttft - p.ttft)
    if p.e2e is not None and s.e2e is not None:
        st.e2e_deltas.append(s.e2e - p.e2e)
    if p.tokens and s.tokens is not None:
        st.length_ratios.append(s.tokens / p.tokens)
    st.exact += same(p, s)
    st.overlaps.append(jaccard(p.text, s.text))


def compare(pairing: Pairing) -> dict[str, ModelStats]:
    """Per target model (and ALL), in model order."""
    stats: dict[str, ModelStats] = {}
    total = ModelStats(ALL)

    def of(model: str | None) -> ModelStats:
        name = model or "(rejected)"
        return stats.setdefault(name, ModelStats(name))

    for pr in pairing.pairs:
        for st in (of(pr.primary.target or pr.shadow.target), total):
            _compare(st, pr)
    for a in pairing.primaries:
        for st in (of(a.target), total):
            st.unpaired_primary += 1
            _count(st, a)
    for a in pairing.shadows:
        for st in (of(a.target), total):
            st.unpaired_shadow += 1
            _count(st, a)
    out = {k: stats[k] for k in sorted(stats)}
    out[ALL] = total
    return out


@dataclass(frozen=True)
class Gate:
    """A pre-check before a mirrored candidate gets weight: None disables a limit."""

    min_pairs: int = 1
    min_exact_match: float | None = None
    min_overlap: float | None = None
    max_ttft_delta_p90: float | None = None  # seconds
    max_e2e_delta_p90: float | None = None
    max_error_rate_delta: float | None = None  # shadow minus primary
    max_unpaired_share: float | None = None  # unpaired shadows + primaries over all request ids

    def check(self, st: ModelStats) -> list[str]:
        """The failed limits, each as a sentence (empty: it passes)."""
        out = []
        if st.compared < self.min_pairs:
            out.append(f"{st.compared} compared pairs < {self.min_pairs}")
        checks = [
            ("exact match", st.exact_match, self.min_exact_match, False),
            ("overlap", st.overlap, self.min_overlap, False),
            ("TTFT delta p90", st.ttft_delta(0.9), self.max_ttft_delta_p90, True),
            ("e2e delta p90", st.e2e_delta(0.9), self.max_e2e_delta_p90, True),
        ]
        if st.shadow_error_rate is not None and st.primary_error_rate is not None:
            checks.append(("error rate delta", st.shadow_error_rate - st.primary_error_rate,
                           self.max_error_rate_delta, True))
        ids = st.pairs + st.unpaired_primary + st.unpaired_shadow
        if ids:
            checks.append(("unpaired share", (st.unpaired_primary + st.unpaired_shadow) / ids,
                           self.max_unpaired_share, True))
        for name, value, limit, is_max in checks:
            if limit is None or value is None:
                continue
            if (value > limit) if is_max else (value < limit):
                out.append(f"{name} {value:.3g} {'>' if is_max else '<'} {limit:g}")
        return out
