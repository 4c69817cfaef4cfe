"""The small interfaces every scheduling plugin implements, and the request they see."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from ..endpoints import Endpoint


@dataclass
class SchedRequest:
    target_model: str
    prompt: str | None = None
    sheddable: bool = False
    scratch: dict = field(default_factory=dict)  # per-request values plugins compute once (e.g. block hashes)


class Plugin:
    type_name = ""
    # False: the result depends only on the endpoint snapshot and the target model, so the
    # scheduler may reuse it for every request with the same target until the snapshot changes.
    per_request = False
    # The parameter keys the plugin reads; any other key is a config error (a misspelt threshold
    # would otherwise silently keep its default). None: the plugin checks its own (admission-filter).
    parameter_names: tuple[str, ...] | None = None

    def __init__(self, name: str, parameters: dict):
        self.name = name
        if self.parameter_names is not None:
            unknown = sorted(set(parameters) - set(self.parameter_names))
            if unknown:
                known = ", ".join(self.parameter_names) or "none"
                from ..errors import ConfigError

                raise ConfigError(f"scheduling plugin {name}.parameters: unknown {', '.join(unknown)} (known: {known})")

    def prepare(self, req: SchedRequest) -> None:
        """Called once per request before filtering (e.g. hash the prompt)."""

    def on_picked(self, req: SchedRequest, chosen: Endpoint) -> None:
        """Called after the pick (e.g. learn the prefix the chosen endpoint now caches)."""


class Filter(Plugin):
    def filter(self, req: SchedRequest, eps: list[Endpoint]) -> list[Endpoint]:
        raise NotImplementedError


class Scorer(Plugin):
    def score(self, req: SchedRequest, eps: list[Endpoint]) -> list[float] | None:
        """One score in [0, 1] per endpoint, same order; None means 0 for all (nothing to add)."""
        raise NotImplementedError


class Picker(Plugin):
    def pick(self, req: SchedRequest, eps: Sequence[Endpoint], scores: list[float], n: int) -> list[Endpoint]:
        """Primary endpoint first, then up to n-1 fallbacks."""
        raise NotImplementedError


def param(parameters: dict, key: str, default, kind, where: str):
    from ..errors import ConfigError

    value = parameters.get(key, default)
    if isinstance(value, bool) or not isinstance(value, kind) or value < 0:
        raise ConfigError(f"{where}.parameters.{key}: expected a non-negative number, got {value!r}")
    return value
