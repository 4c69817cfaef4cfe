"""Send OpenAI requests through the local gateway and tally where they went (by the
response headers the picker and the servers add). Used by the demo and the tests."""
from __future__ import annotations

import asyncio
import math
import re
import threading
import urllib.request
from collections import Counter
from dataclasses import dataclass, field

import httpx

from infershift import contract

POD_HEADER = contract.POD_HEADER
TARGET_HEADER = contract.TARGET_HEADER


def chat_body(model: str, text: str = "Plan a day in Kyoto.", max_tokens: int = 4) -> dict:
    return {"model": model, "messages": [{"role": "user", "content": text}], "max_tokens": max_tokens}


@dataclass
class Tally:
    statuses: Counter = field(default_factory=Counter)
    pods: Counter = field(default_factory=Counter)
    targets: Counter = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)
    pod_targets: Counter = field(default_factory=Counter)  # (pod, target model) -> count

    @property
    def total(self) -> int:
        return sum(self.statuses.values())

    @property
    def ok(self) -> int:
        return self.statuses.get(200, 0)

    @property
    def failed(self) -> int:
        return self.total - self.ok

    def record(self, status: int, headers, body_hint: str = "") -> None:
        self.statuses[status] += 1
        if status == 200:
            self.pods[headers.get(POD_HEADER, "?")] += 1
            self.targets[headers.get(TARGET_HEADER, "?")] += 1
            self.pod_targets[(headers.get(POD_HEADER, "?"), headers.get(TARGET_HEADER, "?"))] += 1
        elif len(self.errors) < 20:
            self.errors.append(f"{status}: {body_hint[:200]}")

    def by(self, mapping: dict[str, str]) -> Counter:
        """Successful responses grouped by mapping[pod] (e.g. pod -> pool)."""
        out: Counter = Counter()
        for pod, n in self.pods.items():
            out[mapping.get(pod, "?")] += n
        return out

    def targets_by(self, mapping: dict[str, str]) -> dict[str, Counter]:
        """Target models of successful responses, per mapping[pod] (e.g. per pool)."""
        out: dict[str, Counter] = {}
        for (pod, target), n in self.pod_targets.items():
            out.setdefault(mapping.get(pod, "?"), Counter())[target] += n
        return out


async def _send(client: httpx.AsyncClient, url: str, body: dict, headers: dict, tally: Tally) -> None:
    try:
        r = await client.post(url, json=body, headers=headers)
        tally.record(r.status_code, r.headers, r.text if r.status_code != 200 else "")
    except httpx.HTTPError as e:
        tally.statuses[0] += 1
        if len(tally.errors) < 20:
            tally.errors.append(f"transport: {e!r}")


async def burst_async(url: str, body: dict, n: int, *, headers: dict | None = None, concurrency: int = 8,
                      timeout: float = 60.0) -> Tally:
    tally = Tally()
    sem = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(timeout=timeout) as client:
        async def one() -> None:
            async with sem:
                await _send(client, url, body, headers or {}, tally)
        await asyncio.gather(*(one() for _ in range(n)))
    return tally


def burst(url: str, body: dict, n: int, **kw) -> Tally:
    """`n` POSTs of `body` to `url`, `concurrency` at a time; returns the tally."""
    return asyncio.run(burst_async(url, body, n, **kw))


class Load:
    """Constant background load until stopped (for live-change checks)."""

    def __init__(self, url: str, body: dict, *, concurrency: int = 4, timeout: float = 60.0):
        self.url, self.body, self.concurrency, self.timeout = url, body, concurrency, timeout
        self.tally = Tally()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    async def _run(self) -> None:
        async with httpx.AsyncClient(timeout=self.timeout) as client:
            async def worker() -> None:
                while not self._stop.is_set():
                    await _send(client, self.url, self.body, {}, self.tally)
            await asyncio.gather(*(worker() for _ in range(self.concurrency)))

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(self.timeout + 5)

    def snapshot(self) -> Tally:
        t = self.tally
        return Tally(Counter(t.statuses), Counter(t.pods), Counter(t.targets), list(t.errors), Counter(t.pod_targets))


def since(now: Tally, before: Tally) -> Tally:
    return Tally(now.statuses - before.statuses, now.pods - before.pods, now.targets - before.targets,
                 now.errors[len(before.errors):], now.pod_targets - before.pod_targets)


def tolerance(p: float, n: int) -> float:
    """Allowed deviation of an observed share from weight share p over n requests."""
    return max(0.10, 4.5 * math.sqrt(p * (1 - p) / n)) if n else 1.0


_SUCCESS = re.compile(r'^vllm:request_success_total\{[^}]*\}\s+([0-9.eE+-]+)', re.M)


def served_count(address: str, timeout: float = 5.0) -> int:
    """Requests a vLLM-compatible server reports as finished (vllm:request_success_total)."""
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=timeout) as r:
        text = r.read().decode()
    return int(sum(float(v) for v in _SUCCESS.findall(text)))


def settled_count(addresses: list[str], at_least: int, timeout: float = 15.0) -> int:
    """Total served count of `addresses` once it reaches `at_least` or stops growing:
    mirrored copies finish after the client already has the primary's answer."""
    import time

    deadline = time.monotonic() + timeout
    last, still = -1, 0
    while True:
        total = sum(served_count(a) for a in addresses)
        still = still + 1 if total == last else 0
        if total >= at_least or still >= 10 or time.monotonic() > deadline:
            return total
        last = total
        time.sleep(0.1)
