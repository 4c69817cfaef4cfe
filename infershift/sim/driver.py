"""Runs an Engine on the asyncio loop: one timer, set to the engine's next event."""
from __future__ import annotations

import asyncio

from .engine import Engine


class Driver:
    def __init__(self, engine: Engine, loop: asyncio.AbstractEventLoop):
        self.engine = engine
        self.loop = loop
        self._handle: asyncio.TimerHandle | None = None
        self._at: float | None = None

    def now(self) -> float:
        return self.loop.time()

    def kick(self) -> None:
        """Re-arm the timer after the engine's state changed."""
        t = self.engine.next_event_time()
        if t == self._at and self._handle is not None:
            return
        if self._handle is not None:
            self._handle.cancel()
        self._at = t
        self._handle = self.loop.call_at(t, self._fire) if t is not None else None

    def _fire(self) -> None:
        self._handle = None
        self._at = None
        self.engine.advance(self.loop.time())
        self.kick()

    def close(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
