"""Scheduling: filters drop endpoints, weighted scorers rank them, one picker chooses (llm-d style)."""
from .plugins import Filter, Picker, SchedRequest, Scorer
from .registry import build_scheduler, check_scheduling
from .scheduler import Scheduler

__all__ = ["Filter", "Picker", "Scorer", "SchedRequest", "Scheduler", "build_scheduler", "check_scheduling"]
