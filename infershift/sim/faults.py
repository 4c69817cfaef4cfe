"""Injected faults: an error rate, a slow start, a delay before generation (a slower first
token), stalling (never answering), and going down."""
from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field

from .errors import bad_request


@dataclass
class Faults:
    error_rate: float = 0.0
    error_status: int = 500
    stall: bool = False
    down: bool = False                      # the serving port closed, as a killed pod (server.py)
    slow_start_seconds: float = 0.0
    delay_seconds: float = 0.0              # added before generation starts: a slower first token
    since: float = 0.0                      # when slow start began (loop time)
    rng: random.Random = field(default_factory=random.Random)
    _unstall: asyncio.Event | None = None

    def view(self, now: float) -> dict:
        return {"error_rate": self.error_rate, "error_status": self.error_status,
                "stall": self.stall, "down": self.down, "slow_start_seconds": self.slow_start_seconds,
                "delay_seconds": self.delay_seconds, "starting": self.starting(now)}

    def starting(self, now: float) -> bool:
        return now - self.since < self.slow_start_seconds

    def should_fail(self) -> bool:
        return self.error_rate > 0 and self.rng.random() < self.error_rate

    async def wait_unstalled(self) -> None:
        if self._unstall is None:
            self._unstall = asyncio.Event()
        await self._unstall.wait()

    def update(self, body, now: float) -> None:
        """Apply a POST /admin/faults body; unknown or bad fields are errors."""
        if not isinstance(body, dict):
            raise bad_request("faults body must be a JSON object")
        known = {"error_rate", "error_status", "stall", "down", "slow_start_seconds", "delay_seconds"}
        extra = set(body) - known
        if extra:
            raise bad_request(f"unknown fault field(s): {', '.join(sorted(extra))}", sorted(extra)[0])
        if "error_rate" in body:
            v = body["error_rate"]
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v <= 1:
                raise bad_request("error_rate must be a number in [0, 1]", "error_rate")
        if "error_status" in body:
            v = body["error_status"]
            if isinstance(v, bool) or not isinstance(v, int) or not 400 <= v <= 599:
                raise bad_request("error_status must be an HTTP error status (400-599)", "error_status")
        for flag in ("stall", "down"):
            if flag in body and not isinstance(body[flag], bool):
                raise bad_request(f"{flag} must be a boolean", flag)
        for name in ("slow_start_seconds", "delay_seconds"):
            if name in body:
                v = body[name]
                if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
                    raise bad_request(f"{name} must be a number >= 0", name)
        self.error_rate = float(body.get("error_rate", self.error_rate))
        self.error_status = int(body.get("error_status", self.error_status))
        self.delay_seconds = float(body.get("delay_seconds", self.delay_seconds))
        if "slow_start_seconds" in body:
            self.slow_start_seconds = float(body["slow_start_seconds"])
            self.since = now
        if "down" in body:
            self.down = body["down"]
        if "stall" in body:
            self.stall = body["stall"]
            if not self.stall and self._unstall is not None:
                self._unstall.set()
                self._unstall = None
