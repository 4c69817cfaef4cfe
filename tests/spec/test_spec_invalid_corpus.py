"""The invalid-config corpus: each stack file in invalid/ breaks one rule, and loading it
fails with the config path and message its `# expect:` line gives."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from infershift import spec
HERE = Path(__file__).resolve().parent
CORPUS = sorted((HERE / "invalid").glob("Pulumi.*.yaml"))


def _expected(path: Path) -> str:
    m = re.search(r"^# expect: (.+)$", path.read_text(), re.MULTILINE)
    assert m, f"{path.name} has no '# expect:' line"
    return m.group(1).strip()


def test_corpus_is_large_enough():
    assert len(CORPUS) >= 20


def test_corpus_base_is_valid():
    # Every corpus file is this base with one thing broken; the base itself must pass.
    spec.load_file(HERE / "Pulumi.valid-base.yaml")


@pytest.mark.parametrize("path", CORPUS, ids=[p.name[len("Pulumi."):-len(".yaml")] for p in CORPUS])
def test_invalid_config_fails_with_its_message(path):
    with pytest.raises(spec.StackConfigError) as info:
        spec.load_file(path)
    messages = [str(p) for p in info.value.problems]
    expected = _expected(path)
    assert any(m.startswith(expected) or expected in m for m in messages), messages
    assert all(m.startswith("infershift:") for m in messages)
    assert expected in str(info.value)
