"""Shared fixtures: a running local stack per test module, on a copy of the stack file."""
from __future__ import annotations

import pytest
from devstack_helpers import FAST, copy_stack

from infershift.devstack.stack import LocalStack, Options


@pytest.fixture(scope="module")
def local_stack(tmp_path_factory):
    directory = tmp_path_factory.mktemp("local-stack")
    stack = LocalStack(copy_stack("local", directory), Options(**FAST, workdir=directory / "work"),
                       log=lambda msg: print(f"devstack: {msg}"))
    stack.start()
    yield stack
    stack.stop()
