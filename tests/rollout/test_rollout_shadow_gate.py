"""The shadow phase's gate (rollouts.<name>.shadowFirst) on answer lines in the pickers' format:
which lines count (the stable pool's own answers, the canary's copies, within the phase's
window), no verdict before the minimum pairs, each limit failing a bad canary, per-model judging,
and the two answer sources (appended files, a command run per poll)."""
from __future__ import annotations

import copy
import json
import shlex
import sys
import time
from pathlib import Path

import pytest
import yaml

from infershift import spec
from infershift.rollout import shadow_gate
from infershift.shadow import compare
from infershift.spec import config_values
from infershift.spec.rollouts import ShadowFirst

T0 = 1_800_000_000.0  # 2027-01-15T08:00:00Z
ROLLOUT_STACK = Path(__file__).resolve().parent / "testdata" / "Pulumi.rollout.yaml"


def _ts(at: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(at)) + f".{int(at % 1 * 1000):03d}Z"


def line(rid: str, pool: str, shadow: bool, at: float, *, text: str = "the same answer", status: int = 200,
         ttft: float = 0.1, target: str = "mymodel") -> str:
    return json.dumps({"ts": _ts(at), "level": "info", "logger": "picker.answers", "msg": "answer",
                       "request_id": rid, "pool": pool, "model": "mymodel", "target_model": target,
                       "shadow": shadow, "status": status, "ttft_s": ttft, "e2e_s": ttft + 0.4, "output_tokens": 8,
                       "text": text, "text_sha256": str(hash(text))})


def answers(lines: list[str]) -> list[compare.Answer]:
    return [a for a in (compare.parse_line(x) for x in lines) if a is not None]


def pairs(n: int, start: float = T0 + 10, **shadow_kw) -> list[str]:
    out = []
    for i in range(n):
        at = start + i * 0.1
        out.append(line(f"r{i}", "pool-v1", False, at))
        out.append(line(f"r{i}", "pool-v2", True, at + 0.05, **shadow_kw))
    return out


GATE = ShadowFirst(min_pairs=20, min_exact_match=0.9, min_overlap=0.8, max_error_rate_delta=0.05,
                   max_ttft_delta_p90="200ms", max_unpaired_share=0.1)


def test_alike_answers_pass():
    r = shadow_gate.judge(GATE, answers(pairs(30)), "pool-v1", "pool-v2", T0, T0 + 100)
    assert r.verdict == "pass", r.reason
    assert r.total.compared == 30 and r.total.exact_match == 1.0


def test_no_verdict_before_the_minimum_pairs_even_when_they_differ():
    r = shadow_gate.judge(GATE, answers(pairs(19, text="something else entirely")), "pool-v1", "pool-v2",
                          T0, T0 + 100)
    assert r.verdict == "wait" and "19 of 20 pairs" in r.reason


@pytest.mark.parametrize("kw, failed", [
    ({"text": "a different answer"}, "exact match"),
    ({"text": "nothing alike whatsoever here"}, "overlap"),
    ({"status": 500}, "error rate delta"),
    ({"ttft": 0.5}, "TTFT delta p90"),
])
def test_each_limit_fails_a_bad_canary(kw, failed):
    r = shadow_gate.judge(GATE, answers(pairs(30, **kw)), "pool-v1", "pool-v2", T0, T0 + 100)
    assert r.verdict == "fail" and failed in r.reason, r.reason
    assert failed in " ".join(r.failed[compare.ALL])


def test_lost_copies_fail_the_unpaired_share():
    lines = pairs(30) + [line(f"lost{i}", "pool-v1", False, T0 + 20 + i * 0.1) for i in range(10)]
    r = shadow_gate.judge(GATE, answers(lines), "pool-v1", "pool-v2", T0, T0 + 100)
    assert r.verdict == "fail" and "unpaired share 0.25 > 0.1" in r.reason, r.reason


def test_the_window_drops_requests_from_before_the_mirror_and_still_awaiting_their_copy():
    lines = pairs(30, start=T0 + 10)
    lines += [line(f"early{i}", "pool-v1", False, T0 + i * 0.1) for i in range(20)]  # before the mirror was live
    lines += [line(f"late{i}", "pool-v1", False, T0 + 60 + i * 0.1) for i in range(20)]  # copies not logged yet
    # a copy whose primary was answered before the window is not counted unpaired either
    lines += [line("early0", "pool-v2", True, T0 + 9)]
    r = shadow_gate.judge(GATE, answers(lines), "pool-v1", "pool-v2", since=T0 + 5, until=T0 + 50)
    assert r.verdict == "pass", r.reason
    assert (r.total.pairs, r.total.unpaired_primary, r.total.unpaired_shadow) == (30, 0, 0)
    # without the window, the same lines fail
    assert shadow_gate.judge(GATE, answers(lines), "pool-v1", "pool-v2").verdict == "fail"


def test_other_pools_and_the_canarys_own_answers_are_not_compared():
    lines = pairs(30)
    lines += [line(f"pin{i}", "pool-v2", False, T0 + 30, text="pinned") for i in range(10)]  # pinned: not copies
    lines += [line(f"x{i}", "other-pool", False, T0 + 30) for i in range(10)]
    r = shadow_gate.judge(GATE, answers(lines), "pool-v1", "pool-v2", T0, T0 + 100)
    assert r.verdict == "pass" and r.total.pairs == 30 and r.total.unpaired_primary == 0


def test_gate_on_models_judges_each_target():
    lines = pairs(30)
    lines += [line(f"s{i}", "pool-v1", False, T0 + 10 + i * 0.1, target="adapter") for i in range(30)]
    lines += [line(f"s{i}", "pool-v2", True, T0 + 10.05 + i * 0.1, target="adapter", text="other words")
              for i in range(30)]
    by_model = GATE.model_copy(update={"gate_on": "models", "min_overlap": None})
    r = shadow_gate.judge(by_model, answers(lines), "pool-v1", "pool-v2", T0, T0 + 100)
    assert r.verdict == "fail" and list(r.failed) == ["adapter"], r.reason
    # on the totals, half alike is below 0.9 too, but says nothing about which model
    r_all = shadow_gate.judge(GATE.model_copy(update={"min_overlap": None}), answers(lines), "pool-v1", "pool-v2",
                              T0, T0 + 100)
    assert r_all.verdict == "fail" and list(r_all.failed) == [compare.ALL]


def test_log_files_count_only_what_is_appended_after_start(tmp_path):
    f = tmp_path / "picker.log"
    f.write_text("\n".join(pairs(5)) + "\n")
    src = shadow_gate.LogFiles([f, tmp_path / "not-yet.log"])
    src.start()
    assert src.answers() == []
    with open(f, "a") as out:
        out.write("\n".join(pairs(3, start=T0 + 50)) + "\n")
        out.write(line("half", "pool-v1", False, T0 + 60)[:40])  # a line still being written
    got = src.answers()
    assert len(got) == 6 and all(a.request_id != "half" for a in got)


def test_a_log_command_runs_per_poll_with_since(tmp_path):
    f = tmp_path / "lines.jsonl"
    f.write_text("\n".join(pairs(4)) + "\n")
    seen = tmp_path / "since.txt"
    script = f"import sys; open({str(seen)!r}, 'w').write(sys.argv[1]); sys.stdout.write(open({str(f)!r}).read())"
    src = shadow_gate.LogCommand(f"{shlex.quote(sys.executable)} -c {shlex.quote(script)} {{since}}")
    src.start()
    # the lines are from 2027, after start(): all kept; the command got the start in RFC 3339
    assert len(src.answers()) == 8
    assert seen.read_text().endswith("Z") and seen.read_text()[:4].isdigit()
    failing = shadow_gate.LogCommand(f"{shlex.quote(sys.executable)} -c 'import sys; sys.exit(3)'")
    failing.start()
    with pytest.raises(RuntimeError, match="exited 3"):
        failing.answers()


def _values(**change) -> dict:
    values = copy.deepcopy(config_values(yaml.safe_load(ROLLOUT_STACK.read_text())))
    for path, value in change.items():
        node = values
        *parents, last = path.split(".")
        for p in parents:
            node = node[p]
        if value is None:
            node.pop(last)
        else:
            node[last] = value
    return values


@pytest.mark.parametrize("change, expected", [
    ({"rollouts.v2-shadow.shadowFirst": {"minPairs": 10}},
     "infershift:rollouts.v2-shadow.shadowFirst: give at least one limit"),
    ({"rollouts.v2-shadow.shadowFirst": {"minExactMatch": 2}},
     "infershift:rollouts.v2-shadow.shadowFirst.minExactMatch: "),
    ({"rollouts.v2-shadow.shadowFirst": {"maxTtftDeltaP90": "soon"}},
     "infershift:rollouts.v2-shadow.shadowFirst.maxTtftDeltaP90: 'soon' is not a Gateway API duration"),
    ({"pools.pool-v2.picker": None},
     "infershift:rollouts.v2-shadow.shadowFirst: the shadow gate pairs the pickers' answer lines: set "
     "pools.pool-v2.picker.answerLog: true"),
    ({"rollouts.helper.shadowFirst": {"minOverlap": 0.5}},
     "infershift:rollouts.helper: shadowFirst needs a route rollout"),
    ({"routes.route.mirror": {"kind": "Service", "name": "v1"}},
     "infershift:routes.route.mirror: the route already mirrors to Service 'v1'"),
    ({"routes.route.mirror": {"kind": "InferencePool", "name": "pool-v1"}},
     "infershift:routes.route.mirror.name: pool 'pool-v1' has weight 100 on this route"),
    ({"routes.route.mirror": {"kind": "InferencePool", "name": "nope"}},
     "infershift:routes.route.mirror.name: no pool named 'nope'"),
])
def test_config_errors_name_the_path(change, expected):
    with pytest.raises(spec.StackConfigError) as info:
        spec.validate(_values(**change))
    found = [str(p) for p in info.value.problems]
    assert any(m.startswith(expected) for m in found), found


ACK = {"kind": "ack", "ack": {"clusterId": "c1", "region": "cn-hangzhou", "selfHostEpp": True}}


def test_on_a_gateway_that_mirrors_to_services_only_the_shadow_goes_to_the_canarys_service():
    from infershift.spec.checks import shadow_target

    s = spec.validate(_values(platform=ACK))  # ACK: no mirror to a pool; the canary's Service instead
    assert shadow_target(s, s.rollouts["v2-shadow"]) == ("Service", "v2")
    # and the pool itself is refused there
    values = _values(platform=ACK)
    values["rollouts"]["v2-shadow"]["shadowFirst"]["via"] = "pool"
    with pytest.raises(spec.StackConfigError) as info:
        spec.validate(values)
    assert any(str(p).startswith("infershift:rollouts.v2-shadow.shadowFirst.via: the ACK gateway cannot mirror to "
                                 "an InferencePool") for p in info.value.problems), info.value.problems


def test_the_service_way_needs_one_service_behind_the_canary():
    values = _values(platform=ACK)
    values["services"]["v2b"] = {**values["services"]["v2"]}  # a second Service the canary pool selects
    with pytest.raises(spec.StackConfigError) as info:
        spec.validate(values)
    assert any("pool 'pool-v2' selects 2 (v2, v2b); it needs exactly one" in str(p)
               for p in info.value.problems), info.value.problems


def test_a_route_mirror_renders_a_request_mirror_on_the_weighted_rule_only():
    from infershift.components.program import route_args
    from infershift.components.routes import canary_manifest

    s = spec.validate(_values(**{"routes.route.mirror": {"kind": "InferencePool", "name": "pool-v2", "percent": 25}}))
    rules = canary_manifest("route", route_args(s, "route"))["spec"]["rules"]
    pinned, weighted = rules
    assert "filters" not in pinned
    assert weighted["filters"] == [{"type": "RequestMirror", "requestMirror": {
        "backendRef": {"group": "inference.networking.k8s.io", "kind": "InferencePool", "name": "pool-v2"},
        "percent": 25}}]
    off = spec.validate(_values(**{"routes.route.mirror": {"kind": "InferencePool", "name": "pool-v2", "percent": 0}}))
    assert all("filters" not in r for r in canary_manifest("route", route_args(off, "route"))["spec"]["rules"])
