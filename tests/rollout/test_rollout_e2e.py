"""Rollouts end to end through the local stack (real Envoy, pickers and simulators): a healthy
canary promoted step by step with zero failed requests across every weight change, a faulty one
(the simulator's injected errors from the second step) rolled back, and a person's edit pausing
a model-split rollout; the stack file records every step."""
from __future__ import annotations

import threading

import yaml

from infershift import spec as stackspec
from infershift.devstack.traffic import Load, chat_body
from infershift.rollout.controller import Controller, LocalApply, status
from infershift.rollout.metrics import MetricsPages
from infershift.rollout.traffic import PinnedSender
from infershift.spec.config_path import set_in_file

CANARY_W = "routes.route.backends.pool-v2"


def _controller(stack, name, **kw) -> Controller:
    pages = MetricsPages({p: [f"http://127.0.0.1:{stack.pools[p].metrics_port}/metrics"] for p in stack.pools})
    return Controller(stack.stack_file, name, pages, LocalApply(stack),
                      send_pinned=PinnedSender(stack.spec, stack.url("http")), poll=0.5, step_timeout=120,
                      log=lambda m: print(m, flush=True), **kw)


def _reset(stack) -> None:
    """Weights back to stable, rollout statuses removed (a person's edit, as in an editor)."""
    doc = yaml.safe_load(stack.stack_file.read_text())
    config = doc["config"]
    config["infershift:routes"]["route"]["backends"] = {"pool-v1": 100, "pool-v2": 0}
    config["infershift:pools"]["pool-v1"]["models"]["helper"]["targets"] = {"helper-v1": 100, "helper-v2": 0}
    config["infershift:routes"]["route"].pop("mirror", None)
    for ro in config["infershift:rollouts"].values():
        ro.pop("status", None)
    stack.stack_file.write_text(yaml.safe_dump(doc, sort_keys=False))
    assert stack.apply().ok


def _values(stack) -> dict:
    return stackspec.config_values(yaml.safe_load(stack.stack_file.read_text()))


def test_a_healthy_canary_is_promoted_without_a_failed_request(rollout_stack):
    _reset(rollout_stack)
    url = rollout_stack.url("http") + "/v1/chat/completions"
    with Load(url, chat_body("mymodel", max_tokens=8), concurrency=4) as load:
        outcome = _controller(rollout_stack, "v2").run()
    tally = load.snapshot()
    assert outcome.phase == "Promoted", outcome.message
    assert tally.total > 200 and tally.failed == 0, (tally.statuses, tally.errors)
    by_pool = tally.by({pod: "pool-v2" if "v2" in pod else "pool-v1" for pod in rollout_stack.pod_service()})
    assert by_pool["pool-v2"] > 0 and by_pool["pool-v1"] > 0
    # the pinned step, then every step, each judged on enough canary responses
    steps = [h.step for h in outcome.history]
    assert sorted(set(steps)) == [-1, 0, 1, 2]
    last = {s: [h for h in outcome.history if h.step == s][-1] for s in (-1, 0, 1, 2)}
    assert all(h.result.verdict == "pass" and h.result.canary_requests >= 30 for h in last.values())
    values = _values(rollout_stack)
    assert values["routes"]["route"]["backends"] == {"pool-v1": 0, "pool-v2": 100}
    st = values["rollouts"]["v2"]["status"]
    assert (st["phase"], st["step"], st["canaryPercent"]) == ("Promoted", 2, 100)
    assert status(rollout_stack.stack_file, "v2")[0]["phase"] == "Promoted"
    # the stack file the controller wrote is what the running stack serves
    assert rollout_stack.spec.routes["route"].backends == {"pool-v1": 0, "pool-v2": 100}


def test_a_faulty_canary_is_rolled_back(rollout_stack):
    _reset(rollout_stack)
    pod = next(p for p, group in rollout_stack.pod_service().items() if group == "v2")
    url = rollout_stack.url("http") + "/v1/chat/completions"
    injected = threading.Event()

    def fault_from_step_two(entry) -> None:
        if entry.step == 1 and not injected.is_set():
            injected.set()
            rollout_stack.set_faults(pod, error_rate=0.6, error_status=500)

    try:
        with Load(url, chat_body("mymodel", max_tokens=8), concurrency=4) as load:
            outcome = _controller(rollout_stack, "v2", on_poll=fault_from_step_two).run()
    finally:
        rollout_stack.set_faults(pod, error_rate=0.0)
    tally = load.snapshot()
    assert injected.is_set()
    assert outcome.phase == "RolledBack", outcome.message
    assert "error rate" in outcome.message
    assert {h.step for h in outcome.history} == {-1, 0, 1}
    values = _values(rollout_stack)
    assert values["routes"]["route"]["backends"] == {"pool-v1": 100, "pool-v2": 0}
    st = values["rollouts"]["v2"]["status"]
    assert st["phase"] == "RolledBack" and st["step"] == 1 and "error rate" in st["message"]
    # the only failures the clients saw are the injected ones
    assert set(tally.statuses) <= {200, 500}, tally.statuses


def test_a_persons_edit_pauses_a_model_split_rollout(rollout_stack):
    _reset(rollout_stack)
    url = rollout_stack.url("http") + "/v1/chat/completions"
    edited = threading.Event()

    def person_edits(entry) -> None:
        if entry.step == 0 and not edited.is_set():
            edited.set()
            set_in_file(rollout_stack.stack_file, "pools.pool-v1.models.helper.targets.helper-v2", 5)

    with Load(url, chat_body("helper", max_tokens=8), concurrency=4) as load:
        outcome = _controller(rollout_stack, "helper", on_poll=person_edits).run()
    assert outcome.phase == "Paused", outcome.message
    assert "edited" in outcome.message and "helper-v2" not in outcome.message or "canary" in outcome.message
    values = _values(rollout_stack)
    # the person's weight stays; the status says why the controller stopped
    assert values["pools"]["pool-v1"]["models"]["helper"]["targets"]["helper-v2"] == 5
    st = values["rollouts"]["helper"]["status"]
    assert st["phase"] == "Paused" and "edited" in st["message"]
    assert load.snapshot().failed == 0


def _shadow_controller(stack, name, **kw) -> Controller:
    from infershift.rollout.shadow_gate import LogFiles

    return _controller(stack, name, answers=LogFiles([stack.picker_log("pool-v1"), stack.picker_log("pool-v2")]),
                       **kw)


def _mirror(stack) -> dict | None:
    return _values(stack)["routes"]["route"].get("mirror")


def test_the_shadow_phase_compares_answers_before_any_weight_then_promotes(rollout_stack, tmp_path):
    _reset(rollout_stack)
    url = rollout_stack.url("http") + "/v1/chat/completions"
    seen: list[dict | None] = []

    def during(entry) -> None:  # polls of the weighted steps: the mirror is off again by then
        seen.append(_mirror(rollout_stack))

    with Load(url, chat_body("mymodel", max_tokens=8), concurrency=4) as load:
        outcome = _shadow_controller(rollout_stack, "v2-shadow", on_poll=during).run()
    assert outcome.phase == "Promoted", outcome.message
    shadow = outcome.shadow
    assert shadow is not None and shadow.verdict == "pass", shadow and shadow.reason
    total = shadow.total
    # the canary answered copies of the stable pool's requests; the simulators answer alike
    assert total.compared >= 40 and total.exact_match == 1.0 and total.overlap == 1.0
    assert total.shadow_errors == 0
    assert seen and all(m is not None and m["percent"] == 0 for m in seen), seen[:3]
    assert _mirror(rollout_stack) == {"percent": 0, "kind": "InferencePool", "name": "pool-v2"}
    assert load.snapshot().failed == 0
    # the report leads with the shadow phase: its limits by config name, the verdict, the table
    from infershift.rollout import report

    ro = rollout_stack.spec.rollouts["v2-shadow"]
    md = report.write(tmp_path, "v2-shadow", ro, outcome, {}, "the pickers' /metrics").read_text()
    assert "## Shadow phase" in md and "minExactMatch 0.9" in md and "**Verdict:** pass" in md
    assert f"| mymodel | {total.pairs} | {total.compared} | 0 / 0 |" in md


def test_a_canary_failing_in_the_shadow_is_rolled_back_before_any_weight(rollout_stack):
    _reset(rollout_stack)
    pod = next(p for p, group in rollout_stack.pod_service().items() if group == "v2")
    url = rollout_stack.url("http") + "/v1/chat/completions"
    rollout_stack.set_faults(pod, error_rate=0.3, error_status=500)
    try:
        with Load(url, chat_body("mymodel", max_tokens=8), concurrency=4) as load:
            outcome = _shadow_controller(rollout_stack, "v2-shadow").run()
    finally:
        rollout_stack.set_faults(pod, error_rate=0.0)
    assert outcome.phase == "RolledBack", outcome.message
    assert "error rate delta" in outcome.message
    assert outcome.history == []  # no weighted step ran
    values = _values(rollout_stack)
    assert values["routes"]["route"]["backends"] == {"pool-v1": 100, "pool-v2": 0}
    assert values["routes"]["route"]["mirror"]["percent"] == 0
    st = values["rollouts"]["v2-shadow"]["status"]
    assert st["phase"] == "RolledBack" and st["step"] == -1 and "shadow phase" in st["message"]
    # clients only ever saw the stable pool's answers: the canary's errors never reached them
    tally = load.snapshot()
    assert tally.total > 40 and tally.failed == 0, tally.statuses
