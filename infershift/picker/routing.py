"""Model routing: turn the client's model name into the target model the pool should run."""
from __future__ import annotations

import hashlib
import random
from collections.abc import Iterable
from dataclasses import dataclass

from infershift import contract

from .config import ModelRoute, Target
from .endpoints import Endpoint
from .errors import ModelNotFound

REWRITE_HEADER = contract.REWRITE_HEADER
OBJECTIVE_HEADER = contract.OBJECTIVE_HEADER
REWRITE_HEADERS = contract.REWRITE_HEADERS  # x-llm-d-model-name-rewrite, then the x-gateway-* alias
OBJECTIVE_HEADERS = contract.OBJECTIVE_HEADERS
FAIRNESS_HEADERS = contract.FAIRNESS_HEADERS


@dataclass(frozen=True)
class Routed:
    client_model: str
    target_model: str
    sheddable: bool
    fairness_id: str = contract.DEFAULT_FAIRNESS_ID  # x-llm-d-inference-fairness-id (no flow control uses it yet)


def header(headers: dict[str, str], names: tuple[str, ...]) -> str | None:
    """The first non-empty value among `names` (a header's current name, then its aliases)."""
    for n in names:
        v = headers.get(n)
        if v:
            return v
    return None


def session_point(key: str) -> float:
    """A stable point in [0, 1) for a session key: same key, same point, in every picker replica."""
    digest = hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64


def choose_target(targets: tuple[Target, ...], point: float) -> str:
    """Walk cumulative weights in list order. With a fixed key point, a canary listed last keeps
    its sessions as its weight grows (its slice [1-w, 1) only widens)."""
    total = sum(t.weight for t in targets)
    x = point * total
    acc = 0.0
    for t in targets:
        if t.weight <= 0:
            continue
        acc += t.weight
        if x < acc:
            return t.model
    return next(t.model for t in reversed(targets) if t.weight > 0)


def resolve(client_model: str, headers: dict[str, str], models: dict[str, ModelRoute],
            objectives: dict[str, int], session_header: str | None, endpoints: Iterable[Endpoint],
            rng: random.Random, model_priorities: dict[str, int] | None = None) -> Routed:
    """Priority, most specific last: the model's route, an InferenceObjective naming the model (its
    annotation), an InferenceObjective the request names in its header (x-llm-d-inference-objective,
    or its alias x-gateway-inference-objective)."""
    route = models.get(client_model)
    sheddable = route.sheddable if route else False
    if model_priorities and client_model in model_priorities:
        sheddable = model_priorities[client_model] < 0
    objective = header(headers, OBJECTIVE_HEADERS)
    if objective and objective in objectives:
        sheddable = objectives[objective] < 0
    fairness = header(headers, FAIRNESS_HEADERS) or contract.DEFAULT_FAIRNESS_ID
    rewrite = header(headers, REWRITE_HEADERS)
    if rewrite:
        return Routed(client_model, rewrite, sheddable, fairness)
    if route is not None:
        key = headers.get(session_header) if session_header else None
        point = session_point(f"{client_model}\x00{key}") if key else rng.random()
        return Routed(client_model, choose_target(route.targets, point), sheddable, fairness)
    if any(e.can_serve(client_model) for e in endpoints):
        return Routed(client_model, client_model, sheddable, fairness)
    raise ModelNotFound(f"The model `{client_model}` does not exist.", param="model")
