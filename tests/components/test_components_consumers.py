"""What the render hands to the project's own programs is accepted by them: the picker parses
its ConfigMap, the simulator parses its container args."""
from __future__ import annotations

import pytest
import yaml

import spec
from picker.config import parse_config
from sim.cli import parse_args as sim_args

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
        assert (ns.host, ns.port, ns.profile, ns.max_loras) == ("0.0.0.0", svc.port, svc.sim_profile, svc.lora.max_loras)
