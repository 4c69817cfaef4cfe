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

    def has_room(self, e, load: float, fresh: bool, unconfirmed: int = 0) -> bool:
        """`unconfirmed`: requests sent to `e` since its last poll."""
        raise NotImplementedError

    def admits(self, e, load: float, fresh: bool) -> bool:
        """The scheduling filter once a request is dispatched: False for an endpoint past its safety
        limit (the ideal limit plus headroom), so the scheduler may still burst above `has_room`'s
        limit for prefix or LoRA affinity, as upstream's detectors do as filters."""
        return True

    def forget_endpoint(self, address: str) -> None:
        pass


class BatchCapacityDetector(Detector):
    """infershift's default. An endpoint has room while its KV cache is at most
    `kvCacheUtilThreshold` and its load (requests in flight, as flow control counts them) is below
    its batch size plus `queueDepthThreshold`. The batch size is `maxConcurrency` when set, else
    learned: the most requests seen running there. A learned size may be short of the server's
    real one (a lightly loaded server never shows its limit), so past it the endpoint may still take
    requests while its last poll showed no queue, an eighth of the size (at least 1) per poll: the
    next poll shows them running (a bigger size) or waiting (no more until the queue is gone). A
    queue can also mean prefill is the bottleneck, not the batch (vLLM keeps a request waiting while
    the step's token budget is spent); either way nothing more goes there until it drains. Stale
    metrics: load against the learned size only.
    As the scheduling filter it drops only an endpoint that is queueing and whose load is past its
    size times 1 + `headroom` plus the queue threshold, or whose KV cache is past
    min(1, kvCacheUtilThreshold * (1 + headroom)); when that drops every candidate, none is
    dropped (the scorers pick the least bad).
    While requests wait in the picker, an endpoint is sent at most `maxUnconfirmed` requests
    between two polls of it (default: an eighth of its batch size, at least 1; 0: no limit;
    flowcontrol.py, FlowController.room). All of this applies while more than one priority is in
    use; with one, room is the scheduling filter's (`admits`): holding requests in the picker would
    reorder nothing, and a server's own queue lets it batch their prefills."""

    type_name = "batch-capacity-detector"
    # FlowController.room: while one priority is in use, requests wait only once every endpoint is
    # past its safety limit (admits), as reordering them would change nothing
    one_priority_gate = True
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
        unconfirmed = parameters.get("maxUnconfirmed")
        # None: one eighth of the batch size (at least 1); 0: no limit
        self.max_unconfirmed = None if unconfirmed is None else param(parameters, "maxUnconfirmed", 0, int, where)
        if self.queue < 0 or not 0 < self.kv <= 1 or self.headroom < 0:
            raise ConfigError(f"{where}.parameters: queueDepthThreshold must be >= 0, kvCacheUtilThreshold in (0, 1] "
                              f"and headroom >= 0")
        self.batch: dict[str, float] = {}  # address -> the most requests seen running there
        self._seen: dict[str, object] = {}  # address -> the scrape last read

    def batch_size(self, e) -> float | None:
        if self.max_concurrency is not None:
            return float(self.max_concurrency)
        m = e.scraped
        if self._seen.get(e.address) is not m:
            self._seen[e.address] = m
            if m.running > self.batch.get(e.address, 0):
                self.batch[e.address] = m.running
        return self.batch.get(e.address)

    def has_room(self, e, load: float, fresh: bool, unconfirmed: int = 0) -> bool:
        if fresh and e.metrics.kv_usage > self.kv:
            return False
        size = self.batch_size(e)
        if size is not None and load < size + self.queue:
            return True
        if self.max_concurrency is not None or not fresh:
            return False
        # past the size seen (or none seen yet): probe while the last poll showed no queue
        return e.scraped.waiting <= self.queue and unconfirmed < max(1, int(size or 0) // 8)

    def admits(self, e, load: float, fresh: bool) -> bool:
        if fresh and e.metrics.kv_usage > min(1.0, self.kv * (1 + self.headroom)):
            return False
        size = self.batch_size(e)
        if size is None or e.scraped.waiting <= self.queue:
            return True
        return load < size * (1 + self.headroom) + self.queue

    def unconfirmed_limit(self, e) -> int | None:
        """How many requests `e` may be sent between two polls while requests wait (None: any)."""
        if self.max_unconfirmed is not None:
            return self.max_unconfirmed or None
        size = self.batch_size(e)
        return max(1, int(size) // 8) if size else None

    def forget_endpoint(self, address: str) -> None:
        self.batch.pop(address, None)
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

    def has_room(self, e, load: float, fresh: bool, unconfirmed: int = 0) -> bool:
        return load < self.max_concurrency

    def admits(self, e, load: float, fresh: bool) -> bool:
        return load < self.max_concurrency * (1 + self.headroom)


FLOW_PLUGINS = {c.type_name: c for c in (RoundRobinFairness, GlobalStrictFairness, FCFSOrdering, StaticUsageLimit,
                                         BatchCapacityDetector, ConcurrencyDetector)}
