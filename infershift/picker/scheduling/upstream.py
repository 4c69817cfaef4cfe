"""Upstream plugins (llm-d router / Gateway API Inference Extension EPP) that have no infershift
counterpart of another name: the utilization saturation detector, and the plugins whose job the
picker does itself, which an EndpointPickerConfig may declare (profile handler, request parser,
data-layer sources and extractors, the prefix-cache data producer).

The inert ones are built like every plugin, so their parameters are checked, but take no part
in scheduling."""
from __future__ import annotations

import time

from ..config import parse_duration
from ..endpoints import Endpoint
from ..errors import ConfigError
from .plugins import Filter, Plugin, SchedRequest, param
from .prefix import PREFIX_PARAMETERS

SATURATED = "the pool is saturated; sheddable request dropped, retry later"


class UtilizationDetector(Filter):
    """Upstream's utilization-detector. As the saturation detector (`saturationDetector.pluginRef`,
    or by default) its `saturation()` gates sheddable requests (see SaturationGate); referenced in a
    profile it is a filter: endpoints below `threshold * (1 + headroom)` on both queue and KV,
    fresh metrics only, all of them if none is."""

    type_name = "utilization-detector"
    parameter_names = ("queueDepthThreshold", "kvCacheUtilThreshold", "metricsStalenessThreshold", "headroom")

    def __init__(self, name: str, parameters: dict, clock=time.monotonic):
        super().__init__(name, parameters)
        where = f"scheduling plugin {name}"
        self.queue = float(param(parameters, "queueDepthThreshold", 5, int, where))
        self.kv = float(param(parameters, "kvCacheUtilThreshold", 0.8, (int, float), where))
        if self.queue <= 0 or not 0 < self.kv <= 1:
            raise ConfigError(f"{where}.parameters: queueDepthThreshold must be > 0 and kvCacheUtilThreshold in (0, 1]")
        self.headroom = float(param(parameters, "headroom", 0.0, (int, float), where))
        stale = parameters.get("metricsStalenessThreshold", "200ms")
        self.stale_after = parse_duration(stale, f"{where}.parameters.metricsStalenessThreshold")
        self.clock = clock

    def saturation(self, eps: list[Endpoint]) -> float:
        """Mean over the candidates of max(waiting / queue, kv / kv threshold); an endpoint whose
        metrics are older than metricsStalenessThreshold counts as 1 (saturated)."""
        if not eps:
            return 1.0
        now, stale, q, kv = self.clock(), self.stale_after, self.queue, self.kv
        total = 0.0
        for e in eps:
            if now - e.last_ok > stale:
                total += 1.0
                continue
            m = e.metrics
            total += max(m.waiting / q, m.kv_usage / kv)
        return total / len(eps)

    def filter(self, req: SchedRequest, eps: list[Endpoint]) -> list[Endpoint]:
        q, kv = self.queue * (1 + self.headroom), self.kv * (1 + self.headroom)
        now, stale = self.clock(), self.stale_after
        out = [e for e in eps if now - e.last_ok <= stale and e.metrics.waiting < q and e.metrics.kv_usage < kv]
        return out or eps


class SaturationGate(Filter):
    """Admission before the profile, as upstream's (legacy, non-flow-control) admission controller:
    a sheddable request is dropped (429) when the detector's saturation of the candidates is >= 1.
    Narrows nothing; depends only on the snapshot, so the scheduler shares it per snapshot."""

    def __init__(self, detector: UtilizationDetector):
        super().__init__(f"saturation-detector({detector.name})", {})
        self.detector = detector

    def filter(self, req: SchedRequest, eps: list[Endpoint]) -> list[Endpoint]:
        if req.sheddable and self.detector.saturation(eps) >= 1.0:
            req.scratch.setdefault("shed_reason", SATURATED)
        return eps


class Inert(Plugin):
    """An upstream plugin whose work the picker does itself; built for its parameter check only."""

    role = ""


class SingleProfileHandler(Inert):
    type_name = "single-profile-handler"
    role = "profile handler"
    parameter_names = ()


class OpenAIParser(Inert):
    """The picker parses OpenAI-style bodies on the completion paths and passes others through."""

    type_name = "openai-parser"
    role = "parser"
    parameter_names = ()


def _source_parameters(plugin: Plugin, parameters: dict, path: str) -> None:
    where = f"scheduling plugin {plugin.name}.parameters"
    scheme = parameters.get("scheme", "http")
    if scheme != "http":
        raise ConfigError(f"{where}.scheme: only 'http' is supported (the picker scrapes plain HTTP), got {scheme!r}")
    got = parameters.get("path", path)
    if got != path:
        raise ConfigError(f"{where}.path: the picker reads {path}, got {got!r}")
    skip = parameters.get("insecureSkipVerify", True)
    if not isinstance(skip, bool):
        raise ConfigError(f"{where}.insecureSkipVerify: expected true or false, got {skip!r}")


class MetricsDataSource(Inert):
    """The picker polls each endpoint's /metrics (metrics.pollInterval)."""

    type_name = "metrics-data-source"
    role = "data source"
    parameter_names = ("scheme", "path", "insecureSkipVerify")

    def __init__(self, name: str, parameters: dict):
        super().__init__(name, parameters)
        _source_parameters(self, parameters, "/metrics")


class ModelsDataSource(Inert):
    """The picker polls each endpoint's /v1/models (metrics.modelsInterval)."""

    type_name = "models-data-source"
    role = "data source"
    parameter_names = ("scheme", "path", "insecureSkipVerify")

    def __init__(self, name: str, parameters: dict):
        super().__init__(name, parameters)
        _source_parameters(self, parameters, "/v1/models")


# Engines whose metric names the picker's parser reads (metrics_parse.py), and "auto" (recognise the page).
from ..metrics_parse import AUTO as _AUTO  # noqa: E402
from ..metrics_parse import ENGINES as _ENGINES  # noqa: E402

SUPPORTED_ENGINES = (*_ENGINES, _AUTO)


class CoreMetricsExtractor(Inert):
    type_name = "core-metrics-extractor"
    role = "data extractor"
    parameter_names = ("engineLabelKey", "defaultEngine", "engineConfigs")

    def __init__(self, name: str, parameters: dict):
        super().__init__(name, parameters)
        where = f"scheduling plugin {name}.parameters"
        engine = parameters.get("defaultEngine", "vllm")
        if engine not in SUPPORTED_ENGINES:
            raise ConfigError(f"{where}.defaultEngine: engine {engine!r} is not supported by this picker's metrics "
                              f"parser (supported: {', '.join(SUPPORTED_ENGINES)})")
        key = parameters.get("engineLabelKey", "llm-d.ai/engine-type")
        if not isinstance(key, str) or not key:
            raise ConfigError(f"{where}.engineLabelKey: expected a label key, got {key!r}")
        if parameters.get("engineConfigs"):
            raise ConfigError(f"{where}.engineConfigs: custom metric specs are not supported; the picker reads "
                              f"the {', '.join(SUPPORTED_ENGINES)} metric names itself")


class ModelsDataExtractor(Inert):
    type_name = "models-data-extractor"
    role = "data extractor"
    parameter_names = ()


class ApproxPrefixCacheProducer(Inert):
    """Upstream moved the prefix index's parameters here; the picker hands them to the
    prefix-cache-scorers that have none of their own (scheduling/epc.py)."""

    type_name = "approx-prefix-cache-producer"
    role = "data producer"
    parameter_names = PREFIX_PARAMETERS


INERT = {c.type_name: c for c in (SingleProfileHandler, OpenAIParser, MetricsDataSource, ModelsDataSource,
                                   CoreMetricsExtractor, ModelsDataExtractor, ApproxPrefixCacheProducer)}
