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
        return self.free_plain + self._evictable_count()

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
        refs = self.refs
        reclaimed = sum(1 for h in hit_hashes if refs[h] == 0)
        need = blocks_for(tokens + 1, bs) - hit
        if self.num_free() - reclaimed < need:
            return False
        for h in hit_hashes:
            r = refs[h]
            if r == 0:
                self._evictable_remove(h)
            refs[h] = r + 1
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
        refs = self.refs
        for h in reversed(req.kv_hashes):
            r = refs[h] - 1
            refs[h] = r
            if r == 0:
                self._evictable_add(h)
        self.free_plain += req.kv_own
        req.kv_hashes = []
        req.kv_own = 0

    def _take(self, n: int) -> None:
        take = min(n, self.free_plain)
        self.free_plain -= take
        for _ in range(n - take):
            del self.refs[self._evictable_pop()]

    # -- the evictable set (overridden by KVFork) --------------------------------
    def _evictable_count(self) -> int:
        return len(self.evictable)

    def _evictable_add(self, h: int) -> None:
        self.evictable[h] = None

    def _evictable_remove(self, h: int) -> None:
        del self.evictable[h]

    def _evictable_pop(self) -> int:
        return self.evictable.popitem(last=False)[0]

    def fork(self) -> KVFork:
        return KVFork(self)


_GONE = object()


class _Overlay(dict):
    """Local changes over a base dict that is not modified meanwhile; deletions
    of base keys are recorded as tombstones."""

    def __init__(self, base: dict):
        super().__init__()
        self._base = base

    def __missing__(self, key):
        return self._base[key]

    def __getitem__(self, key):
        v = dict.get(self, key, _GONE) if dict.__contains__(self, key) else self._base[key]
        if v is _GONE:
            raise KeyError(key)
        return v

    def __contains__(self, key):
        if dict.__contains__(self, key):
            return dict.__getitem__(self, key) is not _GONE
        return key in self._base

    def __delitem__(self, key):
        if key not in self:
            raise KeyError(key)
        dict.__setitem__(self, key, _GONE)


class KVFork(KVCache):
    """A what-if copy for predictions that costs nothing up front: it reads
    through to the live cache, records its own changes, and never mutates the
    original. The live cache must not change while the fork is in use."""

    def __init__(self, base: KVCache):
        self.num_blocks = base.num_blocks
        self.block_size = base.block_size
        self.free_plain = base.free_plain
        self.refs = _Overlay(base.refs)
        self.queries = self.hits = 0
        self._base_evictable = base.evictable
        self._base_iter = iter(base.evictable)
        self._removed: set[int] = set()            # base-evictable hashes no longer evictable here
        self._added: OrderedDict[int, None] = OrderedDict()   # newer than every base entry
        self._count = len(base.evictable)

    def _evictable_count(self) -> int:
        return self._count

    def _evictable_add(self, h: int) -> None:
        self._added[h] = None
        self._count += 1

    def _evictable_remove(self, h: int) -> None:
        if h in self._added:
            del self._added[h]
        else:
            self._removed.add(h)
        self._count -= 1

    def _evictable_pop(self) -> int:
        self._count -= 1
        for h in self._base_iter:       # oldest base entries first, skipping reclaimed ones
            if h not in self._removed:
                self._removed.add(h)
                return h
        return self._added.popitem(last=False)[0]
