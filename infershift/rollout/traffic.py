"""The pinned first step's requests: sent through the route's pin header for the canary (the
route's `pins:`), so the canary answers before it gets any weight."""
from __future__ import annotations

import asyncio

import httpx

from infershift.spec import StackSpec


def pinned_request(spec: StackSpec, route: str, backend: str, model: str | None = None) -> tuple[str, dict, dict]:
    """(path, headers, body) of one pinned request: the pin's header, a chat completion for the
    first model the pinned pool serves (or `model`), on a path the route matches."""
    r = spec.routes[route]
    pin = next(p for p in r.pins if p.backend == backend)
    path = "/v1/chat/completions"
    if not any(path.startswith(prefix.rstrip("/") + "/") or prefix in ("/", path) for prefix in r.paths):
        path = r.paths[0]
    name = model or sorted(spec.pool_serves(backend))[0]
    body = {"model": name, "messages": [{"role": "user", "content": "Summarise the canary's purpose."}],
            "max_tokens": 16}
    return path, {pin.header: pin.value}, body


class PinnedSender:
    """send(route, backend, n) -> (ok, failed), `concurrency` at a time, through `gateway` (base URL
    of the route's listener)."""

    def __init__(self, spec: StackSpec, gateway: str, model: str | None = None, concurrency: int = 4,
                 timeout: float = 60.0):
        self.spec, self.gateway, self.model = spec, gateway.rstrip("/"), model
        self.concurrency, self.timeout = concurrency, timeout

    def __call__(self, route: str, backend: str, n: int) -> tuple[int, int]:
        return asyncio.run(self._send(route, backend, n))

    async def _send(self, route: str, backend: str, n: int) -> tuple[int, int]:
        path, headers, body = pinned_request(self.spec, route, backend, self.model)
        counts = {"ok": 0, "failed": 0}
        sem = asyncio.Semaphore(self.concurrency)
        async with httpx.AsyncClient(timeout=self.timeout) as client:
            async def one() -> None:
                async with sem:
                    try:
                        resp = await client.post(self.gateway + path, json=body, headers=headers)
                        counts["ok" if resp.status_code == 200 else "failed"] += 1
                    except httpx.HTTPError:
                        counts["failed"] += 1
            await asyncio.gather(*(one() for _ in range(n)))
        return counts["ok"], counts["failed"]
