"""The shadow phase's gate (`rollouts.<name>.shadowFirst`): the stable pool's and the canary's
answers to the same mirrored requests, paired by request id and judged like
`python -m infershift.shadow report`'s gate (infershift/shadow/compare.py).

Where the answer lines come from (`AnswerSource`):
- `LogFiles`: files the pickers' lines are appended to: the local stack's picker logs, or files a
  person keeps filling in a cluster (`kubectl logs -f -l app=<pool>-epp --prefix >> pool.log`);
  only what is appended after the phase starts counts.
- `LogCommand`: a command printing the lines, run on every poll (`kubectl logs -l app=<pool>-epp
  --since-time={since}`, where `{since}` becomes the phase's start in RFC 3339): each run's
  output replaces the last one's, and lines stamped before the start are dropped.
"""
from __future__ import annotations

import datetime as dt
import json
import shlex
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from infershift.shadow import compare
from infershift.spec.rollouts import ShadowFirst


class AnswerSource(Protocol):
    def start(self) -> None:
        """Mark the phase's start: only answers after it count."""
        ...

    def answers(self) -> list[compare.Answer]:
        """Every answer line since `start()`."""
        ...


class LogFiles:
    def __init__(self, paths: list[Path]):
        self.paths = [Path(p) for p in paths]
        self.offsets: dict[Path, int] = {}

    def start(self) -> None:
        self.offsets = {p: p.stat().st_size if p.exists() else 0 for p in self.paths}

    def answers(self) -> list[compare.Answer]:
        out = []
        for p in self.paths:
            if not p.exists():
                continue
            with open(p, "rb") as f:
                f.seek(self.offsets.get(p, 0))
                data = f.read()
            # a line still being written has no newline yet: leave it for the next poll
            for raw in data[: data.rfind(b"\n") + 1].decode(errors="replace").splitlines():
                a = compare.parse_line(raw)
                if a is not None:
                    out.append(a)
        return out


def _line_time(raw: str) -> dt.datetime | None:
    i = raw.find("{")
    try:
        ts = json.loads(raw[i:]).get("ts") if i >= 0 else None
        return dt.datetime.fromisoformat(str(ts).replace("Z", "+00:00")) if ts else None
    except (ValueError, AttributeError):
        return None


class LogCommand:
    def __init__(self, command: str, timeout: float = 60.0):
        self.command, self.timeout = command, timeout
        self.since: dt.datetime | None = None

    def start(self) -> None:
        self.since = dt.datetime.now(dt.UTC).replace(microsecond=0)

    def answers(self) -> list[compare.Answer]:
        assert self.since is not None, "start() first"
        since = self.since.isoformat().replace("+00:00", "Z")
        argv = [part.replace("{since}", since) for part in shlex.split(self.command)]
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=self.timeout, check=False)
        except (OSError, subprocess.TimeoutExpired) as e:
            raise RuntimeError(f"answer-log command {self.command!r} failed: {e}") from None
        if done.returncode != 0:
            raise RuntimeError(f"answer-log command {self.command!r} exited {done.returncode}: "
                               f"{done.stderr.strip()[-300:]}")
        out = []
        for raw in done.stdout.splitlines():
            a = compare.parse_line(raw)
            if a is None:
                continue
            at = _line_time(raw)
            if at is not None and at.tzinfo is not None and at < self.since:
                continue
            out.append(a)
        return out


@dataclass
class ShadowResult:
    verdict: str  # "pass" | "fail" | "wait"
    reason: str
    stats: dict[str, compare.ModelStats]
    failed: dict[str, list[str]]
    pairing: compare.Pairing

    @property
    def total(self) -> compare.ModelStats:
        return self.stats[compare.ALL]

    def to_json(self) -> dict:
        return {"verdict": self.verdict, "reason": self.reason, "failed": self.failed,
                "stats": {m: s.summary() for m, s in self.stats.items()}}


# A copy's answer is logged after the primary's: a primary this recent may still get its pair.
GRACE = 5.0


def relevant(answers: list[compare.Answer], stable: str, canary: str, since: float | None = None,
             until: float | None = None) -> list[compare.Answer]:
    """The stable pool's own answers and the canary pool's shadow answers (other pools' lines, or
    the canary's answers to pinned requests, are not part of the comparison), for the requests
    whose primary answer was logged in [since, until] (a request in flight when the mirror was
    switched on has no copy; one answered after `until` may not have its copy's line yet), plus
    copies without a primary logged in that window."""
    def inside(a: compare.Answer) -> bool:
        return a.at is None or ((since is None or a.at >= since) and (until is None or a.at <= until))

    primaries = {a.request_id for a in answers if a.pool == stable and not a.shadow and inside(a)}
    seen = {a.request_id for a in answers if a.pool == stable and not a.shadow}
    return [a for a in answers if (a.pool == stable and not a.shadow and a.request_id in primaries)
            or (a.pool == canary and a.shadow and (a.request_id in primaries
                                                   or (a.request_id not in seen and inside(a))))]


def judge(sf: ShadowFirst, answers: list[compare.Answer], stable: str, canary: str, since: float | None = None,
          until: float | None = None) -> ShadowResult:
    """No verdict before `minPairs` compared pairs (in total, and per model with `gateOn: models`);
    `since`/`until` bound the primaries' answer times (`relevant`)."""
    pairing = compare.pair(relevant(answers, stable, canary, since, until))
    stats = compare.compare(pairing)
    limits = sf.limits()
    # error rates and lost copies are judged on every pair; the alike and latency limits only on
    # pairs both sides answered (a canary failing every copy has none of those, and fails here)
    rates = compare.Gate(min_pairs=0, max_error_rate_delta=limits["max_error_rate_delta"],
                         max_unpaired_share=limits["max_unpaired_share"])
    full = compare.Gate(min_pairs=0, **limits)
    names = [compare.ALL] if sf.gate_on == "all" else [m for m in stats if m != compare.ALL]
    total = stats[compare.ALL]
    if total.pairs < sf.min_pairs or not names:
        return ShadowResult("wait", f"{total.pairs} of {sf.min_pairs} pairs ({total.compared} both answered, "
                                    f"{total.unpaired_primary} stable-only, {total.unpaired_shadow} canary-only)",
                            stats, {}, pairing)
    failed: dict[str, list[str]] = {}
    short = []
    for m in names:
        st = stats[m]
        if st.pairs < sf.min_pairs:
            short.append(m)
            continue
        f = (full if st.compared >= sf.min_pairs else rates).check(st)
        if f:
            failed[m] = f
        elif st.compared < sf.min_pairs:
            short.append(m)
    if failed:
        return ShadowResult("fail", "; ".join(f"{m}: {', '.join(f)}" for m, f in failed.items()), stats, failed,
                            pairing)
    if short:
        return ShadowResult("wait", f"too few pairs both sides answered for {', '.join(short)} "
                                    f"(need {sf.min_pairs})", stats, {}, pairing)
    return ShadowResult("pass", f"{total.compared} compared pairs within every limit", stats, {}, pairing)
