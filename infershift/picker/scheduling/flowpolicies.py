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

    def forget_endpoint(self, address: str) -> None:
        pass


class BatchCapacityDetector(Detector):
    """infershift's default. An endpoint has room while its load is below its batch size — the
    most requests seen running there while others waited (a server queues only once its batch or
    KV cache is full), or `maxConcurrency` when set — plus `queueDepthThreshold` requests more, and
    while its KV cache is at most `kvCacheUtilThreshold`. Before its batch size is known: while its
    polled queue is at most `queueDepthThreshold`. Stale metrics: load against the batch size only."""

    type_name = "batch-capacity-detector"
    parameter_names = ("maxConcurrency", "queueDepthThreshold", "kvCacheUtilThreshold")

    def __init__(self, name: str, parameters: dict):
        super().__init__(name, parameters)
        where = f"scheduling plugin {name}"
        limit = parameters.get("maxConcurrency")
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit <= 0):
            raise ConfigError(f"{where}.parameters.maxConcurrency: expected a positive integer, got {limit!r}")
        self.max_concurrency = limit
        self.queue = float(param(parameters, "queueDepthThreshold", 0, (int, float), where))
        self.kv = float(param(parameters, "kvCacheUtilThreshold", 0.8, (int, float), where))
        if self.queue < 0 or not 0 < self.kv <= 1:
            raise ConfigError(f"{where}.parameters: queueDepthThreshold must be >= 0 and kvCacheUtilThreshold in (0, 1]")
        self.batch: dict[str, float] = {}  # address -> learned batch size
        self._seen: dict[str, object] = {}  # address -> the scrape it was learned from

    def batch_size(self, e) -> float | None:
        if self.max_concurrency is not None:
            return float(self.max_concurrency)
        m = e.scraped
        if self._seen.get(e.address) is not m:
            self._seen[e.address] = m
            if m.waiting > 0 and m.running > self.batch.get(e.address, 0):
                self.batch[e.address] = m.running
        return self.batch.get(e.address)

    def has_room(self, e, load: float, fresh: bool) -> bool:
        limit = self.batch_size(e)
        if fresh and e.metrics.kv_usage > self.kv:
            return False
        if limit is None:
            return e.scraped.waiting + (0 if fresh else load - e.scraped.running - e.scraped.waiting) <= self.queue
        return load < limit + self.queue

    def forget_endpoint(self, address: str) -> None:
        self.batch.pop(address, None)
        self._seen.pop(address, None)


class ConcurrencyDetector(Detector):
    """Upstream's concurrency-detector in its `requests` mode: an endpoint has room while the
    requests in flight there are below `maxConcurrency * (1 + headroom)`."""

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
        return load < self.max_concurrency * (1 + self.headroom)


FLOW_PLUGINS = {c.type_name: c for c in (RoundRobinFairness, GlobalStrictFairness, FCFSOrdering, StaticUsageLimit,
                                         BatchCapacityDetector, ConcurrencyDetector)}
