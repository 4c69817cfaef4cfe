"""On-demand LoRA adapters (config `lora.onDemand`): requests may name an adapter no server has yet.

Two ways a server gets it, per adapter:

- `path` unset: **the server resolves it.** vLLM with a LoRA resolver plugin (e.g.
  `VLLM_PLUGINS=lora_filesystem_resolver`, `VLLM_LORA_RESOLVER_CACHE_DIR`, and
  `VLLM_ALLOW_RUNTIME_LORA_UPDATING=True`) loads an adapter a request names on first use. The picker
  only has to route such a request to a server of the adapter's base model instead of answering 404;
  the LoRA-affinity scorer prefers servers with the adapter active or a free slot.
- `path` set: **the picker loads it** with vLLM's runtime adapter API (`POST /v1/load_lora_adapter`
  `{"lora_name", "lora_path"}`, served when `VLLM_ALLOW_RUNTIME_LORA_UPDATING=True`). The first
  request for an adapter no server has is answered 503 `adapter_loading` (OpenAI-style error; clients
  and gateways retry 503) while the picker loads it on the endpoint the scheduler chose; once that
  server confirms, requests go to it. While an adapter is registered (or loading) somewhere, requests
  for it go only there, so it is not loaded on every server one 503 at a time.
"""
from __future__ import annotations

import asyncio
import json
import logging

from .errors import PickerError

log = logging.getLogger("picker.lora")
RETRY_FAILED_AFTER = 5.0  # seconds before a failed load is tried again


class AdapterLoading(PickerError):
    status = 503
    type = "service_unavailable"
    code = "adapter_loading"


class Rule:
    """One `lora.onDemand` entry, and where the adapter is registered or being loaded."""

    __slots__ = ("name", "base", "path", "where")

    def __init__(self, name: str, base: str, path: str | None):
        self.name, self.base, self.path = name, base, path
        self.where: set[str] = set()


def registered(ep, adapter: str) -> bool:
    m = ep.metrics
    return any(adapter in k for k in (ep.static_models, ep.served_models) if k) or adapter in m.running_loras \
        or adapter in m.waiting_loras


class LoraLoader:
    def __init__(self, pool):
        self.pool = pool
        self.rules: dict[str, Rule] = {}
        self.loading: dict[tuple[str, str], asyncio.Task] = {}
        self.failed: dict[tuple[str, str], float] = {}

    def configure(self, table: dict) -> dict[str, Rule]:
        """The config's on-demand table -> the rules endpoints consult (kept across reloads)."""
        rules = {}
        for name, a in table.items():
            old = self.rules.get(name)
            if old is not None and (old.base, old.path) == (a.base, a.path):
                rules[name] = old
            else:
                rules[name] = Rule(name, a.base, a.path)
        self.rules = rules
        return rules

    def forget(self, address: str) -> None:
        for r in self.rules.values():
            r.where.discard(address)
        for key in [k for k in self.loading if k[1] == address]:
            self.loading.pop(key).cancel()

    def before_route(self, target: str | None, ep) -> None:
        """Called with the chosen endpoint: raises AdapterLoading (and starts the load) if the target is
        a picker-loaded adapter the endpoint does not have yet."""
        rule = self.rules.get(target or "")
        if rule is None or rule.path is None:
            return
        rule.where = {e.address for e in self.pool.endpoints.values() if registered(e, rule.name)} | {
            a for (n, a) in self.loading if n == rule.name}
        if registered(ep, rule.name):
            return
        key = (rule.name, ep.address)
        if key not in self.loading:
            failed = self.failed.get(key)
            now = self.pool.clock()
            if failed is None or now - failed >= RETRY_FAILED_AFTER:
                self.loading[key] = asyncio.get_running_loop().create_task(self._load(rule, ep))
                rule.where.add(ep.address)
        raise AdapterLoading(f"LoRA adapter `{rule.name}` is being loaded on {ep.name}; retry in a moment.",
                             param="model")

    async def _load(self, rule: Rule, ep) -> None:
        import aiohttp

        key = (rule.name, ep.address)
        url = f"http://{ep.address}/v1/load_lora_adapter"
        ok = False
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as s, \
                    s.post(url, json={"lora_name": rule.name, "lora_path": rule.path}) as r:
                text = await r.text()
                # "already been loaded" (400) means it is there: as good as a load
                ok = r.status == 200 or (r.status == 400 and "already" in text)
                if not ok:
                    hint = " (is VLLM_ALLOW_RUNTIME_LORA_UPDATING=True set?)" if r.status == 404 else ""
                    log.error("LoRA adapter load failed" + hint, extra={
                        "endpoint": ep.address, "adapter": rule.name, "status": r.status, "error": text[:300]})
        except (aiohttp.ClientError, OSError, TimeoutError) as e:
            log.error("LoRA adapter load failed", extra={"endpoint": ep.address, "adapter": rule.name,
                                                          "error": str(e) or type(e).__name__})
        finally:
            self.loading.pop(key, None)
        if ok and self.pool.endpoints.get(ep.address) is ep:
            # the server confirmed: route to it now, before its next /v1/models poll shows the adapter
            ep.served_models = (ep.served_models or frozenset()) | {rule.name}
            self.failed.pop(key, None)
            log.info("LoRA adapter loaded", extra={"endpoint": ep.address, "adapter": rule.name,
                                                   "path": json.dumps(rule.path)})
        else:
            self.failed[key] = self.pool.clock()
            rule.where.discard(ep.address)
