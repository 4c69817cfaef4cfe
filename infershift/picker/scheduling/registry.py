"""Build a Scheduler from the config's plugin list and profile; the same binary serves any policy."""
from __future__ import annotations

import random

from ..config import SchedulingSpec, parse_scheduling
from ..errors import ConfigError
from .admission import AdmissionFilter
from .filters import DecodeFilter, ModelFilter, SaturationFilter
from .flowpolicies import FLOW_PLUGINS, Detector
from .pickers import MaxScorePicker, RandomPicker, RoundRobinPicker, WeightedRandomPicker
from .plugins import Filter, Picker, Plugin, Scorer
from .prefix import PrefixCacheScorer
from .scheduler import Scheduler
from .scorers import KVCacheScorer, LoadAwareScorer, LoraAffinityScorer, QueueScorer
from .upstream import INERT, SaturationGate, UtilizationDetector

FILTERS = {c.type_name: c for c in (ModelFilter, SaturationFilter, AdmissionFilter, DecodeFilter, UtilizationDetector)}
SCORERS = {c.type_name: c for c in (QueueScorer, KVCacheScorer, LoraAffinityScorer, PrefixCacheScorer,
                                    LoadAwareScorer)}
PICKERS = {c.type_name: c for c in (MaxScorePicker, RandomPicker, WeightedRandomPicker, RoundRobinPicker)}
# Other names of the same plugins: infershift's former names and short forms.
ALIASES = {"round-robin": "round-robin-picker", "random": "random-picker", "kv-cache-scorer": "kv-cache-utilization-scorer"}

# Plugin types of upstream's endpoint picker (llm-d router, and the Gateway API Inference
# Extension's EPP before it moved there) that this picker does not implement. Only for the error
# message: an upstream type gets "not implemented here", anything else "unknown" (a typo?).
UPSTREAM_UNSUPPORTED = frozenset("""
active-request-scorer agent-identity always-disagg-multimodal-decider always-disagg-pd-decider anthropic-parser
burst-prefix-cache-producer by-label by-label-selector  context-length-aware cross-replica-publisher
data-parallel-profile-handler dcgm-data-source dcgm-extractor destination-endpoint-served-verifier
disagg-headers-handler disagg-profile-handler disaggregatedset-rollout-pod-extractor disaggregatedset-rollout-screener
edf-ordering-policy encode-filter endpoint-attribute-filter endpoint-attribute-scorer endpoint-notification-source
 file-discovery  header-based-testing-filter
header-label-affinity-scorer header-profile-handler inflight-load-producer k8s-notification-source
label-selector-filter latency-scorer latency-slo-admitter local-syncer mm-embeddings-cache-producer
mm-embeddings-cache-scorer multicluster-approx-prefix-cache-producer multicluster-file-discovery
multicluster-kv-cache-utilization-scorer multicluster-metrics-data-source multicluster-metrics-extractor
multicluster-prefix-cache-scorer multicluster-queue-scorer multicluster-session-affinity-filter no-hit-lru-scorer
p2p-source-producer passthrough-parser pd-profile-handler precise-prefix-cache-producer precise-prefix-cache-scorer
predicted-latency-producer predicted-latency-scorer prefill-filter prefill-header-handler prefix-based-pd-decider
prefix-cache-affinity-filter priority-holdback-policy priority-then-time-eviction-order-policy probabilistic-admitter
program-aware-fairness request-attribute-reporter  running-requests-size-scorer
session-affinity-filter session-affinity-scorer session-id-producer sglanghttp-parser sheddable-eviction-filter
slo-deadline-ordering-policy slo-headroom-tier-filter soft-reflective-ceiling-policy
token-load-scorer token-producer tokenizer topology-affinity-filter topology-affinity-scorer topology-extractor
utilization-filter vertexai-parser vllmgrpc-parser vllmhttp-parser low-queue-filter lora-affinity-filter
least-queue-filter least-kv-cache-filter decision-tree-filter
""".split())  # noqa: SIM905 (one word per type, wrapped)


def canonical_type(ptype: str) -> str:
    return ALIASES.get(ptype, ptype)


def role_of(ptype: str) -> str | None:
    """'filter' | 'scorer' | 'picker' | an inert plugin's role | None (not implemented here)."""
    t = canonical_type(ptype)
    if t in FILTERS:
        return "filter"
    if t in SCORERS:
        return "scorer"
    if t in PICKERS:
        return "picker"
    if t in INERT:
        return INERT[t].role
    if t in FLOW_PLUGINS:
        return FLOW_PLUGINS[t].role
    return None


def known_types() -> list[str]:
    return sorted([*FILTERS, *SCORERS, *PICKERS, *INERT, *FLOW_PLUGINS])


def unsupported_message(ptype: str) -> str:
    if ptype in UPSTREAM_UNSUPPORTED:
        return f"plugin type {ptype!r} (upstream's) is not implemented by infershift's picker"
    return f"unknown plugin type {ptype!r} (known: {', '.join(known_types())})"


def build_scheduler(spec: SchedulingSpec, rng: random.Random, previous: Scheduler | None = None,
                    fallbacks: int = 0) -> Scheduler:
    """`previous` lends its learned state (the prefix index) to the new scheduler on a config reload."""
    old_prefix = {}
    if previous is not None:
        old_prefix = {s.name: s.index for s, _ in previous.scorers if isinstance(s, PrefixCacheScorer)}
    built: dict[str, Plugin] = {}
    for i, p in enumerate(spec.plugins):
        t = canonical_type(p.type)
        if t in FILTERS:
            built[p.name] = FILTERS[t](p.name, p.parameters)
        elif t in SCORERS:
            if t == PrefixCacheScorer.type_name:
                built[p.name] = PrefixCacheScorer(p.name, p.parameters, old_prefix.get(p.name))
            else:
                built[p.name] = SCORERS[t](p.name, p.parameters)
        elif t in PICKERS:
            built[p.name] = PICKERS[t](p.name, p.parameters, rng)
        elif t in INERT:
            built[p.name] = INERT[t](p.name, p.parameters)
        elif t in FLOW_PLUGINS:
            built[p.name] = FLOW_PLUGINS[t](p.name, p.parameters)
        else:
            raise ConfigError(f"scheduling.plugins[{i}].type: {unsupported_message(p.type)}")
    prof = spec.profile
    filters: list[Filter] = []
    # under flow control requests wait instead of being shed on arrival: upstream's legacy gate is off
    if spec.saturation_detector is not None and spec.flow_control is None:
        detector = built[spec.saturation_detector]
        if not isinstance(detector, UtilizationDetector):
            raise ConfigError(f"scheduling.saturationDetector.pluginRef: plugin {spec.saturation_detector!r} "
                              f"is not a saturation detector (utilization-detector)")
        filters.append(SaturationGate(detector))
    for i, name in enumerate(prof.filters):
        plugin = built[name]
        if not isinstance(plugin, Filter):
            raise ConfigError(f"scheduling.profile.filters[{i}]: plugin {name!r} is not a filter")
        filters.append(plugin)
    scorers: list[tuple[Scorer, float]] = []
    for i, (name, weight) in enumerate(prof.scorers):
        scorer = built[name]
        if not isinstance(scorer, Scorer):
            raise ConfigError(f"scheduling.profile.scorers[{i}].plugin: plugin {name!r} is not a scorer")
        scorers.append((scorer, weight))
    picker = built[prof.picker]
    if not isinstance(picker, Picker):
        raise ConfigError(f"scheduling.profile.picker: plugin {prof.picker!r} is not a picker")
    sched = Scheduler(filters, scorers, picker, fallbacks=fallbacks)
    flow = spec.flow_control
    if flow is not None:
        # requests wait in flow control instead of being shed on arrival (flowcontrol.py)
        sched.shed = False
        flow_detector = built.get(flow.detector) if flow.detector else None
        if not isinstance(flow_detector, (Detector, UtilizationDetector)):
            raise ConfigError(f"scheduling.flowControl.saturationDetector.pluginRef: plugin {flow.detector!r} is not a "
                              f"saturation detector")
        sched.flow_detector = flow_detector
    return sched


def check_scheduling(raw: object) -> SchedulingSpec:
    """Parse a `scheduling` block and build it once, as the picker will: every plugin type, every
    parameter and every profile role checked, with nothing started. The stack spec validates
    `pools.*.picker.scheduling` with this, so a mistake fails `render`/`up`, not a picker pod."""
    spec = parse_scheduling(raw)
    build_scheduler(spec, random.Random(0))
    return spec
