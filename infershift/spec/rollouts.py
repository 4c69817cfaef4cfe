"""`rollouts:` in stack config: progressive delivery judged on LLM SLOs (issue 15).

A rollout moves weight from a `stable` to a `canary` side in steps, one of two ways:

- a route's pool weights (base-model or node canary): `route`, `stable` pool, `canary` pool;
- a pool's model split (LoRA or in-pool canary): `pool`, client `model`, `stable` / `canary` targets.

Each step sets the canary's share (`steps`, percent), waits at least `dwell` and `minRequests`
canary responses, and judges the gates over that window; a failure rolls back to 0 % or pauses
(`onFailure`). Before the first step, a route rollout may mirror its requests to the canary and
compare the answers (`shadowFirst`), and send requests through the canary's pin (`pinFirst`). `status:` is written by the controller (`python -m infershift.rollout`), so the stack
file says what the weights are and why. Relations to the rest of the stack (the route exists, both
sides are its backends ...) are checked in `checks._rollouts`.
"""
from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from .base import Duration, Spec, duration_seconds

Phase = Literal["Pending", "Shadowing", "Shadowed", "Pinned", "Progressing", "Paused", "Promoted", "RolledBack",
                "Aborted"]


class LatencyGate(Spec):
    """A p90 latency gate: relative to the stable side over the same window (`tolerance`: the canary
    may be this fraction slower, 0.2 = 20 %), and/or an absolute limit (`max`, a duration)."""

    tolerance: float | None = Field(None, ge=0, le=10)
    max: Duration | None = None

    @model_validator(mode="after")
    def _one(self) -> LatencyGate:
        if self.tolerance is None and self.max is None:
            raise ValueError("give tolerance (relative to stable) or max (absolute), or both")
        return self

    @property
    def max_seconds(self) -> float | None:
        return None if self.max is None else duration_seconds(self.max)


class RateGate(Spec):
    """An error-rate gate, judged on a confidence bound (Wilson) of the canary's rate: it fails
    only when even the bound's low end is over `stable + tolerance` (a fraction, 0.01 = one
    percentage point) or over `max`."""

    tolerance: float | None = Field(None, ge=0, le=1)
    max: float | None = Field(None, ge=0, le=1)

    @model_validator(mode="after")
    def _one(self) -> RateGate:
        if self.tolerance is None and self.max is None:
            raise ValueError("give tolerance (over stable's rate) or max (absolute), or both")
        return self


class ThroughputGate(Spec):
    """Output tokens per second of request time: the canary at least `(1 - tolerance)` of stable's,
    and/or at least `min`."""

    tolerance: float | None = Field(None, ge=0, le=1)
    min: float | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _one(self) -> ThroughputGate:
        if self.tolerance is None and self.min is None:
            raise ValueError("give tolerance (relative to stable) or min (absolute), or both")
        return self


class Gates(Spec):
    ttft_p90: LatencyGate | None = None
    """Time to first token (upstream's llm_d_epp_request_ttft_seconds)."""
    itl_p90: LatencyGate | None = None
    """Inter-token latency, as the EPP measures it: end-to-end time per output token
    (llm_d_epp_request_ntpot_seconds)."""
    e2e_p90: LatencyGate | None = Field(None, alias="e2eP90")
    """End-to-end request latency (llm_d_epp_request_duration_seconds)."""
    error_rate: RateGate | None = None
    """5xx and model-server errors among the side's responses (429 is `shedRate`)."""
    shed_rate: RateGate | None = None
    """429s (shed under saturation), counted apart from errors."""
    output_tokens_per_second: ThroughputGate | None = None
    confidence: float = Field(0.95, ge=0.5, lt=1)
    """Confidence of the bounds the rate and latency gates use."""

    @model_validator(mode="after")
    def _some(self) -> Gates:
        if not any(getattr(self, n) is not None for n in GATE_NAMES):
            raise ValueError("give at least one gate (ttftP90, itlP90, e2eP90, errorRate, shedRate, "
                             "outputTokensPerSecond)")
        return self


GATE_NAMES = ("ttft_p90", "itl_p90", "e2e_p90", "error_rate", "shed_rate", "output_tokens_per_second")


class PinFirst(Spec):
    """Before any weight: this many requests sent through the route's pin header for the canary
    must pass the same gates."""

    requests: int = Field(20, ge=1, le=100_000)


class ShadowFirst(Spec):
    """Before any weight (and before `pinFirst`): the route's requests are mirrored to the canary
    pool (the controller sets `routes.<route>.mirror`, and sets its percent to 0 afterwards); the
    stable pool's and the canary's answers to the same requests are paired by request id from the
    two pickers' answer lines (`picker.answerLog`) and judged like `python -m infershift.shadow
    report`'s gate. Clients only ever see the stable pool's answers."""

    percent: int = Field(100, ge=1, le=100)
    """Share of the route's requests copied to the canary while it runs."""
    via: Literal["pool", "service"] | None = None
    """Mirror to the canary pool (its picker logs the copies' answers), or to the canary pool's one
    Service through a shadow recorder (`routes.<route>.mirror.record`), as on ACK and GKE whose
    gateways mirror to Services only. Default: the pool where the gateway can, else the Service."""
    min_pairs: int = Field(50, ge=1, le=1_000_000)
    """Compared pairs (both sides answered 200) before a verdict."""
    dwell: Duration = "0s"
    """Least time before a verdict."""
    gate_on: Literal["all", "models"] = "all"
    """Judge the totals (default) or every target model on its own."""
    min_exact_match: float | None = Field(None, ge=0, le=1)
    min_overlap: float | None = Field(None, ge=0, le=1)
    """Mean token-set Jaccard overlap of the two answers (infershift/shadow/compare.py)."""
    max_ttft_delta_p90: Duration | None = None
    """Canary minus stable time to first token, p90 over the pairs."""
    max_e2e_delta_p90: Duration | None = Field(None, alias="maxE2eDeltaP90")
    max_error_rate_delta: float | None = Field(None, ge=0, le=1)
    """Canary's error rate minus stable's, over the paired answers."""
    max_unpaired_share: float | None = Field(None, ge=0, le=1)
    """Request ids with only one side's answer, over all of them (copies lost, answer lines missing)."""

    @model_validator(mode="after")
    def _some(self) -> ShadowFirst:
        if all(getattr(self, n) is None for n in SHADOW_LIMITS):
            raise ValueError("give at least one limit (minExactMatch, minOverlap, maxTtftDeltaP90, maxE2eDeltaP90, "
                             "maxErrorRateDelta, maxUnpairedShare)")
        return self

    def limits(self) -> dict[str, float | None]:
        """The limits as infershift.shadow.compare.Gate takes them (durations in seconds)."""
        out: dict[str, float | None] = {n: getattr(self, n) for n in SHADOW_LIMITS}
        for n in ("max_ttft_delta_p90", "max_e2e_delta_p90"):
            v = getattr(self, n)
            out[n] = None if v is None else duration_seconds(v)
        return out

    @property
    def dwell_seconds(self) -> float:
        return duration_seconds(self.dwell)


SHADOW_LIMITS = ("min_exact_match", "min_overlap", "max_ttft_delta_p90", "max_e2e_delta_p90", "max_error_rate_delta",
                 "max_unpaired_share")


class RolloutStatus(Spec):
    """Written by the controller; a person does not need to edit it."""

    phase: Phase = "Pending"
    step: int = Field(-1, ge=-1)
    """Index into `steps` of the weights last set (-1: none yet)."""
    canary_percent: int = Field(0, ge=0, le=100)
    message: str = ""
    updated: str = ""
    """UTC time of the last change (ISO 8601)."""


class Rollout(Spec):
    route: str | None = None
    """Route-weight rollout: the route whose pool weights move."""
    pool: str | None = None
    """Model-split rollout: the pool whose `models.<model>.targets` move."""
    model: str | None = None
    """Model-split rollout: the client-facing model name under the pool's `models`."""
    stable: str
    canary: str
    steps: list[int] = Field(min_length=1, max_length=100)
    """Canary percent per step, increasing, e.g. [5, 25, 50, 100]."""
    dwell: Duration = "60s"
    """Least time per step before its verdict."""
    min_requests: int = Field(100, ge=1)
    """Least canary responses per step before its verdict (no verdict on fewer)."""
    pin_first: PinFirst | None = None
    shadow_first: ShadowFirst | None = None
    gates: Gates
    on_failure: Literal["rollback", "pause"] = "rollback"
    status: RolloutStatus | None = None

    @field_validator("steps")
    @classmethod
    def _steps(cls, v: list[int]) -> list[int]:
        for s in v:
            if isinstance(s, bool) or not 1 <= s <= 100:
                raise ValueError(f"step {s!r} is not a canary percent in 1..100")
        if any(b <= a for a, b in zip(v, v[1:])):
            raise ValueError(f"steps {v} must increase")
        return v

    @model_validator(mode="after")
    def _kind(self) -> Rollout:
        if (self.route is None) == (self.pool is None):
            raise ValueError("give `route` (route weights: stable and canary pools) or `pool` and `model` "
                             "(a pool's model split: stable and canary targets), one of them")
        if self.pool is not None and not self.model:
            raise ValueError("a model-split rollout (`pool`) needs `model`: the client model whose targets move")
        if self.route is not None and self.model is not None:
            raise ValueError("`model` is for model-split rollouts (`pool`); a route rollout moves pool weights")
        if self.stable == self.canary:
            raise ValueError("stable and canary are the same")
        if self.pin_first is not None and self.route is None:
            raise ValueError("pinFirst needs a route rollout: pins are the route's headers")
        if self.shadow_first is not None and self.route is None:
            raise ValueError("shadowFirst needs a route rollout: the route's requests are mirrored to the canary pool")
        return self

    @property
    def kind(self) -> Literal["route", "model"]:
        return "route" if self.route is not None else "model"

    def weight_path(self, side: str) -> list[str]:
        """The `--path` segments of one side's weight."""
        if self.route is not None:
            return ["routes", self.route, "backends", side]
        assert self.pool is not None and self.model is not None
        return ["pools", self.pool, "models", self.model, "targets", side]

    @property
    def dwell_seconds(self) -> float:
        return duration_seconds(self.dwell)
