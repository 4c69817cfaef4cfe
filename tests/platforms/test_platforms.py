"""Platforms are plug-ins: the spec, the checks, the program and the render's mocks ask the
registered plug-in; an unknown platform is an error everywhere; a platform's cloud SDK loads only
when that platform is used."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import TypeAdapter

from infershift import platforms, spec
from infershift.components.render import render_program
from infershift.spec.model import NodePool, Platform

REPO = Path(__file__).resolve().parents[2]
SDKS = {"ack": "pulumi_alicloud", "gke": "pulumi_gcp"}


def test_the_union_and_the_node_pool_blocks_come_from_the_registry():
    assert set(platforms.REGISTRY) == {"ack", "gke", "kubeconfig"}
    for kind, plugin in platforms.REGISTRY.items():
        assert plugin.kind == kind
        parsed = TypeAdapter(Platform).validate_python(
            {"kind": kind, **({kind: _cluster(kind)} if kind != "kubeconfig" else {})})
        assert type(parsed) is plugin.spec
        # a node-pool block exists exactly for the platforms that create node pools
        assert (kind in NodePool.model_fields) == (plugin.node_pool_block is not None)


def _cluster(kind: str) -> dict:
    return {"ack": {"clusterId": "c1", "region": "cn-hangzhou"},
            "gke": {"project": "p", "location": "us-central1", "cluster": "c"}}[kind]


def test_get_names_the_known_platforms():
    with pytest.raises(ValueError, match=r"unknown platform 'aws' \(platforms: ack, gke, kubeconfig\)"):
        platforms.get("aws")


@pytest.mark.parametrize("component,args", [
    ("Cluster", {"platform": "aws"}),
    ("GpuNodePool", {"platform": "aws", "cluster": "c", "gpu_type": "t4", "gpus_per_node": 1, "min_nodes": 0,
                     "max_nodes": 1}),
])
def test_an_unknown_platform_never_falls_into_another_platforms_branch(component, args):
    from infershift import components

    def program():
        getattr(components, component)("x", args)

    with pytest.raises(Exception, match="unknown platform 'aws'"):
        render_program(program)


def test_a_platform_without_node_pools_refuses_to_declare_one():
    from infershift import components

    def program():
        components.GpuNodePool("x", {"platform": "kubeconfig", "cluster": "c", "gpu_type": "t4",
                                     "gpus_per_node": 1, "min_nodes": 0, "max_nodes": 1})

    with pytest.raises(Exception, match="platform 'kubeconfig' creates no node pools"):
        render_program(program)


@pytest.mark.parametrize("stack,kind", [("local", "kubeconfig"), ("ack-canary", "ack"),
                                        ("gke-node-rollout", "gke")])
def test_a_render_loads_only_its_own_platforms_sdk(stack, kind):
    """Validating and rendering a stack never imports another platform's cloud SDK."""
    code = (
        "import json, sys\n"
        "from infershift.components.render import render_stack\n"
        f"r = render_stack({stack!r})\n"
        "print(json.dumps({'n': len(r.resources), 'mods': sorted(m for m in sys.modules if m in "
        f"{sorted(SDKS.values())!r})}}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["n"] > 0
    assert result["mods"] == ([SDKS[kind]] if kind in SDKS else [])


def test_validation_imports_no_cloud_sdk_and_no_pulumi():
    code = ("import sys\nfrom infershift import spec\nspec.load_stack('ack-canary'); spec.load_stack('gke-node-rollout')\n"
            "print(sorted(m for m in ('pulumi', 'pulumi_alicloud', 'pulumi_gcp', 'pulumi_kubernetes') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip() == "[]"


def test_importing_the_plugins_first_works():
    # platforms build on spec.base while spec.model builds on platforms: either entry point must work
    for first in ("infershift.platforms", "infershift.spec.model", "infershift.spec", "infershift.platforms.gke"):
        out = subprocess.run([sys.executable, "-c", f"import {first}\nfrom infershift import spec\n"
                              "print(spec.load_stack('local').platform.kind)"],
                             cwd=REPO, capture_output=True, text=True, timeout=120)
        assert out.returncode == 0 and out.stdout.strip() == "kubeconfig", (first, out.stderr[-2000:])


@pytest.mark.parametrize("kind,expected", [
    ("ack", {"gateway_class": "inference-gateway", "envoy_gateway": True, "pool_policies": False}),
    ("gke", {"gateway_class": "gke-l7-regional-external-managed", "envoy_gateway": False, "pool_policies": True}),
])
def test_gateway_defaults_come_from_the_plugin(kind, expected):
    stack = {"ack": "ack-canary", "gke": "gke-node-rollout"}[kind]
    s = spec.load_stack(stack)
    assert s.platform_plugin is platforms.REGISTRY[kind]
    assert s.class_name() == (s.gateway.class_name or expected["gateway_class"])
    assert s.uses_envoy_gateway() is expected["envoy_gateway"]
    assert s.platform_plugin.pool_policies is expected["pool_policies"]


def test_every_invoke_the_components_make_has_one_platforms_mock():
    tokens = {"alicloud:cs/getClusterCredential:getClusterCredential": "ack", "gcp:container/getCluster:getCluster": "gke"}
    for token, owner in tokens.items():
        answers = {k: p.mock_call(token, {}) for k, p in platforms.REGISTRY.items()}
        assert [k for k, a in answers.items() if a is not None] == [owner]
