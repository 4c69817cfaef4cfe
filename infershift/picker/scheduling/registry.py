"""Build a Scheduler from the config's plugin list and profile; the same binary serves any policy."""
from __future__ import annotations

import random

from ..config import SchedulingSpec, parse_scheduling
from ..errors import ConfigError
from .admission import AdmissionFilter
from .filters import ModelFilter, SaturationFilter
from .pickers import MaxScorePicker, RandomPicker, RoundRobinPicker
from .plugins import Filter, Picker, Plugin, Scorer
from .prefix import PrefixCacheScorer
from .scheduler import Scheduler
from .scorers import KVCacheScorer, LoraAffinityScorer, QueueScorer

FILTERS = {c.type_name: c for c in (ModelFilter, SaturationFilter, AdmissionFilter)}
SCORERS = {c.type_name: c for c in (QueueScorer, KVCacheScorer, LoraAffinityScorer, PrefixCacheScorer)}
PICKERS = {c.type_name: c for c in (MaxScorePicker, RandomPicker, RoundRobinPicker)}
ALIASES = {"round-robin": "round-robin-picker", "random": "random-picker"}


def build_scheduler(spec: SchedulingSpec, rng: random.Random, previous: Scheduler | None = None,
                    fallbacks: int = 0) -> Scheduler:
    """`previous` lends its learned state (the prefix index) to the new scheduler on a config reload."""
    old_prefix = {}
    if previous is not None:
        old_prefix = {s.name: s.index for s, _ in previous.scorers if isinstance(s, PrefixCacheScorer)}
    built: dict[str, Plugin] = {}
    for i, p in enumerate(spec.plugins):
        t = ALIASES.get(p.type, p.type)
        if t in FILTERS:
            built[p.name] = FILTERS[t](p.name, p.parameters)
        elif t in SCORERS:
            if t == PrefixCacheScorer.type_name:
                built[p.name] = PrefixCacheScorer(p.name, p.parameters, old_prefix.get(p.name))
            else:
                built[p.name] = SCORERS[t](p.name, p.parameters)
        elif t in PICKERS:
            built[p.name] = PICKERS[t](p.name, p.parameters, rng)
        else:
            known = sorted([*FILTERS, *SCORERS, *PICKERS])
            raise ConfigError(f"scheduling.plugins[{i}].type: unknown plugin type {p.type!r} (known: {', '.join(known)})")
    prof = spec.profile
    filters: list[Filter] = []
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
    return Scheduler(filters, scorers, picker, fallbacks=fallbacks)


def check_scheduling(raw: object) -> SchedulingSpec:
    """Parse a `scheduling` block and build it once, as the picker will: every plugin type, every
    parameter and every profile role checked, with nothing started. The stack spec validates
    `pools.*.picker.scheduling` with this, so a mistake fails `render`/`up`, not a picker pod."""
    spec = parse_scheduling(raw)
    build_scheduler(spec, random.Random(0))
    return spec
