"""What the render hands to the project's own programs is accepted by them: the picker parses
its ConfigMap, the simulator parses its container args."""
from __future__ import annotations

import pytest
import yaml

from infershift import spec
from infershift.picker.config import parse_config
from infershift.sim.cli import parse_args as sim_args

STACKS = spec.stack_names()


@pytest.mark.parametrize("stack", STACKS)
def test_picker_accepts_its_configmap(renders, stack):
    r = renders(stack)
    for pool in spec.load_stack(stack).pools:
        raw = yaml.safe_load(r.one("ConfigMap", f"{pool}-epp")["data"]["config.yaml"])
        config = parse_config(raw)
        assert config.pool_name == pool and config.pool_namespace == "default"
        assert config.kubernetes["poolApiVersion"] == r.one("InferencePool", pool)["apiVersion"]


def test_simulator_accepts_the_rendered_args(renders):
    s = spec.load_stack("local")
    r = renders("local")
    for name, svc in s.services.items():
        c = r.one("Deployment", name)["spec"]["template"]["spec"]["containers"][0]
        ns = sim_args(c["args"])
        assert ns.model == svc.model and ns.served_model_name == [svc.served_name]
        assert [a.name for a in ns.adapters] == svc.adapters
        assert (ns.host, ns.port, ns.profile) == ("0.0.0.0", svc.port, svc.sim_profile)
        if svc.lora:  # (the local stack also has servers without adapters)
            assert ns.max_loras == svc.lora.max_loras


@pytest.mark.parametrize("version", ["v1", "v1alpha2"])
def test_picker_accepts_the_components_default_configs(version):
    from infershift.components import endpoint_picker, inference_pool

    picker = {o["kind"]: o for o in endpoint_picker.manifests({"pool_name": "p", "pool_api_version": version,
                                                               "image": "reg.example/picker:1"})}
    assert parse_config(yaml.safe_load(picker["ConfigMap"]["data"]["config.yaml"])).pool_name == "p"
    config = parse_config(inference_pool.default_picker_config("p", {"selector": {"a": "b"}, "api_version": version,
                                                                     "failure_mode": "FailOpen"}))
    assert config.kubernetes["poolApiVersion"].endswith(version)
