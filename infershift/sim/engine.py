"""The simulated vLLM engine: continuous batching over a paged KV cache.

It is a pure state machine over explicit times (`now` arguments), with no
asyncio and no clock of its own, so tests drive it exactly. It jumps between
events instead of ticking: while the batch is unchanged every decode step lasts
the same, so a run of steps is one *segment* and a request's token count at any
moment is arithmetic. Events are: a segment ends (a request finishes, a prefill
completes, the KV cache would overflow), a request becomes schedulable (which
ends the current run of steps at the next boundary), or one is aborted.

Time model (see Profile): a request becomes schedulable prefill_overhead after
it arrives (CPU-side work); a step lasts step_base + step_per_seq * sequences,
plus prefill_per_token * uncached prompt tokens when it carries prefill work,
plus adapter load time when it brings in a new adapter.
"""
from __future__ import annotations

import copy
import heapq
import math
from collections.abc import Callable
from dataclasses import dataclass, field

from .kvcache import KVCache, blocks_for
from .lora import LoraSlots
from .profiles import Profile

_EPS = 1e-9


class QueueFull(Exception):
    """The waiting queue is at --max-waiting."""


class TooLarge(Exception):
    """The request can never fit in the KV cache."""


@dataclass(eq=False)
class Request:
    rid: str
    prompt_tokens: int
    target: int                          # tokens it will generate before finishing
    block_hashes: list[int] = field(default_factory=list)
    lora: str | None = None
    end_reason: str = "length"           # finish_reason once `target` is reached
    arrival: float = 0.0
    ready_at: float = 0.0                # arrival + the fixed per-request overhead
    # --- engine state ---
    state: str = "new"                   # pending | waiting | running | finished | aborted
    generated: int = 0
    cached_tokens: int = 0               # prefix-cache hit at the last admission
    first_token_at: float | None = None
    finished_at: float | None = None
    finish_reason: str | None = None
    preemptions: int = 0
    kv_hashes: list[int] = field(default_factory=list)
    kv_own: int = 0
    seg: Segment | None = None
    seg_gen0: int = 0
    seg_prefill: bool = False
    # --- callbacks set by the HTTP layer ---
    on_update: Callable[[Request], None] | None = None
    on_finish: Callable[[Request], None] | None = None

    def clone(self) -> Request:
        c = object.__new__(Request)   # cheaper than copy.copy; predictions clone every request
        c.__dict__.update(self.__dict__)
        c.kv_hashes = list(self.kv_hashes)
        c.on_update = c.on_finish = None
        return c


@dataclass(eq=False)
class Segment:
    start: float
    step: float               # duration of each step
    steps: int
    prefill: list[Request]    # get their first token at the end
    decode: list[Request]     # get one token per step

    @property
    def end(self) -> float:
        return self.start + self.step * self.steps


class NullStats:
    """Metric hooks; the real ones live in sim.metrics.Stats."""

    def admitted(self, r: Request, now: float) -> None: ...
    def first_token(self, r: Request, now: float) -> None: ...
    def tokens(self, prompt: int, generated: int) -> None: ...
    def itl(self, step: float, count: int) -> None: ...
    def finished(self, r: Request, now: float) -> None: ...
    def preempted(self, r: Request) -> None: ...


class Engine:
    def __init__(self, profile: Profile, *, max_num_seqs: int | None = None,
                 num_gpu_blocks: int | None = None, block_size: int | None = None,
                 max_loras: int = 1, max_cpu_loras: int | None = None,
                 max_waiting: int = 1024, max_num_batched_tokens: int | None = None,
                 stats=None):
        self.p = profile
        self.max_num_seqs = max_num_seqs or profile.max_num_seqs
        self.block_size = block_size or profile.block_size
        self.max_batched = max_num_batched_tokens or profile.max_num_batched_tokens
        self.max_waiting = max_waiting
        self.kv = KVCache(num_gpu_blocks or profile.num_gpu_blocks, self.block_size)
        self.lora = LoraSlots(max_loras, max_cpu_loras or max_loras,
                              profile.lora_load_seconds, profile.lora_cpu_load_seconds)
        self.stats = stats or NullStats()
        self.pending: list[tuple[float, int, Request]] = []   # heap: not yet schedulable
        self._n = 0                        # heap tie-break: arrival order
        self.waiting: list[Request] = []
        self.running: list[Request] = []   # in admission order; preemption takes the last
        self.seg: Segment | None = None
        self.t = 0.0                       # time the engine state is valid for

    # ------------------------------------------------------------------ API
    def submit(self, r: Request, now: float) -> int:
        """Queue a request; returns how many waiting requests are ahead of it.

        A request arriving exactly at a step boundary joins the step that starts
        there, so the event at `now` is left for the next advance(now)."""
        self.advance(now - 2 * _EPS)
        # Requests still being pre-processed count as queued unless a batch seat awaits them.
        free_seats = max(0, self.max_num_seqs - len(self.running))
        if len(self.waiting) + len(self.pending) - free_seats >= self.max_waiting:
            raise QueueFull(f"waiting queue is full ({self.max_waiting} requests)")
        total = blocks_for(r.prompt_tokens + r.target, self.block_size)
        if total > self.kv.num_blocks:
            raise TooLarge(f"request needs {total} KV blocks; the cache has {self.kv.num_blocks}")
        r.arrival = now
        r.ready_at = now + self.p.prefill_overhead
        ahead = len(self.waiting) + len(self.pending)
        if r.ready_at > now:
            r.state = "pending"
            self._n += 1
            heapq.heappush(self.pending, (r.ready_at, self._n, r))
        else:
            self._enqueue(r, now)
        return ahead

    def _enqueue(self, r: Request, t: float) -> None:
        r.state = "waiting"
        self.waiting.append(r)
        if self.seg is None:
            self.t = t
            self.seg = Segment(t, 0.0, 0, [], [])   # schedule at `t`
        elif not self.seg.prefill and len(self.running) < self.max_num_seqs:
            self._cut(t)

    def abort(self, r: Request, now: float) -> None:
        """The client went away: drop the request and free its memory."""
        self.advance(now)
        if r.state == "pending":
            self.pending = [e for e in self.pending if e[2] is not r]
            heapq.heapify(self.pending)
        elif r.state == "waiting":
            self.waiting.remove(r)
        elif r.state == "running":
            self.running.remove(r)
            self.kv.release(r)
        else:
            return
        r.state = "aborted"
        r.finish_reason = "abort"
        r.seg = None
        self.stats.finished(r, now)

    def next_event_time(self) -> float | None:
        t = self.seg.end if self.seg is not None else None
        if self.pending and (t is None or self.pending[0][0] < t):
            t = self.pending[0][0]
        return t

    def advance(self, now: float) -> None:
        """Process every event up to `now`, in time order."""
        while True:
            seg_end = self.seg.end if self.seg is not None else math.inf
            if self.pending and self.pending[0][0] <= seg_end and self.pending[0][0] <= now + _EPS:
                t, _, r = heapq.heappop(self.pending)   # ready requests join the boundary they meet
                self._enqueue(r, t)
            elif seg_end <= now + _EPS:
                seg, self.seg = self.seg, None
                assert seg is not None
                self.t = seg.end
                self._complete(seg)
                self._plan(self.t)
            else:
                return

    def progress(self, r: Request, now: float) -> tuple[int, float | None]:
        """(tokens generated by `now`, time of the next token if already known)."""
        seg = r.seg
        if r.state != "running" or seg is None:
            return r.generated, None
        if r.seg_prefill:
            return r.generated, seg.end
        k = min(seg.steps, int((now - seg.start) / seg.step + _EPS)) if seg.step > 0 else seg.steps
        if k < 0:
            k = 0
        nxt = seg.start + (k + 1) * seg.step if k < seg.steps else None
        return r.seg_gen0 + k, nxt

    def predict(self, r: Request, now: float, max_events: int = 100000) -> tuple[float | None, int]:
        """Time to first token `r` would get if submitted now and nothing else
        arrived, from a what-if copy of the engine; and its queue position.
        Raises TooLarge like submit() would."""
        self.advance(now - 2 * _EPS)   # as submit() does, so both see the same state
        f = self._fork()
        r = r.clone()
        try:
            ahead = f.submit(r, now)
        except QueueFull:
            return None, len(self.waiting) + len(self.pending)
        for _ in range(max_events):
            if r.first_token_at is not None:
                return r.first_token_at - now, ahead
            t = f.next_event_time()
            if t is None:
                break
            f.advance(t)
        return (r.first_token_at - now if r.first_token_at is not None else None), ahead

    # -------------------------------------------------------------- state view
    def lora_info(self) -> tuple[list[str], list[str]]:
        running = sorted({r.lora for r in self.running if r.lora})
        waiting = sorted({r.lora for r in self.waiting if r.lora})
        return running, waiting

    # -------------------------------------------------------------- internals
    def _cut(self, now: float) -> None:
        """End the current decode segment at the first step boundary at or after `now`."""
        seg = self.seg
        assert seg is not None
        k = max(0, math.ceil((now - seg.start) / seg.step - _EPS)) if seg.step > 0 else 0
        if k < seg.steps:
            seg.steps = k

    def _complete(self, seg: Segment) -> None:
        k = seg.steps
        end = seg.end
        gen = 0
        for r in seg.decode:
            if r.state == "running":
                r.generated += k
                gen += k
        if k and seg.decode:
            self.stats.itl(seg.step, k * sum(1 for r in seg.decode if r.state == "running"))
        prompt = 0
        for r in seg.prefill:
            if r.state != "running":
                continue
            r.generated += 1
            gen += 1
            self.kv.commit(r)
            if r.first_token_at is None:
                r.first_token_at = end
                prompt += r.prompt_tokens
                self.stats.first_token(r, end)
        self.stats.tokens(prompt, gen)
        done = [r for r in self.running if r.generated >= r.target]
        if done:
            self.running = [r for r in self.running if r.generated < r.target]
            for r in done:
                self.kv.release(r)
                r.state = "finished"
                r.finished_at = end
                r.finish_reason = r.end_reason
                r.seg = None
                self.stats.finished(r, end)
                if r.on_finish:
                    r.on_finish(r)
        # Give the survivors blocks for the tokens they now hold; preempt from the
        # back of the batch when the cache is short, as vLLM does.
        i = 0
        bs = self.block_size
        while i < len(self.running):
            r = self.running[i]
            held = (len(r.kv_hashes) + r.kv_own) * bs
            if r.prompt_tokens + r.generated <= held or self.kv.grow(r, r.prompt_tokens + r.generated):
                i += 1
                continue
            victim = self.running[-1]
            self._preempt(victim)
            if victim is r:
                break

    def _preempt(self, r: Request) -> None:
        self.running.remove(r)
        self.kv.release(r)
        r.state = "waiting"
        r.seg = None
        r.preemptions += 1
        self.waiting.insert(0, r)
        self.stats.preempted(r)
        if r.on_update:
            r.on_update(r)

    def _kv_fail_step(self) -> float:
        """First upcoming decode step (1-based) the KV cache cannot hold."""
        bs = self.block_size
        offs = []
        for r in self.running:
            held = len(r.kv_hashes) + r.kv_own
            offs.append(held * bs - (r.prompt_tokens + r.generated) + 1)
        if not offs:
            return math.inf
        offs.sort()
        free = self.kv.num_free()
        if offs[-1] <= bs:
            # Request i needs a block at steps offs[i], offs[i]+bs, ...: the
            # (free+1)-th of these crossings is the first step that fails.
            full, idx = divmod(free, len(offs))
            return offs[idx] + full * bs
        lo, hi = 1, offs[-1] + (free + 1) * bs   # general case: binary search
        while lo < hi:
            mid = (lo + hi) // 2
            need = sum((mid - o) // bs + 1 for o in offs if o <= mid)
            if need > free:
                hi = mid
            else:
                lo = mid + 1
        return lo

    def _plan(self, t: float) -> None:
        p = self.p
        running = self.running
        preempted = False
        while running and self._kv_fail_step() <= 1:
            self._preempt(running[-1])
            preempted = True
        new: list[Request] = []
        load = 0.0
        if self.waiting and (not preempted or not running):
            in_use = {r.lora for r in running if r.lora}
            wl = self.waiting
            i = 0
            while i < len(wl) and len(running) + len(new) < self.max_num_seqs:
                r = wl[i]
                if r.lora and not self.lora.can_place(r.lora, in_use):
                    i += 1   # wait for an adapter slot; later requests may go first
                    continue
                if not self.kv.admit(r, r.prompt_tokens + r.generated):
                    break    # memory is first come, first served
                del wl[i]
                if r.lora:
                    load += self.lora.place(r.lora, in_use)
                    in_use.add(r.lora)
                new.append(r)
        has_lora = any(r.lora for r in running) or any(r.lora for r in new)
        factor = p.lora_step_factor if has_lora else 1.0
        if new:
            uncached = sum(r.prompt_tokens + r.generated - r.cached_tokens for r in new)
            n = len(running) + len(new)
            chunks = max(1, -(-(uncached + len(running)) // self.max_batched))
            total = (chunks * (p.step_base + p.step_per_seq * n)
                     + p.prefill_per_token * uncached) * factor + load
            seg = Segment(t, total / chunks, chunks, new, list(running))
            for r in new:
                r.state = "running"
                self.stats.admitted(r, t)
            running.extend(new)
        elif running:
            steps = min(r.target - r.generated for r in running)
            fail = self._kv_fail_step()
            if fail - 1 < steps:
                steps = int(fail - 1)
            step = (p.step_base + p.step_per_seq * len(running)) * factor
            seg = Segment(t, step, steps, [], list(running))
        else:
            self.seg = None
            return
        self.seg = seg
        for r in seg.decode:
            r.seg, r.seg_gen0, r.seg_prefill = seg, r.generated, False
        for r in seg.prefill:
            r.seg, r.seg_gen0, r.seg_prefill = seg, r.generated, True
        for r in running:
            if r.on_update:
                r.on_update(r)

    def _fork(self) -> Engine:
        f = copy.copy(self)
        f.stats = NullStats()
        f.kv = self.kv.fork()
        f.lora = self.lora.copy()
        twin = {id(r): r.clone() for r in self.running + self.waiting + [e[2] for e in self.pending]}
        f.running = [twin[id(r)] for r in self.running]
        f.waiting = [twin[id(r)] for r in self.waiting]
        f.pending = [(t, n, twin[id(r)]) for t, n, r in self.pending]   # keeps heap order
        if self.seg is not None:
            s = self.seg
            f.seg = Segment(s.start, s.step, s.steps,
                            [twin[id(r)] for r in s.prefill if id(r) in twin],
                            [twin[id(r)] for r in s.decode if id(r) in twin])
            for r in f.seg.prefill + f.seg.decode:
                r.seg = f.seg
        return f
