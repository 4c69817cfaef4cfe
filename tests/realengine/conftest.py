"""Fixtures for the tests against a real Kubernetes control plane (controlplane.py).

`control_plane` (session): a started ControlPlane; stopped in teardown, also on failure. Without
the binaries (`make realengine` builds them) the tests using it are skipped, naming that command;
with INFERSHIFT_REQUIRE_REALENGINE=1 (CI) they fail instead.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import controlplane  # noqa: E402
from controlplane import require_or_skip  # noqa: E402


@pytest.fixture(scope="session")
def control_plane_binaries() -> Path:
    b = controlplane.binaries()
    if b is None:
        require_or_skip("the control plane (etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kwok) "
                        "is not built: run `make realengine`")
    assert b is not None
    return b


@pytest.fixture(scope="session")
def control_plane(control_plane_binaries):
    cp = controlplane.ControlPlane(control_plane_binaries)
    try:
        cp.start()
        yield cp
    finally:
        cp.stop()
