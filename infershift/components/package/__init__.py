"""infershift's components as a Pulumi multi-language component package.

`PulumiPlugin.yaml` (runtime: python) and `__main__.py` (the provider: `component_provider_host`)
live in this folder; `pulumi package add <this folder>` generates an SDK for the consuming
program's language from the schema Pulumi's analyzer infers from the components' annotations.
`schema.json` is that schema, checked in (tests/components/test_components_package.py
regenerates it and compares).
"""
import json
from pathlib import Path
from typing import Any

NAME = "infershift"
VERSION = "0.1.0"
SCHEMA_PATH = Path(__file__).with_name("schema.json")


def components() -> list[type]:
    """Every component the package publishes (imported here: loading this module loads no Pulumi)."""
    from infershift.components import (
        CanaryRoute,
        Cluster,
        EndpointPicker,
        Gateway,
        GpuNodePool,
        Images,
        InferencePool,
        InferenceService,
        MirrorRoute,
        Secrets,
    )

    return [Cluster, GpuNodePool, InferenceService, InferencePool, EndpointPicker, Gateway, CanaryRoute,
            MirrorRoute, Images, Secrets]


def schema() -> dict[str, Any]:
    """The package schema, as Pulumi's analyzer generates it from the components (what the provider serves)."""
    from pulumi.provider.experimental.analyzer import Analyzer
    from pulumi.provider.experimental.schema import generate_schema

    result = Analyzer(NAME).analyze(components())
    deps = sorted(result["dependencies"], key=lambda d: f"{d.name}{d.version}")
    generated = generate_schema(NAME, VERSION, None, result["component_definitions"],
                                result["type_definitions"], deps)
    return generated.to_json()


def schema_text() -> str:
    return json.dumps(schema(), indent=2, sort_keys=True) + "\n"

