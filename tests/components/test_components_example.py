"""examples/byo-cluster composes the components without the stack config; render it under mocks."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from infershift.components.render import render_program
from k8s_schemas import validate

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "byo-cluster" / "__main__.py"


@pytest.fixture(scope="module")
def example():
    module_spec = importlib.util.spec_from_file_location("byo_cluster_example", EXAMPLE)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)  # defines main(); runs nothing outside Pulumi
    return module


def _render(example, **config):
    return render_program(example.main, stack="dev", project="byo-cluster",
                          config={f"byo-cluster:{k}": v for k, v in config.items()})


def test_example_renders_valid_objects(example):
    r = _render(example, canaryWeight="25", context="my-cluster", pickerImage="reg.example/picker:1")
    kinds = sorted({o["kind"] for o in r.objects})
    assert kinds == ["ConfigMap", "Deployment", "HTTPRoute", "InferenceObjective", "InferencePool",
                     "NetworkPolicy", "PodDisruptionBudget", "Role", "RoleBinding", "Service", "ServiceAccount"]
    assert {f"{o['kind']}/{o['metadata']['name']}": validate(o) for o in r.objects if validate(o)} == {}
    rule = r.one("HTTPRoute", "chat")["spec"]["rules"][-1]
    assert [(b["name"], b["weight"]) for b in rule["backendRefs"]] == [("chat-stable", 75), ("chat-canary", 25)]
    assert r.exports == {"route": "chat", "pools": ["chat-stable", "chat-canary"]}
    (provider,) = r.cloud
    assert provider.inputs == {"context": "my-cluster"}
    assert all(res.provider.rsplit("::", 1)[0].endswith("pulumi:providers:kubernetes::cluster")
               for res in r.resources if res.is_kubernetes)


def test_example_simulated_has_no_gpus(example):
    r = _render(example, simulated="true", registry="localhost:5001/infershift")
    built = {res.name: res.inputs for res in r.resources if res.type == "docker-build:index:Image"}
    assert sorted(built) == ["images-picker", "images-sim"]
    assert built["images-sim"]["tags"] == ["localhost:5001/infershift/infershift-sim:0.1.0"] and built["images-sim"]["push"]
    for name in ("chat-stable", "chat-canary"):
        pod = r.one("Deployment", name)["spec"]["template"]["spec"]
        # the Deployment runs the pushed image by digest
        assert pod["containers"][0]["image"].startswith("localhost:5001/infershift/infershift-sim:0.1.0@sha256:")
        assert pod["containers"][0]["command"] == ["python", "-m", "infershift.sim"] and "resources" not in pod["containers"][0]
    rule = r.one("HTTPRoute", "chat")["spec"]["rules"][-1]
    assert [b["weight"] for b in rule["backendRefs"]] == [90, 10]
