"""The local stack and the render cannot disagree: for every stack, the objects devstack runs
from are byte for byte what `python -m infershift.components.render` writes for a cluster."""
from __future__ import annotations

import subprocess
import sys

import pytest
from devstack_helpers import REPO

from infershift import spec
from infershift.components.render import object_yaml
from infershift.devstack.stack import LocalStack, Options


@pytest.mark.parametrize("name", spec.stack_names())
def test_devstack_runs_exactly_the_rendered_objects(name, tmp_path):
    out = tmp_path / "render"
    subprocess.run([sys.executable, "-m", "infershift.components.render", "--stack", name, "--out", str(out)],
                   check=True, cwd=REPO, capture_output=True, timeout=120)
    rendered = {p.name: p.read_bytes() for p in (out / "k8s").glob("*.yaml")}
    stack = LocalStack(name, Options(workdir=tmp_path / "work"))  # reads and translates; starts nothing
    stack.stop()
    ours = {}
    for obj in stack.objects.items:
        ours[f"{obj['kind'].lower()}-{obj['metadata']['name']}.yaml"] = object_yaml(obj).encode()
    assert sorted(ours) == sorted(rendered)
    for file, data in rendered.items():
        assert ours[file] == data, f"{name}: devstack's {file} differs from the render's"
    # And devstack translated those objects: every pool and Deployment of them is in its IR.
    pools = {o["metadata"]["name"] for o in stack.objects.items if o["kind"] == "InferencePool"}
    assert {p.name for p in stack.gw.pools} == pools
