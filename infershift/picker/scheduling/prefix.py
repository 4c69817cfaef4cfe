"""Prefix-cache affinity: hash the prompt in blocks and remember which endpoint got which prefix.

The index is learned from the picker's own routing decisions (no server feedback): after a
request is routed, its block hashes are recorded against the chosen endpoint in a per-endpoint
LRU, so later requests sharing the prefix score the endpoint by the fraction of blocks matched.
"""
from __future__ import annotations

from collections import OrderedDict

from ..endpoints import Endpoint
from ..errors import ConfigError
from .plugins import SchedRequest, Scorer, param

CHARS_PER_TOKEN = 4  # upstream's averageCharactersPerToken
PREFIX_PARAMETERS = ("blockSize", "blockSizeTokens", "maxPrefixBlocksToMatch", "maxPrefixTokensToMatch",
                     "lruCapacityPerServer", "autoTune")


def block_hashes(model: str, prompt: str, block_size: int, max_blocks: int) -> list[int]:
    """Chained hashes of the prompt's whole blocks: block i's hash covers blocks 0..i and the model."""
    h = hash(model)
    out = []
    n = min(len(prompt) // block_size, max_blocks)
    for i in range(n):
        h = hash((h, prompt[i * block_size:(i + 1) * block_size]))
        out.append(h)
    return out


class PrefixIndex:
    def __init__(self, capacity_per_server: int):
        self.capacity = capacity_per_server
        self.by_hash: dict[int, set[str]] = {}
        self.lru: dict[str, OrderedDict] = {}

    def add(self, address: str, hashes: list[int]) -> None:
        lru = self.lru.get(address)
        if lru is None:
            lru = self.lru[address] = OrderedDict()
        by_hash = self.by_hash
        for h in reversed(hashes):  # leading blocks end up most recent, so they are evicted last
            if h in lru:
                lru.move_to_end(h)
                continue
            lru[h] = None
            owners = by_hash.get(h)
            if owners is None:
                by_hash[h] = {address}
            else:
                owners.add(address)
        while len(lru) > self.capacity:
            old, _ = lru.popitem(last=False)
            owners = by_hash.get(old)
            if owners is not None:
                owners.discard(address)
                if not owners:
                    del by_hash[old]

    def forget(self, address: str) -> None:
        """Drop everything recorded for an endpoint that left the pool (or whose address another
        server took): a new, cold server there must not score as holding the old one's prefixes."""
        lru = self.lru.pop(address, None)
        if not lru:
            return
        by_hash = self.by_hash
        for h in lru:
            owners = by_hash.get(h)
            if owners is not None:
                owners.discard(address)
                if not owners:
                    del by_hash[h]

    def matched(self, hashes: list[int]) -> dict[str, int]:
        """Address -> number of leading blocks it holds (set intersections run in C)."""
        if not hashes:
            return {}
        by_hash = self.by_hash
        first = by_hash.get(hashes[0])
        if not first:
            return {}
        alive = set(first)
        out: dict[str, int] = {}
        count = 1  # blocks matched by every address still in `alive`
        for h in hashes[1:]:
            owners = by_hash.get(h)
            if not owners:
                break
            if not alive <= owners:
                keep = alive & owners
                for a in alive - keep:
                    out[a] = count
                alive = keep
                if not alive:
                    return out
            count += 1
        for a in alive:
            out[a] = count
        return out


class PrefixCacheScorer(Scorer):
    type_name = "prefix-cache-scorer"
    # infershift's blockSize (characters) plus upstream's (approx-prefix-cache-producer's) token-based
    # names; a token counts as CHARS_PER_TOKEN characters, as upstream estimates it.
    parameter_names = PREFIX_PARAMETERS
    per_request = True

    def __init__(self, name: str, parameters: dict, index: PrefixIndex | None = None):
        super().__init__(name, parameters)
        where = f"scheduling plugin {name}"
        tokens = int(param(parameters, "blockSizeTokens", 0, int, where))
        chars = int(param(parameters, "blockSize", 0, int, where))
        self.block_size = tokens * CHARS_PER_TOKEN if tokens else (chars or 64)
        max_tokens = int(param(parameters, "maxPrefixTokensToMatch", 0, int, where))
        max_blocks = int(param(parameters, "maxPrefixBlocksToMatch", 512, int, where))
        if max_tokens:
            max_blocks = max(1, max_tokens * CHARS_PER_TOKEN // self.block_size)
        self.max_blocks = max_blocks or 1 << 30  # upstream: 0 means no limit
        auto = parameters.get("autoTune", False)
        if not isinstance(auto, bool):  # accepted; the block size stays the configured one (README)
            raise ConfigError(f"{where}.parameters.autoTune: expected true or false, got {auto!r}")
        capacity = int(param(parameters, "lruCapacityPerServer", 31250, int, where)) or 31250
        self.index = index if index is not None and index.capacity == capacity else PrefixIndex(capacity)

    def _hashes(self, req: SchedRequest) -> list[int]:
        key = ("prefix", self.block_size)
        hs = req.scratch.get(key)
        if hs is None:
            hs = block_hashes(req.target_model, req.prompt or "", self.block_size, self.max_blocks)
            req.scratch[key] = hs
        return hs

    def _matched(self, req: SchedRequest) -> tuple[dict[str, int], int] | None:
        """(blocks matched per endpoint address, blocks in the prompt), or None when nothing matches."""
        hs = self._hashes(req)
        if not hs:
            return None
        matched = self.index.matched(hs)
        return (matched, len(hs)) if matched else None

    def score(self, req: SchedRequest, eps: list[Endpoint]) -> list[float] | None:
        found = self._matched(req)
        if found is None:
            return None
        matched, total = found
        return [matched.get(e.address, 0) / total for e in eps]

    def score_sparse(self, req: SchedRequest, position: dict[str, int]) -> list[tuple[int, float]] | None:
        """(candidate position, score) for the few endpoints that hold part of the prefix."""
        found = self._matched(req)
        if found is None:
            return None
        matched, total = found
        return [(position[a], n / total) for a, n in matched.items() if a in position]

    def forget_endpoint(self, address: str) -> None:
        self.index.forget(address)

    def on_picked(self, req: SchedRequest, chosen: Endpoint) -> None:
        hs = self._hashes(req)
        if hs:
            self.index.add(chosen.address, hs)
