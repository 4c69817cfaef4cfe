"""examples/yaml-ack-canary consumes the component package in Pulumi YAML: every infershift
property it sets exists in the checked-in schema with the right type (enum values among the
enum's, plain properties given plain values, Outputs only where the schema takes an Input), every
required input is given, and every infershift output it references exists with a compatible type.
Running it needs the Pulumi CLI (and an ACK cluster); this checks it against the schema without."""
import json
import re
from pathlib import Path

import yaml

from infershift.components import package

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "yaml-ack-canary" / "Pulumi.yaml"
EXPR = re.compile(r"^\$\{([A-Za-z0-9_-]+)((?:\.[A-Za-z0-9_]+|\[\"[^\"]+\"\])*)\}$")
CONFIG_TYPES = {"string": "string", "integer": "integer", "boolean": "boolean", "number": "number"}


def _load():
    return yaml.safe_load(EXAMPLE.read_text()), json.loads(package.SCHEMA_PATH.read_text())


def _type_ref(schema: dict, prop: dict) -> dict:
    ref = prop.get("$ref", "")
    return schema["types"][ref.removeprefix("#/types/")] if ref.startswith("#/types/") else {}


def _describe(schema: dict, prop: dict) -> tuple:
    """A property's shape, to compare an output with an input: (type, item/value shape)."""
    target = _type_ref(schema, prop) or prop
    kind = target.get("type", prop.get("$ref"))
    if kind == "array":
        return (kind, _describe(schema, target["items"]))
    if kind == "object" and "additionalProperties" in target:
        return (kind, _describe(schema, target["additionalProperties"]))
    return (kind,)


class Checker:
    def __init__(self, program: dict, schema: dict):
        self.program, self.schema, self.errors = program, schema, []
        self.resources = program["resources"]
        self.config = program.get("config") or {}

    def _expression(self, path: str, text: str, prop: dict) -> None:
        m = EXPR.match(text)
        if not m:
            self.errors.append(f"{path}: {text!r} is not a reference this test understands")
            return
        name, access = m.group(1), m.group(2)
        if name in self.config and not access:  # config: a plain value of its declared type
            given = CONFIG_TYPES[self.config[name]["type"]]
            if _describe(self.schema, prop) != (given,) and not (given == "integer" and prop.get("type") == "number"):
                self.errors.append(f"{path}: config {name} is a {given}, the property {_describe(self.schema, prop)}")
            return
        if prop.get("plain"):
            self.errors.append(f"{path}: {text} is an Output, but the property is plain")
        resource = self.resources.get(name)
        if resource is None:
            self.errors.append(f"{path}: {name} is no resource or config of the program")
            return
        if not resource["type"].startswith("infershift:"):
            return  # another package's output: its schema is not ours to check
        parts = re.findall(r"\.([A-Za-z0-9_]+)|\[\"([^\"]+)\"\]", access)
        outputs = self.schema["resources"][resource["type"]]["properties"]
        attr = parts[0][0]
        if attr not in outputs:
            self.errors.append(f"{path}: {resource['type']} has no output {attr!r}")
            return
        out = outputs[attr]
        for _, key in parts[1:]:
            out = out.get("additionalProperties") or {}
        if _describe(self.schema, out) != _describe(self.schema, prop):
            self.errors.append(f"{path}: {text} is {_describe(self.schema, out)}, the property "
                               f"{_describe(self.schema, prop)}")

    def value(self, path: str, value, prop: dict) -> None:
        if isinstance(value, str) and value.startswith("${"):
            self._expression(path, value, prop)
            return
        if prop.get("$ref") == "pulumi.json#/Any":
            return
        target = _type_ref(self.schema, prop)
        if "enum" in target:
            allowed = [e["value"] for e in target["enum"]]
            if value not in allowed:
                self.errors.append(f"{path}: {value!r} is not one of {allowed}")
            return
        if target:
            self.object(path, value, target.get("properties", {}), target.get("required", []))
            return
        kind = prop.get("type")
        ok = {"string": isinstance(value, str), "boolean": isinstance(value, bool),
              "integer": isinstance(value, int) and not isinstance(value, bool),
              "number": isinstance(value, int | float) and not isinstance(value, bool),
              "array": isinstance(value, list), "object": isinstance(value, dict)}.get(kind, False)
        if not ok:
            self.errors.append(f"{path}: {value!r} is not a {kind}")
            return
        if kind == "array":
            for i, item in enumerate(value):
                self.value(f"{path}[{i}]", item, prop["items"])
        elif kind == "object" and "additionalProperties" in prop:
            for key, item in value.items():
                self.value(f"{path}.{key}", item, prop["additionalProperties"])

    def object(self, path: str, given: dict, properties: dict, required: list[str]) -> None:
        if not isinstance(given, dict):
            self.errors.append(f"{path}: {given!r} is not an object")
            return
        for key in required:
            if key not in given:
                self.errors.append(f"{path}: the required {key!r} is missing")
        for key, value in given.items():
            if key not in properties:
                self.errors.append(f"{path}.{key}: no such property")
                continue
            self.value(f"{path}.{key}", value, properties[key])


def test_every_infershift_property_the_yaml_example_uses_is_in_the_schema():
    program, schema = _load()
    checker = Checker(program, schema)
    used = set()
    for name, resource in program["resources"].items():
        if not resource["type"].startswith("infershift:"):
            continue
        used.add(resource["type"])
        spec = schema["resources"].get(resource["type"])
        assert spec, f"{name}: {resource['type']} is not in the schema"
        checker.object(name, resource.get("properties") or {}, spec["inputProperties"], spec.get("requiredInputs", []))
        for provider in (resource.get("options") or {}).get("providers", []):
            checker.value(f"{name}.options.providers", provider, {})
    for key, value in program["outputs"].items():
        for i, item in enumerate(value if isinstance(value, list) else [value]):
            m = EXPR.match(item)
            assert m, item
            res = program["resources"][m.group(1)]
            attr = m.group(2).lstrip(".")
            assert attr in schema["resources"][res["type"]]["properties"], f"outputs.{key}[{i}]: {item}"
    assert checker.errors == []
    assert used >= {"infershift:index:GpuNodePool", "infershift:index:Images", "infershift:index:InferenceService",
                    "infershift:index:InferencePool", "infershift:index:Gateway", "infershift:index:CanaryRoute"}


def test_the_checker_catches_what_it_should():
    program, schema = _load()
    broken = json.loads(json.dumps(program))
    pool = broken["resources"]["mymodel-pool-v1"]["properties"]
    pool["apiVersion"] = "v2"                        # not an enum value
    pool["targetPorts"] = "${images.refs}"           # an Output for a plain property
    pool["models"]["mymodel"]["weight"] = 3          # no such property of ModelRoutingArgs
    del broken["resources"]["inference-route"]["properties"]["gateway"]  # required
    broken["resources"]["qwen"]["properties"]["replicas"] = "1"         # a string for an integer
    checker = Checker(broken, schema)
    for name in ("mymodel-pool-v1", "inference-route", "qwen"):
        spec = schema["resources"][broken["resources"][name]["type"]]
        checker.object(name, broken["resources"][name]["properties"], spec["inputProperties"],
                       spec.get("requiredInputs", []))
    text = "\n".join(checker.errors)
    for expected in ("mymodel-pool-v1.apiVersion: 'v2' is not one of", "mymodel-pool-v1.targetPorts: ${images.refs} "
                     "is an Output, but the property is plain", "mymodel-pool-v1.models.mymodel.weight: no such property",
                     "inference-route: the required 'gateway' is missing", "qwen.replicas: '1' is not a integer"):
        assert expected in text, text


def test_the_yaml_example_names_the_package_folder():
    program, _ = _load()
    assert (EXAMPLE.parent / program["packages"]["infershift"] / "PulumiPlugin.yaml").is_file()
