"""Flow control: a request that finds no endpoint with room waits in the picker, in its priority
band, instead of in a model server's first-come-first-served queue; it is dispatched as soon as an
endpoint has room — highest band first, flows (fairness ids) taking turns within a band — or
answered 429 when its band is full or its wait exceeds the TTL (503 when the pool has no endpoint).

As upstream's (llm-d router pkg/epp/flowcontrol, README "Enabling, disabling, and tuning", and
pkg/epp/requestcontrol/admission.go for the outcome -> status mapping), with the same config
(`featureGates: [flowControl]`, the `flowControl` section) and the same metric names. What differs:
which endpoints have room is the saturation detector's answer per endpoint (flowpolicies.py), over
the requests in flight there as the picker counts them: the polled running + waiting, plus the
requests it sent there minus the responses it saw finish since that poll. So a burst between two
polls is counted as it is sent, a finished request frees its slot at once, and a count the picker
missed (a client that went away before any response) is corrected by the next poll.

No I/O here; ExtProc builds the answers, the transports deliver them (`Pending`).
"""
from __future__ import annotations

import asyncio
import logging
import math
from collections import OrderedDict, deque
from collections.abc import Callable

from .config import BandSpec, FlowSpec
from .errors import PickerError

log = logging.getLogger("picker.flowcontrol")

DISPATCHED = "Dispatched"
REJECTED_CAPACITY = "RejectedCapacity"
EVICTED_TTL = "EvictedTTL"
EVICTED_NO_ENDPOINTS = "EvictedNoEndpoints"
EVICTED_CANCELLED = "EvictedContextCancelled"
# How far back "more than one priority in use" looks (FlowController.mixed)
MIXED_WINDOW = 10.0


class QueueFull(PickerError):
    status = 429
    code = "queue_full"
    type = "rate_limit_exceeded"


class QueueTimeout(PickerError):
    status = 429
    code = "queue_timeout"
    type = "rate_limit_exceeded"


class NoEndpointsTimeout(PickerError):
    status = 503
    code = "no_endpoints"
    type = "service_unavailable"


class Pending(list):
    """What ExtProc.handle answers for a request that waits: the answers to send now (a longer
    message timeout for the gateway) and, through `then` or `wait`, the rest once it is decided."""

    __slots__ = ("_cbs", "_result")

    def __init__(self, now=()):
        super().__init__(now)
        self._cbs: list[Callable[[list], None]] = []
        self._result: list | None = None

    def then(self, cb: Callable[[list], None]) -> None:
        if self._result is not None:
            cb(self._result)
        else:
            self._cbs.append(cb)

    def resolve(self, answers: list) -> None:
        self._result = answers
        cbs, self._cbs = self._cbs, []
        for cb in cbs:
            cb(answers)

    async def wait(self) -> list:
        if self._result is not None:
            return self._result
        fut: asyncio.Future = asyncio.get_running_loop().create_future()

        def done(answers: list) -> None:
            if not fut.done():
                fut.set_result(answers)

        self._cbs.append(done)
        return await fut


class Item:
    __slots__ = ("state", "priority", "flow", "size", "enqueued", "deadline", "pending", "dispatch", "reject",
                 "target", "subset", "labels", "done")

    def __init__(self, state, priority: int, flow: str, size: int, enqueued: float, deadline: float,
                 dispatch: Callable, reject: Callable, target: str, subset, labels):
        self.state, self.priority, self.flow, self.size = state, priority, flow, size
        self.enqueued, self.deadline = enqueued, deadline
        self.pending = Pending()
        self.dispatch = dispatch  # (endpoints with room) -> answers
        self.reject = reject  # (PickerError) -> answers
        self.target, self.subset, self.labels = target, subset, labels
        self.done = False


class Band:
    """One priority's queues: a FIFO per flow, and which flow goes next."""

    def __init__(self, priority: int, spec: BandSpec):
        self.priority, self.spec = priority, spec
        self.flows: OrderedDict[str, deque[Item]] = OrderedDict()
        self.count = 0
        self.bytes = 0

    def push(self, item: Item) -> None:
        q = self.flows.get(item.flow)
        if q is None:
            q = self.flows[item.flow] = deque()
        q.append(item)
        self.count += 1
        self.bytes += item.size

    def heads(self):
        """Each flow's oldest live item, in the fairness policy's order."""
        out = []
        for flow, q in list(self.flows.items()):
            while q and q[0].done:
                q.popleft()
            if not q:
                del self.flows[flow]
                continue
            out.append(q[0])
        if self.spec.fairness == "global-strict-fairness-policy":
            out.sort(key=lambda it: it.enqueued)
        return out

    def take(self, item: Item) -> None:
        q = self.flows[item.flow]
        q.popleft()
        self.count -= 1
        self.bytes -= item.size
        if q:
            self.flows.move_to_end(item.flow)  # round robin: this flow goes to the back
        else:
            del self.flows[item.flow]

    def discard(self, item: Item) -> None:
        """A cancelled item: counted out now, dropped from its deque when it reaches the head."""
        self.count -= 1
        self.bytes -= item.size


class FlowController:
    def __init__(self, pool, telemetry=None, clock: Callable[[], float] | None = None):
        self.pool = pool
        self.tm = telemetry
        self.clock = clock or pool.clock
        self.bands: dict[int, Band] = {}
        self.order: list[int] = []  # band priorities, highest first
        self.queued = 0
        self.queued_bytes = 0
        # address -> [the scrape counted from, sent since, finished since]
        self.counts: dict[str, list] = {}
        self.priorities_seen: dict[int, float] = {}  # priority -> when one last arrived
        self._tick_handle: asyncio.TimerHandle | None = None
        self._run_soon = False
        pool.on_endpoint_removed.append(self._forget)

    # --- in flight --------------------------------------------------------------------------

    def _counter(self, e) -> list:
        c = self.counts.get(e.address)
        if c is None or c[0] is not e.scraped:
            c = self.counts[e.address] = [e.scraped, 0, 0]
        return c

    def load(self, e) -> float:
        m = e.scraped
        c = self.counts.get(e.address)
        base = m.running + m.waiting
        if c is None or c[0] is not m:
            return base
        return max(0.0, base + c[1] - c[2])

    def _unconfirmed(self, e) -> int:
        """Requests sent to `e` since its last poll."""
        c = self.counts.get(e.address)
        return 0 if c is None or c[0] is not e.scraped else c[1]

    def sent(self, e) -> None:
        self._counter(e)[1] += 1

    def finished(self, address: str) -> None:
        e = self.pool.endpoints.get(address)
        if e is None:
            return
        c = self._counter(e)
        c[2] += 1
        if self.queued:
            self._soon()

    def _forget(self, address: str) -> None:
        self.counts.pop(address, None)

    # --- admission --------------------------------------------------------------------------

    @staticmethod
    def spec_of(gen) -> FlowSpec | None:
        sched = gen.config.scheduling
        return sched.flow_control if sched is not None else None

    def room(self, gen, eps: list, target: str | None) -> tuple[list, int]:
        """Whether the pool has room for one more request for `target` — some endpoint that can serve
        it has room — as the candidates to schedule over (empty: no room; wait), and how many can
        serve it at all. While nothing waits in the picker the candidates are every endpoint short
        of its safety limit (`admits`), else only those with room."""
        detector = gen.scheduler.flow_detector
        serving = [e for e in eps if e.can_serve(target)] if target else list(eps)
        if not serving:
            return serving, 0
        if hasattr(detector, "saturation"):  # upstream's utilization detector: one gate for the pool
            return (serving if detector.saturation(serving) < 1.0 else []), len(serving)
        now, stale_after, load = self.clock(), gen.config.stale_after, self.load
        fresh = [now - e.last_ok <= stale_after for e in serving]
        if getattr(detector, "one_priority_gate", False) and not self.mixed(now):
            # One priority in use: holding requests here would reorder nothing, and a server's own
            # queue lets it batch prefills; so they wait here only once every endpoint is past
            # its safety limit.
            return [e for e, f in zip(serving, fresh) if detector.admits(e, load(e), f)], len(serving)
        roomy = [e for e, f in zip(serving, fresh) if detector.has_room(e, load(e), f, self._unconfirmed(e))]
        if not roomy or self.queued:
            # no room, or requests wait here already (the pool is saturated): only where there is
            # room, so servers do not queue and the picker's priority order is the one that holds;
            # and with the detector's unconfirmed_limit, only to an endpoint that has been sent
            # fewer than that many requests since its last poll: a poll that shows several slots free at
            # once would otherwise get them all filled at once, and a server prefills what it is
            # given in arrival order, so a Critical request sent a moment later waits behind them
            # there instead of going first here.
            limit_of = getattr(detector, "unconfirmed_limit", None)
            if limit_of is not None and self.queued:
                roomy = [e for e in roomy if (n := limit_of(e)) is None or self._unconfirmed(e) < n]
            return roomy, len(serving)
        # the pool has room and nothing waits: schedule over every endpoint short of its safety
        # limit, so the scorers keep prefix and LoRA affinity (an endpoint may burst past its
        # ideal limit, as upstream's detectors allow as filters)
        admitted = [e for e, f in zip(serving, fresh) if detector.admits(e, load(e), f)]
        return admitted or roomy, len(serving)

    def saw(self, priority: int) -> None:
        """A request of `priority` arrived (mixed() looks back MIXED_WINDOW seconds)."""
        self.priorities_seen[priority] = self.clock()

    def mixed(self, now: float) -> bool:
        """More than one priority arrived within the last MIXED_WINDOW seconds."""
        recent = 0
        for t in self.priorities_seen.values():
            if now - t <= MIXED_WINDOW:
                recent += 1
                if recent > 1:
                    return True
        return False

    def waiting_at_or_above(self, priority: int) -> bool:
        if not self.queued:
            return False
        return any(self.bands[p].count for p in self.order if p >= priority)

    def enqueue(self, gen, state, priority: int, flow: str, size: int, target: str, subset, labels,
                dispatch: Callable, reject: Callable, no_endpoints: bool) -> Item:
        """Queue one request, or raise QueueFull (429). `no_endpoints`: the pool has none for it now."""
        spec = self.spec_of(gen) or FlowSpec()
        band = self.bands.get(priority)
        bspec = band.spec if band is not None else spec.band(priority)
        full = None
        if band is not None and band.count + 1 > bspec.max_requests or (spec.max_requests is not None
                                                                          and self.queued + 1 > spec.max_requests):
            full = f"The gateway's queue for priority {priority} is full; retry later."
        elif (band is not None and band.bytes + size > bspec.max_bytes) or size > bspec.max_bytes or (
                spec.max_bytes is not None and self.queued_bytes + size > spec.max_bytes):
            full = f"The gateway's queue for priority {priority} is full ({bspec.max_bytes} bytes); retry later."
        if full is not None:
            if self.tm is not None:
                self.tm.flow_outcome(labels, REJECTED_CAPACITY, 0.0)
            raise QueueFull(full)
        if band is None:
            band = self.bands[priority] = Band(priority, bspec)
            self.order = sorted(self.bands, reverse=True)
        now = self.clock()
        ttl = spec.no_endpoint_ttl if no_endpoints and spec.no_endpoint_ttl else spec.ttl
        item = Item(state, priority, flow, size, now, now + ttl, dispatch, reject, target, subset, labels)
        band.push(item)
        self.queued += 1
        self.queued_bytes += size
        if self.tm is not None:
            self.tm.flow_queued(labels, 1)
        self._arm(gen)
        return item

    def cancel(self, item: Item) -> None:
        """The client (or the gateway) went away while the request waited."""
        if item.done:
            return
        self._finish(item, EVICTED_CANCELLED)
        band = self.bands.get(item.priority)
        if band is not None:
            band.discard(item)

    def _finish(self, item: Item, outcome: str) -> None:
        item.done = True
        self.queued -= 1
        self.queued_bytes -= item.size
        if self.tm is not None:
            self.tm.flow_queued(item.labels, -1)
            self.tm.flow_outcome(item.labels, outcome, self.clock() - item.enqueued)

    # --- dispatch ---------------------------------------------------------------------------

    def _soon(self) -> None:
        if not self._run_soon:
            self._run_soon = True
            try:
                asyncio.get_running_loop().call_soon(self.run)
            except RuntimeError:  # no loop (unit tests drive run() themselves)
                self._run_soon = False

    def _arm(self, gen) -> None:
        if self._tick_handle is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                return
            interval = max(0.005, min(gen.config.poll_interval, 0.05))
            self._tick_handle = loop.call_later(interval, self._tick)

    def _tick(self) -> None:
        self._tick_handle = None
        self.run()
        if self.queued:
            self._arm(self.pool.gen)

    def run(self) -> int:
        """Expire what waited too long, then dispatch while endpoints have room. Returns how many
        requests were dispatched."""
        self._run_soon = False
        if not self.queued:
            return 0
        from .decide import candidates

        gen = self.pool.gen
        now = self.clock()
        sent = 0
        for prio in self.order:
            band = self.bands[prio]
            if not band.count:
                continue
            # TTL: FIFO per flow with one TTL, so the expired ones are at the heads
            for q in list(band.flows.values()):
                while q and (q[0].done or q[0].deadline <= now):
                    it = q.popleft()
                    if it.done:
                        continue
                    band.count -= 1
                    band.bytes -= it.size
                    self._expire(gen, it)
            blocked: set[str] = set()
            while band.count:
                heads = [h for h in band.heads() if h.flow not in blocked]
                if not heads:
                    break
                progressed = False
                for item in heads:
                    try:
                        eps = candidates(self.pool, item.subset)
                    except PickerError:
                        eps = []
                    room, _ = self.room(gen, eps, item.target)
                    if not room:
                        blocked.add(item.flow)
                        continue
                    band.take(item)
                    self._finish(item, DISPATCHED)
                    item.pending.resolve(item.dispatch(room))
                    sent += 1
                    progressed = True
                if not progressed:
                    break
        empty = [p for p in self.order if not self.bands[p].count and not self.bands[p].flows]
        if empty:
            for p in empty:
                del self.bands[p]
            self.order = sorted(self.bands, reverse=True)
        return sent

    def _expire(self, gen, item: Item) -> None:
        from .decide import candidates

        try:
            eps = candidates(self.pool, item.subset)
        except PickerError:
            eps = []
        serving = [e for e in eps if e.can_serve(item.target)]
        waited = self.clock() - item.enqueued
        if serving:
            self._finish(item, EVICTED_TTL)
            err: PickerError = QueueTimeout(f"The request waited {math.ceil(waited)} s in the gateway's queue without "
                                            f"a free model server; retry later.")
        else:
            self._finish(item, EVICTED_NO_ENDPOINTS)
            err = NoEndpointsTimeout(f"No model server for `{item.target}` became available within "
                                     f"{math.ceil(waited)} s.")
        item.pending.resolve(item.reject(err))

    def close(self) -> None:
        if self._tick_handle is not None:
            self._tick_handle.cancel()
            self._tick_handle = None
