"""Composed components check their args as stacks are checked: each file in invalid/ gives one
component args with one thing wrong, and constructing it fails with the `# expect:` message
(component, name, arg, what is wrong) before anything is declared."""
import re
from pathlib import Path

import pytest
import yaml

from infershift import components
from infershift.components.checks import ComponentArgsError, problems
from infershift.components.render import render_program

CORPUS = sorted((Path(__file__).parent / "invalid").glob("*.yaml"))


def _case(path: Path) -> tuple[dict, str]:
    text = path.read_text()
    m = re.search(r"^# expect: (.+)$", text, re.MULTILINE)
    assert m, f"{path.name} has no '# expect:' line"
    return yaml.safe_load(text), m.group(1).strip()


def test_corpus_covers_the_composed_components():
    assert len(CORPUS) >= 15
    assert {_case(p)[0]["component"] for p in CORPUS} >= {
        "CanaryRoute", "MirrorRoute", "InferencePool", "InferenceService", "Gateway", "GpuNodePool"}


@pytest.mark.parametrize("path", CORPUS, ids=[p.stem for p in CORPUS])
def test_invalid_args_fail_with_their_message_before_anything_is_declared(path):
    case, expected = _case(path)
    caught: dict = {}

    def program() -> None:
        try:
            getattr(components, case["component"])(case["name"], case["args"])
        except ComponentArgsError as err:
            caught["error"] = err

    rendered = render_program(program)
    assert str(caught.get("error")) == expected
    assert rendered.resources == []  # not even the component itself


@pytest.mark.parametrize("path", CORPUS, ids=[p.stem for p in CORPUS])
def test_each_file_breaks_one_rule(path):
    case, _ = _case(path)
    assert len(problems(case["component"], case["args"])) == 1


def test_valid_args_pass():
    from tests.components.test_components_package import PLAIN

    assert {c: problems(c, args) for c, args in PLAIN.items()} == {c: [] for c in PLAIN}
    served = {"selector": {"app": "chat"}, "served_models": ["chat", "travel-helper", "travel-helper-v2"],
              "models": {"travel": {"targets": {"travel-helper": 90, "travel-helper-v2": 10}}, "chat": {}}}
    assert problems("InferencePool", served) == []
