"""Run one scheduling profile over a snapshot of candidate endpoints. No I/O here."""
from __future__ import annotations

from ..endpoints import Endpoint
from ..errors import NoCapacity, Shed
from .plugins import Filter, Picker, Plugin, SchedRequest, Scorer


class _Prepared:
    """Filter output and summed snapshot-only scores for one (snapshot, target model)."""

    __slots__ = ("eps", "totals", "shed_reason", "position")

    def __init__(self, eps, totals, shed_reason):
        self.eps, self.totals, self.shed_reason = eps, totals, shed_reason
        self.position = {e.address: i for i, e in enumerate(eps)}


class Scheduler:
    def __init__(self, filters: list[Filter], scorers: list[tuple[Scorer, float]], picker: Picker,
                 fallbacks: int = 0):
        self.filters = filters
        self.scorers = [(s, w) for s, w in scorers if w > 0]
        self.picker = picker
        self.fallbacks = fallbacks
        # endpoints per answer: primary + --fallbacks, or the picker's maxNumOfEndpoints if larger
        self.count = max(1 + fallbacks, getattr(picker, "max_endpoints", 1))
        plugins = [*filters, *(s for s, _ in self.scorers), picker]
        self._preparers = [p for p in plugins if type(p).prepare is not Plugin.prepare]
        self._learners = [p for p in plugins if type(p).on_picked is not Plugin.on_picked]
        self._cacheable_filters = all(not f.per_request for f in filters)
        self._shared_scorers = [(s, w) for s, w in self.scorers if not s.per_request]
        self._request_scorers = [(s, w) for s, w in self.scorers if s.per_request]
        self._cache: dict = {}
        self._cache_snapshot = None
        self.shed = True  # False under flow control: sheddable requests wait there instead
        self.flow_detector: Plugin | None = None  # under flow control: which endpoints have room (flowpolicies.py)

    def _prepare(self, target: str, candidates: list[Endpoint], req: SchedRequest) -> _Prepared:
        # Shared filters see the target model and whether the request is sheddable (admission
        # narrows sheddable requests only), never the rest of the request.
        probe = SchedRequest(target, req.prompt, req.sheddable, req.scratch) if self._cacheable_filters else req
        eps = candidates
        for f in self.filters:
            eps = f.filter(probe, eps)
            if not eps:
                raise NoCapacity(f"no endpoint left after filter {f.name!r}")
        totals = [0.0] * len(eps)
        if len(eps) > 1:
            for s, w in self._shared_scorers:
                sc = s.score(probe, eps)
                if sc is not None:
                    totals = [t + w * x for t, x in zip(totals, sc)]
        return _Prepared(eps, totals, probe.scratch.pop("shed_reason", None))

    def schedule(self, req: SchedRequest, candidates: list[Endpoint], cache_key=None) -> list[Endpoint]:
        """Primary endpoint first, then fallbacks. Raises PickerError (503/429) when nothing fits.

        cache_key identifies the candidate snapshot (e.g. (snapshot id, subset)); with it the filter
        and snapshot-only scorer work is shared by all requests for the same target model and
        sheddability.
        """
        if not candidates:
            raise NoCapacity("no ready endpoint in the pool")
        for p in self._preparers:
            p.prepare(req)
        prep = None
        if cache_key is not None and self._cacheable_filters:
            if self._cache_snapshot != cache_key:
                self._cache.clear()
                self._cache_snapshot = cache_key
            key = (req.target_model, req.sheddable)
            prep = self._cache.get(key)
            if prep is None:
                prep = self._cache[key] = self._prepare(req.target_model, candidates, req)
        else:
            prep = self._prepare(req.target_model, candidates, req)
        if prep.shed_reason and req.sheddable and self.shed:
            raise Shed(prep.shed_reason)
        eps, totals = prep.eps, prep.totals
        if len(eps) > 1:
            copied = False
            for s, w in self._request_scorers:
                sparse = getattr(s, "score_sparse", None)
                if sparse is not None:  # only the few matching endpoints get a non-zero score
                    pairs = sparse(req, prep.position)
                    if pairs:
                        if not copied:
                            totals, copied = list(totals), True
                        for i, x in pairs:
                            totals[i] += w * x
                    continue
                sc = s.score(req, eps)
                if sc is not None:
                    totals, copied = [t + w * x for t, x in zip(totals, sc)], True
        chosen = self.picker.pick(req, eps, totals, self.count)
        for p in self._learners:
            p.on_picked(req, chosen[0])
        return chosen
