"""Run one scheduling profile over a snapshot of candidate endpoints. No I/O here."""
from __future__ import annotations

from ..endpoints import Endpoint
from ..errors import NoCapacity
from .plugins import Filter, Picker, SchedRequest, Scorer


class Scheduler:
    def __init__(self, filters: list[Filter], scorers: list[tuple[Scorer, float]], picker: Picker,
                 fallbacks: int = 0):
        self.filters = filters
        self.scorers = [(s, w) for s, w in scorers if w > 0]
        self.picker = picker
        self.fallbacks = fallbacks
        self._plugins = [*filters, *(s for s, _ in self.scorers), picker]

    def schedule(self, req: SchedRequest, candidates: list[Endpoint]) -> list[Endpoint]:
        """Primary endpoint first, then fallbacks. Raises PickerError (503/429) when nothing fits."""
        if not candidates:
            raise NoCapacity("no ready endpoint in the pool")
        for p in self._plugins:
            p.prepare(req)
        eps = candidates
        for f in self.filters:
            eps = f.filter(req, eps)
            if not eps:
                raise NoCapacity(f"no endpoint left after filter {f.name!r}")
        if len(eps) == 1 or not self.scorers:
            totals = [0.0] * len(eps)
        else:
            totals = None
            for s, w in self.scorers:
                sc = s.score(req, eps)
                if totals is None:
                    totals = [w * x for x in sc]
                else:
                    totals = [t + w * x for t, x in zip(totals, sc)]
        chosen = self.picker.pick(req, eps, totals, 1 + self.fallbacks)
        for p in self._plugins:
            p.on_picked(req, chosen[0])
        return chosen
