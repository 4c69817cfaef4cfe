"""The shadow phase through a Service (`shadowFirst.via: service`, the default on ACK and GKE,
whose gateways mirror to Services only): the route's requests are mirrored to the canary pool's
Service through a shadow recorder, whose answer lines are paired with the stable pool's picker's.
End to end on the local stack (real Envoy, pickers, simulators, the rendered recorder); the route's
mirror is declared at 0 % in the stack file, so the recorder runs from the start (a new recorder
is a restart of the local stack, and in a cluster a Deployment pulumi up waits for)."""
from __future__ import annotations

import shutil

import pytest
import yaml

from infershift import spec as stackspec
from infershift.devstack.stack import Options, run
from infershift.devstack.traffic import Load, chat_body
from infershift.rollout.controller import Controller, LocalApply
from infershift.rollout.metrics import MetricsPages
from infershift.rollout.shadow_gate import LogFiles
from infershift.spec.checks import shadow_target

from conftest import FAST, TESTDATA

ROLLOUT = {"route": "route", "stable": "pool-v1", "canary": "pool-v2",
           "shadowFirst": {"via": "service", "minPairs": 30, "minExactMatch": 0.9, "maxErrorRateDelta": 0.02,
                           "maxUnpairedShare": 0.1},
           "steps": [50, 100], "dwell": "1s", "minRequests": 20, "gates": {"errorRate": {"tolerance": 0.05}}}


@pytest.fixture(scope="module")
def service_stack(tmp_path_factory):
    directory = tmp_path_factory.mktemp("rollout-shadow-service")
    file = directory / "Pulumi.rollout.yaml"
    shutil.copyfile(TESTDATA / "Pulumi.rollout.yaml", file)
    doc = yaml.safe_load(file.read_text())
    config = doc["config"]
    config["infershift:rollouts"]["v2-svc"] = ROLLOUT
    config["infershift:routes"]["route"]["mirror"] = {"kind": "Service", "name": "v2", "record": True, "percent": 0}
    file.write_text(yaml.safe_dump(doc, sort_keys=False))
    with run(file, Options(**FAST, workdir=directory / "work")) as stack:
        yield stack


def test_the_target_is_the_canary_pools_service():
    s = stackspec.load_file(TESTDATA / "Pulumi.rollout.yaml")
    ro = s.rollouts["v2-shadow"]
    assert shadow_target(s, ro) == ("InferencePool", "pool-v2")  # kubeconfig: its gateway mirrors to pools
    svc = ro.model_copy(update={"shadow_first": ro.shadow_first.model_copy(update={"via": "service"})})
    assert shadow_target(s, svc) == ("Service", "v2")


def test_the_shadow_phase_through_a_recorded_service(service_stack):
    stack = service_stack
    assert [p.name for p in stack.recorder_logs()] == ["recorder-v2-recorder.log"]
    pages = MetricsPages({p: [f"http://127.0.0.1:{stack.pools[p].metrics_port}/metrics"] for p in stack.pools})
    answers = LogFiles([stack.picker_log("pool-v1"), *stack.recorder_logs()])
    controller = Controller(stack.stack_file, "v2-svc", pages, LocalApply(stack), answers=answers, poll=0.5,
                            step_timeout=120, log=lambda m: print(m, flush=True))
    url = stack.url("http") + "/v1/chat/completions"
    with Load(url, chat_body("mymodel", max_tokens=8), concurrency=4) as load:
        outcome = controller.run()
    assert outcome.phase == "Promoted", outcome.message
    total = outcome.shadow.total
    assert outcome.shadow.verdict == "pass" and total.compared >= 30 and total.exact_match == 1.0
    assert {p.shadow.pool for p in outcome.shadow.pairing.pairs} == {"v2"}  # the recorder's lines
    values = stackspec.config_values(yaml.safe_load(stack.stack_file.read_text()))
    assert values["routes"]["route"]["mirror"] == {"kind": "Service", "name": "v2", "record": True, "percent": 0}
    assert load.snapshot().failed == 0
