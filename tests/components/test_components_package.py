"""The component package: Pulumi's analyzer accepts every component, the checked-in schema is
what it generates, the provider's own input mapping (what another language's SDK sends) renders
the same objects as Python's plain args, and Outputs where the schema takes Inputs work."""
import json
import runpy
from pathlib import Path

import pulumi
import pytest
import yaml
from pulumi.provider.experimental.analyzer import Analyzer
from pulumi.provider.experimental.component import ComponentProvider

from infershift.components import package
from infershift.components.enums import PoolApiVersion
from infershift.components.render import render_program

PACKAGE_DIR = Path(package.__file__).parent


@pytest.mark.parametrize("component", package.components(), ids=lambda c: c.__name__)
def test_the_analyzer_accepts_each_component(component):
    result = Analyzer(package.NAME).analyze([component])
    assert component.__name__ in result["component_definitions"]


def test_the_checked_in_schema_is_what_the_analyzer_generates():
    # Regenerate: .venv/bin/python -m infershift.components.package schema > infershift/components/package/schema.json
    assert package.SCHEMA_PATH.read_text() == package.schema_text()


def test_the_schema_covers_every_component_with_typed_inputs_and_outputs():
    schema = json.loads(package.SCHEMA_PATH.read_text())
    resources = schema["resources"]
    assert sorted(resources) == sorted(f"infershift:index:{c.__name__}" for c in package.components())
    pool = resources["infershift:index:InferencePool"]
    assert pool["inputProperties"]["apiVersion"]["$ref"] == "#/types/infershift:index:PoolApiVersion"
    selector = pool["inputProperties"]["selector"]  # an Input: another resource's labels may be passed
    assert (selector["type"], selector["additionalProperties"]["type"], "plain" in selector) == ("object", "string", False)
    assert pool["inputProperties"]["targetPorts"]["plain"] is True
    assert pool["inputProperties"]["models"]["additionalProperties"]["$ref"] == "#/types/infershift:index:ModelRoutingArgs"
    assert set(pool["properties"]) == {"poolName", "apiVersion", "group", "pickerService"}
    assert resources["infershift:index:Gateway"]["properties"]["address"]["type"] == "string"
    assert resources["infershift:index:Cluster"]["properties"]["k8sProvider"]["$ref"].endswith(
        "#/resources/pulumi:providers:kubernetes")
    assert [e["value"] for e in schema["types"]["infershift:index:Criticality"]["enum"]] == [
        "Critical", "Standard", "Sheddable"]


def test_the_plugin_folder_runs_the_component_provider(monkeypatch):
    plugin = yaml.safe_load((PACKAGE_DIR / "PulumiPlugin.yaml").read_text())
    assert plugin["runtime"]["name"] == "python"
    hosted = {}
    import pulumi.provider.experimental as experimental

    monkeypatch.setattr(experimental, "component_provider_host",
                        lambda components, name, **kw: hosted.update(components=components, name=name, **kw))
    runpy.run_path(str(PACKAGE_DIR / "__main__.py"), run_name="__main__")
    assert hosted == {"components": package.components(), "name": "infershift", "version": package.VERSION}
    # The repository's own entry point stays the stack program.
    assert "program" in (PACKAGE_DIR.parents[2] / "__main__.py").read_text()


def test_the_provider_serves_the_checked_in_schema():
    provider = ComponentProvider(package.components(), package.NAME, version=package.VERSION)
    served = json.loads(provider.schema or "")  # what GetSchema answers
    assert served == json.loads(package.SCHEMA_PATH.read_text())


PLAIN = {  # how a Python program passes the args
    "InferenceService": {"model": "Qwen/Qwen3-8B", "served_model_name": "chat", "namespace": "llm", "replicas": 2,
                         "port": 8000, "max_model_len": 8192, "labels": {"app": "chat", "track": "canary"},
                         "node_selector": {"infershift.io/node-pool": "a10"}, "gpu_memory_utilization": 0.9,
                         "lora_modules": {"travel-helper": "/adapters/t"}, "max_loras": 2,
                         "secret_env": {"HF_TOKEN": {"secret": "hf", "key": "token"}}},
    "InferencePool": {"selector": {"app": "chat", "track": "canary"}, "namespace": "llm", "api_version": "v1alpha2",
                      "target_ports": [8000], "failure_mode": "FailOpen", "picker_image": "reg/picker:1",
                      "models": {"chat": {"targets": {"qwen3": 90, "qwen3-lora": 10}, "criticality": "Critical"}},
                      "gateway_peers": [{"ipBlock": {"cidr": "10.0.0.0/8"}}], "gke_policies": True},
    "Gateway": {"class_name": "eg", "namespace": "llm", "listeners": [{"name": "http", "port": 80}],
                "create_class": True, "service_type": "ClusterIP", "buffer_limit": "20Mi", "await_timeout_seconds": 600},
    "CanaryRoute": {"gateway": "gw", "namespace": "llm", "backends": {"stable": 90, "canary": 10},
                    "pool_versions": {"stable": "v1alpha2"}, "paths": ["/v1/chat/completions"],
                    "pins": [{"header": "x-canary", "value": "true", "backend": "canary"}], "await_timeout_seconds": 60},
    "MirrorRoute": {"gateway": "gw", "namespace": "llm", "backend": "stable", "percent": 25,
                    "mirror_to": {"name": "candidate", "kind": "Service", "port": 8000}},
}


def _camel(key: str) -> str:
    head, *rest = key.split("_")
    return head + "".join(p.title() for p in rest)


def _wire(value, top=True):
    """The args as another language's SDK sends them: camelCase names, every number a float."""
    if isinstance(value, dict):
        return {(_camel(k) if top else k): _wire(v, top=False) for k, v in value.items()}
    if isinstance(value, list):
        return [_wire(v, top=False) for v in value]
    if isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def _render(component: str, args, outputs: tuple[str, ...] = ()) -> list[dict]:
    """The objects `component` declares; the args named in `outputs` passed as Outputs (made
    inside the render, under its event loop)."""
    from infershift import components

    def program() -> None:
        given = {k: pulumi.Output.from_input(v) if k in outputs else v for k, v in args.items()}
        getattr(components, component)("c", given)

    return sorted(render_program(program).objects, key=lambda o: (o["kind"], o["metadata"]["name"]))


@pytest.mark.parametrize("component", sorted(PLAIN))
def test_another_languages_args_render_the_same_objects(component):
    provider = ComponentProvider(package.components(), package.NAME, version=package.VERSION)
    definition = provider._component_defs[component]
    wire = _wire(PLAIN[component])  # (the nested arg types' property names are one word each)
    mapped = provider.map_inputs(wire, definition)
    if component == "InferencePool":  # what the component is given: enum members, numbers as floats
        assert mapped["api_version"] is PoolApiVersion.V1ALPHA2 and mapped["target_ports"] == [8000.0]
        assert isinstance(mapped["models"]["chat"]["targets"]["qwen3"], float)
    assert _render(component, mapped) == _render(component, PLAIN[component])


@pytest.mark.parametrize("component", sorted(PLAIN))
def test_outputs_where_the_schema_takes_inputs_render_the_same_objects(component):
    inputs = ("namespace", "selector", "node_selector", "picker_image", "gateway")
    assert _render(component, PLAIN[component], outputs=inputs) == _render(component, PLAIN[component])


def test_the_package_version_is_the_distributions_and_has_a_changelog_entry():
    import tomllib

    pyproject = tomllib.loads((PACKAGE_DIR.parents[2] / "pyproject.toml").read_text())
    assert package.VERSION == pyproject["project"]["version"]
    assert json.loads(package.SCHEMA_PATH.read_text())["version"] == package.VERSION
    assert f"## {package.VERSION}\n" in (PACKAGE_DIR / "CHANGELOG.md").read_text()
