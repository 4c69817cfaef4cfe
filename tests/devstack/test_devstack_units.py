"""Small pure parts: what a live edit may change, simulator flags, port planning."""
from __future__ import annotations

import copy
import socket

import pytest
import yaml

from infershift import spec
from infershift.devstack import dataplane, manifests, sims, translate
from infershift.devstack.ports import PortError, PortPlan


def gateway_of(values: dict) -> "object":
    from infershift.components.render import render_values

    objects = sorted(render_values(values).objects, key=manifests.apply_order)
    return translate.translate(objects)


def edited(values: dict, **changes) -> dict:
    values = copy.deepcopy(values)
    for path, value in changes.items():
        node = values
        *parents, last = path.split("__")
        for p in parents:
            node = node[p]
        node[last] = value
    return values


def test_live_edits_allowed_and_refused():
    values = spec.config_values(yaml.safe_load(spec.stack_path("local").read_text()))
    base = gateway_of(values)
    routes = copy.deepcopy(values["routes"])
    routes["inference-route"]["backends"] = {"mymodel-pool-v1": 50, "mymodel-pool-v2": 50}
    assert dataplane.restart_needed(base, gateway_of(edited(values, routes=routes))) == []
    assert dataplane.restart_needed(base, gateway_of(edited(values, gateway__requestTimeout="10s"))) == []
    lora = edited(values, **{"pools__mymodel-pool-v1__models__travelhelper__targets": {"travel-helper-v2": 100}})
    assert dataplane.restart_needed(base, gateway_of(lora)) == []
    assert dataplane.restart_needed(base, gateway_of(edited(values, services__qwen__replicas=3))) == ["servers.qwen"]
    changed = dataplane.restart_needed(base, gateway_of(edited(values, **{"pools__llama2-pool__failureMode": "FailOpen"})))
    assert changed == ["pools.llama2-pool"]


def test_sim_flags_follow_the_deployment():
    gw = gateway_of(spec.config_values(yaml.safe_load(spec.stack_path("ack-reasoning").read_text())))
    argv = sims.sim_argv("python", gw.server("qwq-32b"), profile="a10-32b", port=9000, time_scale=10, seed=1)
    flags = dict(zip(argv[3::2], argv[4::2]))
    assert flags["--profile"] == "a10-32b"
    assert flags["--servers"] == "5" and flags["--tensor-parallel-size"] == "4"
    assert flags["--served-model-name"] == "qwq-32b" and flags["--pod-name"] == "qwq-32b"
    assert sims.profile_for(gw.server("qwq-32b").server) == "a10-32b"
    local = gateway_of(spec.config_values(yaml.safe_load(spec.stack_path("local").read_text())))
    lora = sims.sim_argv("python", local.server("llama2"), profile="a10-7b", port=1, time_scale=1, seed=0)
    assert lora[lora.index("--lora-modules") + 1].startswith("sql-lora=")
    assert lora[lora.index("--max-cpu-loras") + 1] == "12"


def test_port_plan_names_every_bad_port():
    with socket.socket() as a, socket.socket() as b:
        for s in (a, b):
            s.bind(("127.0.0.1", 0))
            s.listen()
        web, api = a.getsockname()[1], b.getsockname()[1]
        plan = PortPlan()
        plan.claim(web, "gateway listener web")
        plan.claim(api, "gateway listener api")
        plan.fresh("Envoy admin")
        with pytest.raises(PortError) as err:
            plan.check("Use --port-offset N.")
    text = str(err.value)
    assert "gateway listener web) is already in use" in text and "gateway listener api)" in text
    assert "Envoy admin" not in text and text.endswith("Use --port-offset N.")
    with pytest.raises(PortError, match="wanted by both"):
        plan.claim(web, "pool x")


def test_consecutive_ports_for_replicas():
    plan = PortPlan()
    base = plan.fresh_run(3, "simulator of service s")
    assert [plan.wanted[base + i] for i in range(3)] == [f"simulator of service s (replica {i})" for i in range(3)]
    plan.check()


def test_a_manifest_key_given_twice_is_refused_as_kubectl_does(tmp_path):
    path = tmp_path / "route.yaml"
    path.write_text("apiVersion: v1\nkind: Service\nmetadata:\n  name: a\n  name: b\nspec: {}\n")
    with pytest.raises(manifests.ManifestError, match=r"key 'name' is given twice \(lines 4 and 5\)"):
        manifests.load([path])
    # YAML merge keys override legitimately
    path.write_text("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\ndata:\n  base: &b {x: '1', y: '2'}\n"
                    "  over:\n    <<: *b\n    x: '3'\n")
    (obj,) = manifests.load([path]).items
    assert obj["data"]["over"] == {"x": "3", "y": "2"}
