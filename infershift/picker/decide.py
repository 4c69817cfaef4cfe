"""One request's decision: parse the body, resolve the target model, schedule an endpoint."""
from __future__ import annotations

from dataclasses import dataclass

from .endpoints import Endpoint
from .errors import NoCapacity
from .pool import Generation, Pool
from .request_body import is_completion_path, model_splice, parse_body, rewrite_model
from .routing import resolve
from .scheduling import SchedRequest


@dataclass
class Decision:
    endpoints: list[Endpoint]  # primary first, then fallbacks
    client_model: str | None = None
    target_model: str | None = None
    new_body: bytes | None = None  # the re-encoded body, when a splice could not do
    splice: tuple[int, int, bytes] | None = None  # how it changed, when only `model`'s bytes did
    original: bytes | None = None  # the request body, when spliced

    @property
    def body(self) -> bytes | None:
        """The rewritten body (None: unchanged). Built on demand: STREAMED answers splice one chunk
        and never need the whole rewritten copy of a big prompt."""
        if self.new_body is None and self.splice is not None:
            start, end, repl = self.splice
            self.new_body = self.original[:start] + repl + self.original[end:]
        return self.new_body

    @property
    def body_length(self) -> int | None:
        if self.splice is not None and self.new_body is None:
            start, end, repl = self.splice
            return len(self.original) - (end - start) + len(repl)
        return None if self.new_body is None else len(self.new_body)

    @property
    def rewritten(self) -> bool:
        return self.splice is not None or self.new_body is not None

    @property
    def destination(self) -> str:
        return ",".join(e.address for e in self.endpoints)


def candidates(pool: Pool, subset: list[str] | None) -> list[Endpoint]:
    """The ready endpoints, narrowed by the data plane's subset hint when it sets one (None: no
    hint). The protocol: pick only from the list; none of it eligible, or an empty list, is a 503."""
    ready = pool.snapshot().ready
    if subset is not None:
        if not subset:
            raise NoCapacity("the gateway's endpoint subset is empty")
        allowed = set(subset)
        ready = [e for e in ready if e.address in allowed]
        if not ready:
            raise NoCapacity("no ready endpoint in the subset the gateway allowed")
    return ready


def by_load(pool: Pool, eps: list[Endpoint]) -> Decision:
    """Requests without a model (no body, non-completion paths): the least-loaded ready endpoint."""
    if not eps:
        raise NoCapacity("no ready endpoint in the pool")
    n = 1 + pool.fallbacks
    ranked = sorted(eps, key=lambda e: (e.metrics.waiting, e.metrics.kv_usage, pool.rng.random()))
    return Decision(ranked[:n])


def prepare(pool: Pool, gen: Generation, headers: dict[str, str], body: bytes | None):
    """(parsed body, routed) for a completion request; None for the rest (routed by load)."""
    if body is None or not is_completion_path(headers.get(":path", "/")):
        return None
    cfg = gen.config
    parsed = parse_body(body, headers.get("content-type"), cfg.max_body_bytes)
    routed = resolve(parsed.model, headers, cfg.models, cfg.objectives, cfg.session_header,
                     pool.endpoints.values(), pool.rng, cfg.model_priorities)
    return parsed, routed


def decide(pool: Pool, gen: Generation, headers: dict[str, str], body: bytes | None,
           subset: list[str] | None, pre=None, room: list[Endpoint] | None = None) -> Decision:
    """`pre`: prepare()'s result when the caller has it; `room`: flow control's endpoints with room
    for the request (the scheduler chooses among those)."""
    snap = pool.snapshot()
    eps = candidates(pool, subset)
    if pre is None:
        pre = prepare(pool, gen, headers, body)
        if pre is None:
            return by_load(pool, eps)
    parsed, routed = pre
    req = SchedRequest(routed.target_model, parsed.prompt, routed.sheddable)
    key = (snap.id, tuple(subset) if subset else None)
    if room is not None and len(room) != len(eps):
        eps, key = room, None  # a narrower set than the snapshot's: nothing shared with other requests
    chosen = gen.scheduler.schedule(req, eps, key)
    if routed.target_model == parsed.model:
        return Decision(chosen, parsed.model, routed.target_model)
    splice = model_splice(body, parsed, routed.target_model)
    if splice is not None:
        return Decision(chosen, parsed.model, routed.target_model, splice=splice, original=body)
    return Decision(chosen, parsed.model, routed.target_model, rewrite_model(body, parsed, routed.target_model))
