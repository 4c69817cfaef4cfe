"""examples/ts-ack-canary runs (under node, with stand-ins for the SDKs that `pulumi package add`
would generate) and every argument it passes to an infershift component is in the schema with the
right type (the same checks as the YAML example's); the outputs it reads exist. Compiling it
against the generated SDK needs the Pulumi CLI (`pulumi package add`) and npm."""
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.components.test_components_yaml_example import Checker, _load

HERE = Path(__file__).resolve().parent
EXAMPLE = HERE.parents[1] / "examples" / "ts-ack-canary" / "index.ts"


def _markers(value):
    """Output markers as the YAML example's `${resource.output}` references."""
    if isinstance(value, dict):
        if set(value) == {"__output"}:
            name, _, access = value["__output"].partition(".")
            head, _, rest = access.partition("[")
            return f"${{{name}.{head}{'[' + rest if rest else ''}}}"
        return {k: _markers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_markers(v) for v in value]
    return value


@pytest.fixture(scope="module")
def run():
    node = shutil.which("node")
    if not node:
        pytest.skip("no node")
    out = subprocess.run([node, str(HERE / "ts_example_stubs.js"), str(EXAMPLE)], capture_output=True, text=True,
                         check=True, timeout=60)
    return json.loads(out.stdout)


def test_every_argument_of_the_ts_example_is_in_the_schema(run):
    _, schema = _load()
    resources = {r["name"]: {"type": r["type"], "properties": _markers(r["args"])} for r in run["components"]}
    resources.update({r["name"]: {"type": r["type"]} for r in run["others"]})
    checker = Checker({"resources": resources}, schema)
    for r in run["components"]:
        spec = schema["resources"][r["type"]]
        checker.object(r["name"], resources[r["name"]]["properties"], spec["inputProperties"],
                       spec.get("requiredInputs", []))
    assert checker.errors == []
    assert {r["type"].rsplit(":", 1)[1] for r in run["components"]} == {
        "GpuNodePool", "Images", "InferenceService", "InferencePool", "Gateway", "CanaryRoute"}
    route = next(r for r in run["components"] if r["type"] == "infershift:index:CanaryRoute")
    assert route["args"]["backends"] == {"mymodel-pool-v1": 90, "mymodel-pool-v2": 10}
    assert route["providers"] == ["k8s"] and route["dependsOn"] == ["mymodel-pool-v1", "mymodel-pool-v2"]


def test_the_outputs_the_ts_example_reads_exist(run):
    _, schema = _load()
    types = {r["name"]: r["type"] for r in run["components"]}
    read = json.dumps(run)
    for name, output in re.findall(r'"__output": "([\w-]+)\.(\w+)', read):
        if name in types:
            assert output in schema["resources"][types[name]]["properties"], f"{name}.{output}"
