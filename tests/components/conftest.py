"""Renders shared by the component tests: each stack is rendered once per session."""
from __future__ import annotations

import pytest

from infershift import spec
from infershift.components.render import Render, render_stack

STACKS = spec.stack_names()


class Renders:
    def __init__(self):
        self._cache: dict[str, Render] = {}

    def __call__(self, name: str) -> Render:
        if name not in self._cache:
            self._cache[name] = render_stack(name)
        return self._cache[name]


@pytest.fixture(scope="session")
def renders() -> Renders:
    return Renders()
