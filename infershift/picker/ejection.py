"""The picker's own error tracking: endpoints whose requests fail leave the candidate set.

Fed from the response path (extproc.py): a response stream is opened for every 5xx and every
request the gateway retried (the response filter's matcher, envoy_config.response_filter with
`report_failures`), besides the responses the picker asked back. A 5xx counts against the
endpoint that served it; a response served by another endpoint than the picked one (the gateway
retried on the fallback) counts against the picked one; any other response clears the served
endpoint's count. `threshold` consecutive failures eject an endpoint for `base_seconds`, doubled
at each consecutive ejection up to `max_seconds` (Envoy's outlier detection, as the picker sees
it). Scrapes keep running meanwhile; an ejected endpoint comes back when its time is up.
Never all of them: with every candidate ejected, the candidates stay as they are.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable

log = logging.getLogger("picker.ejection")


class Ejector:
    def __init__(self, clock: Callable[[], float] = time.monotonic, threshold: int = 3,
                 base_seconds: float = 5.0, max_seconds: float = 60.0):
        self.clock = clock
        self.threshold = threshold
        self.base = base_seconds
        self.max = max_seconds
        self.failures: dict[str, int] = {}  # address -> consecutive failures
        self.until: dict[str, float] = {}  # address -> ejected until (clock)
        self.times: dict[str, int] = {}  # address -> consecutive ejections (the multiplier)
        self.ejections = 0  # total, for tests and logs

    def failure(self, address: str) -> None:
        if self.until:
            self.ejected()  # an ejection that is over counts as over
        n = self.failures.get(address, 0) + 1
        self.failures[address] = n
        if n >= self.threshold and address not in self.until:
            k = self.times.get(address, 0)
            seconds = min(self.max, self.base * (2 ** k))
            self.times[address] = k + 1
            self.until[address] = self.clock() + seconds
            self.failures[address] = 0
            self.ejections += 1
            log.warning("endpoint ejected", extra={"endpoint": address, "seconds": seconds,
                                                   "consecutive_failures": n})

    def success(self, address: str) -> None:
        self.failures.pop(address, None)
        if address not in self.until:
            self.times.pop(address, None)

    def ejected(self) -> set[str]:
        if not self.until:
            return set()
        now = self.clock()
        for a, t in list(self.until.items()):
            if t <= now:
                del self.until[a]
                log.info("endpoint back from ejection", extra={"endpoint": a})
        return set(self.until)

    def narrow(self, subset: list[str] | None, addresses: Iterable[str]) -> list[str] | None:
        """The candidate subset without the ejected endpoints (None: no restriction), or `subset`
        unchanged when nothing is ejected or everything would be."""
        out = self.ejected()
        if not out:
            return subset
        base = list(addresses) if subset is None else subset
        kept = [a for a in base if a not in out]
        return kept if kept else subset
