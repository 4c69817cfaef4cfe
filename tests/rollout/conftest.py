"""A running local stack (real Envoy, pickers and simulators) per test module, on a copy of the
rollout tests' stack file."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from infershift.devstack.stack import Options, run

TESTDATA = Path(__file__).resolve().parent / "testdata"
# fast simulated GPUs and a gentle picker scrape: many processes share 2 cores in CI
FAST = dict(auto_ports=True, time_scale=20.0, poll_interval="200ms", ready_timeout=90.0)


@pytest.fixture(scope="module")
def rollout_stack(tmp_path_factory):
    directory = tmp_path_factory.mktemp("rollout-stack")
    file = directory / "Pulumi.rollout.yaml"
    shutil.copyfile(TESTDATA / "Pulumi.rollout.yaml", file)
    with run(file, Options(**FAST, workdir=directory / "work")) as stack:
        yield stack
