"""Flow-control plugins an EndpointPickerConfig declares: the fairness and ordering policies a
priority band names, the static usage limit, and the saturation detectors that tell flow control
(flowcontrol.py) which endpoints have room for one more request.

Upstream's types are upstream's (llm-d router, pkg/epp/framework/plugins/flowcontrol/...): the
round-robin and global-strict fairness policies, FCFS ordering, the static usage-limit policy and
the concurrency detector. `batch-capacity-detector` is infershift's own and its default: an
endpoint has room while the requests in flight there are below its batch size."""
from __future__ import annotations

from ..errors import ConfigError
from .plugins import Plugin, param
from .upstream import Inert


class RoundRobinFairness(Inert):
    """Within a band, flows (fairness ids) take turns."""

    type_name = "round-robin-fairness-policy"
    role = "flow-control policy"
    parameter_names = ()


class GlobalStrictFairness(Inert):
    """Within a band, the oldest request of any flow goes first (one FCFS queue)."""

    type_name = "global-strict-fairness-policy"
    role = "flow-control policy"
    parameter_names = ()


class FCFSOrdering(Inert):
    """Within a flow, first come, first served."""

    type_name = "fcfs-ordering-policy"
    role = "flow-control policy"
    parameter_names = ()


class StaticUsageLimit(Inert):
    """Every band may use all the capacity there is (upstream's default usage-limit policy)."""

    type_name = "static-usage-limit-policy"
    role = "flow-control policy"
    parameter_names = ()


class Detector(Plugin):
    """Which endpoints have room for one more request. `load` is the requests in flight there as
    flow control counts them (polled running + waiting, plus sent minus finished since that poll)."""

    role = "saturation detector"

    def has_room(self, e, load: float, fresh: bool) -> bool:
        raise NotImplementedError

    def admits(self, e, load: float, fresh: bool) -> bool:
        """The scheduling filter once a request is dispatched: False for an endpoint past its safety
        limit (the ideal limit plus headroom), so the scheduler may still burst above `has_room`'s
        limit for prefix or LoRA affinity, as upstream's detectors do as filters."""
        return True

    def forget_endpoint(self, address: str) -> None:
        pass


class BatchCapacityDetector(Detector):
    """infershift's default. An endpoint has room while its load is below its batch size plus
    `queueDepthThreshold`, and its KV cache is at most `kvCacheUtilThreshold`. The batch size is
    `maxConcurrency` when set, else learned: the most requests seen running there. A learned size
    may be short of the server's real one (a lightly loaded server never shows its limit), so until
    a poll has shown that many running with others waiting (the batch full), the endpoint may take a
    few more (1 + size/8) while its last poll shows no queue — the next poll then shows them running
    (a bigger size), or queued (the size confirmed).
    Before anything was seen running there: room while the polled queue is at most
    `queueDepthThreshold`. Stale metrics: load against the batch size only.
    As the scheduling filter it drops only an endpoint whose batch size is known (`maxConcurrency`,
    or seen full) and whose load is past that size times 1 + `headroom` plus the queue threshold,
    or whose KV cache is past min(1, kvCacheUtilThreshold * (1 + headroom)); when that drops every
    candidate, none is dropped (the scorers pick the least bad).
    While requests wait in the picker, an endpoint is sent at most `maxUnconfirmed` (1; 0: no
    limit) requests between two polls of it (flowcontrol.py, FlowController.room)."""

    type_name = "batch-capacity-detector"
    parameter_names = ("maxConcurrency", "queueDepthThreshold", "kvCacheUtilThreshold", "headroom", "maxUnconfirmed")

    def __init__(self, name: str, parameters: dict):
        super().__init__(name, parameters)
        where = f"scheduling plugin {name}"
        limit = parameters.get("maxConcurrency")
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit <= 0):
            raise ConfigError(f"{where}.parameters.maxConcurrency: expected a positive integer, got {limit!r}")
        self.max_concurrency = limit
        self.queue = float(param(parameters, "queueDepthThreshold", 0, (int, float), where))
        self.kv = float(param(parameters, "kvCacheUtilThreshold", 0.8, (int, float), where))
        self.headroom = float(param(parameters, "headroom", 0.5, (int, float), where))
        self.max_unconfirmed = param(parameters, "maxUnconfirmed", 1, int, where)  # 0: no limit
        if self.queue < 0 or not 0 < self.kv <= 1 or self.headroom < 0:
            raise ConfigError(f"{where}.parameters: queueDepthThreshold must be >= 0, kvCacheUtilThreshold in (0, 1] "
                              f"and headroom >= 0")
        self.batch: dict[str, float] = {}  # address -> the most requests seen running there
        self.full: set[str] = set()  # addresses seen with that many running and a queue: the size is theirs
        self._seen: dict[str, object] = {}  # address -> the scrape last read

    def batch_size(self, e) -> float | None:
        if self.max_concurrency is not None:
            return float(self.max_concurrency)
        m = e.scraped
        if self._seen.get(e.address) is not m:
            self._seen[e.address] = m
            if m.running > self.batch.get(e.address, 0):
                self.batch[e.address] = m.running
                self.full.discard(e.address)
            if m.waiting > 0 and m.running >= self.batch.get(e.address, 0) > 0:
                self.full.add(e.address)
        return self.batch.get(e.address)

    def has_room(self, e, load: float, fresh: bool) -> bool:
        if fresh and e.metrics.kv_usage > self.kv:
            return False
        limit = self.batch_size(e)
        m = e.scraped
        if limit is None:
            return m.waiting + (0 if fresh else load - m.running - m.waiting) <= self.queue
        if self.max_concurrency is None and e.address not in self.full and m.waiting <= self.queue:
            limit += 1 + limit // 8  # never seen full: probe for a bigger batch
        return load < limit + self.queue

    def admits(self, e, load: float, fresh: bool) -> bool:
        if fresh and e.metrics.kv_usage > min(1.0, self.kv * (1 + self.headroom)):
            return False
        limit = self.batch_size(e)
        if limit is None or (self.max_concurrency is None and e.address not in self.full):
            return True
        return load < limit * (1 + self.headroom) + self.queue

    def forget_endpoint(self, address: str) -> None:
        self.batch.pop(address, None)
        self.full.discard(address)
        self._seen.pop(address, None)


class ConcurrencyDetector(Detector):
    """Upstream's concurrency-detector in its `requests` mode: an endpoint has room while the
    requests in flight there are below `maxConcurrency`; as the scheduling filter it drops those at
    `maxConcurrency * (1 + headroom)` or more."""

    type_name = "concurrency-detector"
    parameter_names = ("concurrencyMode", "maxConcurrency", "maxTokenConcurrency", "headroom")

    def __init__(self, name: str, parameters: dict):
        super().__init__(name, parameters)
        where = f"scheduling plugin {name}"
        mode = parameters.get("concurrencyMode", "requests")
        if mode != "requests":
            raise ConfigError(f"{where}.parameters.concurrencyMode: only 'requests' is supported (token counts are "
                              f"not estimated here), got {mode!r}")
        self.max_concurrency = float(param(parameters, "maxConcurrency", 100, int, where))
        param(parameters, "maxTokenConcurrency", 1_000_000, int, where)
        self.headroom = float(param(parameters, "headroom", 0.0, (int, float), where))
        if self.max_concurrency <= 0 or self.headroom < 0:
            raise ConfigError(f"{where}.parameters: maxConcurrency must be > 0 and headroom >= 0")

    def has_room(self, e, load: float, fresh: bool) -> bool:
        return load < self.max_concurrency

    def admits(self, e, load: float, fresh: bool) -> bool:
        return load < self.max_concurrency * (1 + self.headroom)


FLOW_PLUGINS = {c.type_name: c for c in (RoundRobinFairness, GlobalStrictFairness, FCFSOrdering, StaticUsageLimit,
                                         BatchCapacityDetector, ConcurrencyDetector)}
