"""Paged KV cache with automatic prefix caching.

Blocks that hold a full prompt block are named by their chain hash and can be
shared; unnamed blocks are only counted. A block nobody references keeps its
hash and stays reusable until it is evicted (least recently freed first) to
make room. Usage counts evictable blocks as free, as vLLM's kv_cache_usage does.
"""
from __future__ import annotations

from collections import OrderedDict


def blocks_for(tokens: int, block_size: int) -> int:
    return -(-tokens // block_size)


class KVCache:
    def __init__(self, num_blocks: int, block_size: int):
        self.num_blocks = num_blocks
        self.block_size = block_size
        self.free_plain = num_blocks          # free blocks without a hash
        self.refs: dict[int, int] = {}        # hash -> number of requests using it
        self.evictable: OrderedDict[int, None] = OrderedDict()  # refs == 0, LRU first
        self.queries = 0                      # prompt tokens looked up
        self.hits = 0                         # of which found in the cache

    # -- queries ---------------------------------------------------------------
    def num_free(self) -> int:
        return self.free_plain + len(self.evictable)

    def usage(self) -> float:
        return 1.0 - self.num_free() / self.num_blocks

    def match(self, hashes: list[int], limit: int) -> int:
        """Number of leading blocks of `hashes` present in the cache."""
        n = 0
        refs = self.refs
        for h in hashes[:limit]:
            if h not in refs:
                break
            n += 1
        return n

    # -- request lifecycle -----------------------------------------------------
    def admit(self, req, tokens: int) -> bool:
        """Reserve blocks for `tokens` tokens to prefill plus the first output token,
        reusing req's cached prefix. Sets req.cached_tokens. Returns False (and
        changes nothing) if it does not fit.
        """
        bs = self.block_size
        # The last prompt token is always recomputed, as in vLLM, so it can be sampled from.
        limit = (tokens - 1) // bs
        hit = self.match(req.block_hashes, limit)
        hit_hashes = req.block_hashes[:hit]
        reclaimed = sum(1 for h in hit_hashes if self.refs[h] == 0)
        need = blocks_for(tokens + 1, bs) - hit
        if self.num_free() - reclaimed < need:
            return False
        for h in hit_hashes:
            if self.refs[h] == 0:
                del self.evictable[h]
            self.refs[h] += 1
        self._take(need)
        req.kv_hashes = list(hit_hashes)
        req.kv_own = need
        req.cached_tokens = hit * bs
        self.queries += tokens
        self.hits += hit * bs
        return True

    def commit(self, req) -> None:
        """After prefill: name req's freshly computed full prompt blocks by hash."""
        start = len(req.kv_hashes)
        for h in req.block_hashes[start:]:
            if h in self.refs:
                break  # computed twice concurrently; keep ours unnamed
            self.refs[h] = 1
            req.kv_hashes.append(h)
            req.kv_own -= 1

    def grow(self, req, tokens: int) -> bool:
        need = blocks_for(tokens, self.block_size) - len(req.kv_hashes) - req.kv_own
        if need <= 0:
            return True
        if self.num_free() < need:
            return False
        self._take(need)
        req.kv_own += need
        return True

    def release(self, req) -> None:
        # Free the chain tail first, so eviction takes tails before shared heads.
        for h in reversed(req.kv_hashes):
            r = self.refs[h] - 1
            self.refs[h] = r
            if r == 0:
                self.evictable[h] = None
        self.free_plain += req.kv_own
        req.kv_hashes = []
        req.kv_own = 0

    def _take(self, n: int) -> None:
        take = min(n, self.free_plain)
        self.free_plain -= take
        for _ in range(n - take):
            h, _ = self.evictable.popitem(last=False)
            del self.refs[h]

    def fork(self) -> "KVFork":
        return KVFork(self)


class KVFork(KVCache):
    """A cheap what-if copy for predictions: reads through to the live cache,
    records its own changes, and never mutates the original. Unlike the live
    cache it does not forget hashes it evicts (only matters under memory pressure)."""

    def __init__(self, base: KVCache):
        self.num_blocks = base.num_blocks
        self.block_size = base.block_size
        self._base = base
        self._free = base.num_free()
        self.refs = _Overlay(base.refs)
        self.queries = self.hits = 0

    def num_free(self) -> int:
        return self._free

    def admit(self, req, tokens: int) -> bool:
        bs = self.block_size
        hit = self.match(req.block_hashes, (tokens - 1) // bs)
        hit_hashes = req.block_hashes[:hit]
        reclaimed = sum(1 for h in hit_hashes if self.refs[h] == 0)
        need = blocks_for(tokens + 1, bs) - hit
        if self._free - reclaimed < need:
            return False
        for h in hit_hashes:
            self.refs[h] += 1
        self._free -= reclaimed + need
        req.kv_hashes = list(hit_hashes)
        req.kv_own = need
        req.cached_tokens = hit * bs
        return True

    def grow(self, req, tokens: int) -> bool:
        need = blocks_for(tokens, self.block_size) - len(req.kv_hashes) - req.kv_own
        if need <= 0:
            return True
        if self._free < need:
            return False
        self._free -= need
        req.kv_own += need
        return True

    def release(self, req) -> None:
        for h in req.kv_hashes:
            r = self.refs[h] - 1
            self.refs[h] = r
            if r == 0:
                self._free += 1
        self._free += req.kv_own
        req.kv_hashes = []
        req.kv_own = 0


class _Overlay(dict):
    """dict of local changes that falls back to a base dict for reads."""

    def __init__(self, base: dict):
        super().__init__()
        self._base = base

    def __missing__(self, key):
        return self._base[key]

    def __contains__(self, key):
        return dict.__contains__(self, key) or key in self._base
