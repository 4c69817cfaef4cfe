"""`rollouts:` in stack config: what validates, and errors that name the config path."""
from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from infershift import spec
from infershift.spec import config_values

LOCAL = Path(__file__).resolve().parents[2] / "stacks" / "Pulumi.local.yaml"

ROUTE_ROLLOUT = {
    "route": "inference-route", "stable": "mymodel-pool-v1", "canary": "mymodel-pool-v2",
    "steps": [5, 25, 50, 100], "dwell": "30s", "minRequests": 50, "pinFirst": {"requests": 20},
    "gates": {"ttftP90": {"tolerance": 0.2}, "itlP90": {"max": "80ms"}, "e2eP90": {"tolerance": 0.25, "max": "30s"},
              "errorRate": {"tolerance": 0.01}, "shedRate": {"max": 0.05},
              "outputTokensPerSecond": {"tolerance": 0.2}},
    "onFailure": "rollback",
}
MODEL_ROLLOUT = {
    "pool": "mymodel-pool-v1", "model": "travelhelper", "stable": "travel-helper-v1", "canary": "travel-helper-v2",
    "steps": [10, 50, 100], "gates": {"errorRate": {"max": 0.02}}, "onFailure": "pause",
}


def _values(**rollouts) -> dict:
    values = config_values(yaml.safe_load(LOCAL.read_text()))
    values = copy.deepcopy(values)
    values["rollouts"] = rollouts
    return values


def _problems(**rollouts) -> list[str]:
    with pytest.raises(spec.StackConfigError) as info:
        spec.validate(_values(**rollouts))
    return [str(p) for p in info.value.problems]


def test_both_kinds_validate():
    s = spec.validate(_values(**{"v2": ROUTE_ROLLOUT, "lora": MODEL_ROLLOUT}))
    ro = s.rollouts["v2"]
    assert ro.kind == "route" and ro.weight_path(ro.canary) == ["routes", "inference-route", "backends", "mymodel-pool-v2"]
    assert ro.gates.itl_p90.max_seconds == pytest.approx(0.08) and ro.dwell_seconds == 30
    lora = s.rollouts["lora"]
    assert lora.kind == "model" and lora.on_failure == "pause" and lora.min_requests == 100
    assert lora.weight_path(lora.stable) == ["pools", "mymodel-pool-v1", "models", "travelhelper", "targets",
                                          "travel-helper-v1"]


@pytest.mark.parametrize("change, expected", [
    ({"steps": [50, 25]}, "infershift:rollouts.r.steps: steps [50, 25] must increase"),
    ({"steps": [0, 100]}, "infershift:rollouts.r.steps: step 0 is not a canary percent"),
    ({"gates": {}}, "infershift:rollouts.r.gates: give at least one gate"),
    ({"gates": {"ttftP90": {}}}, "infershift:rollouts.r.gates.ttftP90: give tolerance"),
    ({"gates": {"errorRate": {"max": 2}}}, "infershift:rollouts.r.gates.errorRate.max: "),
    ({"gates": {"e2eP90": {"max": "soon"}}}, "infershift:rollouts.r.gates.e2eP90.max: 'soon' is not a Gateway API duration"),
    ({"onFailure": "retry"}, "infershift:rollouts.r.onFailure: "),
    ({"dwel": "1m"}, "infershift:rollouts.r.dwel: unknown key"),
    ({"pool": "mymodel-pool-v1"}, "infershift:rollouts.r: give `route`"),
    ({"canary": "mymodel-pool-v1"}, "infershift:rollouts.r: stable and canary are the same"),
    ({"route": "nope"}, "infershift:rollouts.r.route: no route named 'nope'"),
    ({"canary": "llama2-pool"}, "infershift:rollouts.r.canary: 'llama2-pool' is not one of the backends"),
    ({"route": "reasoning-route", "stable": "reasoning-pool", "canary": "mymodel-pool-v2"},
     "infershift:rollouts.r.canary: 'mymodel-pool-v2' is not one of the backends of route 'reasoning-route'"),
])
def test_route_rollout_errors_name_the_path(change, expected):
    found = _problems(r={**ROUTE_ROLLOUT, **change})
    assert any(m.startswith(expected) for m in found), found


@pytest.mark.parametrize("change, expected", [
    ({"model": None}, "infershift:rollouts.r: a model-split rollout (`pool`) needs `model`"),
    ({"model": "nope"}, "infershift:rollouts.r.model: pool 'mymodel-pool-v1' has no model 'nope'"),
    ({"canary": "travel-helper-v3"}, "infershift:rollouts.r.canary: 'travel-helper-v3' is not one of the targets"),
    ({"pinFirst": {"requests": 5}}, "infershift:rollouts.r: pinFirst needs a route rollout"),
    ({"status": {"phase": "Done"}}, "infershift:rollouts.r.status.phase: "),
])
def test_model_rollout_errors_name_the_path(change, expected):
    body = {k: v for k, v in {**MODEL_ROLLOUT, **change}.items() if v is not None}
    found = _problems(r=body)
    assert any(m.startswith(expected) for m in found), found


def test_other_weighted_sides_and_missing_pin_are_refused():
    values = _values(r={**ROUTE_ROLLOUT})
    values["routes"]["inference-route"]["backends"]["llama2-pool"] = 5
    values["routes"]["inference-route"]["pins"] = []
    with pytest.raises(spec.StackConfigError) as info:
        spec.validate(values)
    found = [str(p) for p in info.value.problems]
    assert any(m.startswith("infershift:rollouts.r: the backends of route 'inference-route' give weight to "
                            "llama2-pool too") for m in found), found
    assert any(m.startswith("infershift:rollouts.r.pinFirst: route 'inference-route' has no pin for the canary")
               for m in found), found


def test_bad_rollout_name():
    assert any(m.startswith("infershift:rollouts: rollout name 'V2' is not a valid Kubernetes name")
               for m in _problems(V2=ROUTE_ROLLOUT))
