"""Helpers for the devstack tests (a unique module name: test dirs have no __init__.py)."""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from infershift.spec import stack_path  # noqa: E402

TESTDATA = Path(__file__).resolve().parent / "testdata"
# Fast simulated GPUs and a gentle picker scrape: many processes share 2 cores in CI.
FAST = dict(auto_ports=True, time_scale=50.0, poll_interval="200ms", ready_timeout=90.0)


def copy_stack(name: str, directory: Path) -> Path:
    """A private copy of a committed stack: tests edit copies, never stacks/."""
    target = directory / f"Pulumi.{name}.yaml"
    shutil.copyfile(stack_path(name), target)
    return target


def within(observed: int, total: int, weight_share: float) -> tuple[bool, str]:
    from infershift.devstack.traffic import tolerance

    share = observed / total if total else 0.0
    tol = tolerance(weight_share, total)
    return abs(share - weight_share) <= tol, f"observed {share:.3f} of {total}, configured {weight_share:.3f} ± {tol:.3f}"
