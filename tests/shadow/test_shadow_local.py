"""The shadow report end to end on the local stack (real Envoy, pickers, simulators): requests
through the `local` stack's llama2-mirror (100 % of llama2-pool mirrored to llama2-candidate-pool
by Envoy's request_mirror_policies); both pools' pickers log each answer under the request id
Envoy gave it, the shadow's with Envoy's `-shadow` host, and the report pairs every one. Then the
candidate's server slowed and failing: the clients see nothing, the report and its gate do; and a
candidate that writes other answers (another simulator seed) fails the similarity gate."""
from __future__ import annotations

import shutil

import pytest

from infershift import spec as stackspec
from infershift.devstack.stack import Options, run
from infershift.shadow import compare, local

MIRROR = "llama2-mirror"


@pytest.fixture(scope="module")
def mirror_stack(tmp_path_factory):
    directory = tmp_path_factory.mktemp("shadow-stack")
    file = directory / "Pulumi.local.yaml"
    shutil.copyfile(stackspec.stack_path("local"), file)
    with run(file, Options(auto_ports=True, time_scale=50.0, poll_interval="200ms", ready_timeout=90.0,
                                     workdir=directory / "work")) as stack:
        yield stack


def _candidate_pods(stack) -> list[str]:
    return [pod for pod, group in stack.pod_service().items() if group == "llama2-candidate"]


def test_every_mirrored_request_is_paired(mirror_stack):
    assert [p.name for p in mirror_stack.answer_logs()] == ["picker-llama2-candidate-pool.log",
                                                            "picker-llama2-pool.log"]
    whole = local.run(mirror_stack, MIRROR, 30, max_tokens=8)
    streamed = local.run(mirror_stack, MIRROR, 10, stream=True, max_tokens=8)
    for r in (whole, streamed):
        assert r.tally.ok == r.tally.total, r.tally.errors
    answers = whole.answers + streamed.answers
    pairing = compare.pair(answers)
    assert len(pairing.pairs) == 40 and not pairing.primaries and not pairing.shadows and not pairing.duplicates
    for p in pairing.pairs:
        assert (p.primary.pool, p.shadow.pool) == ("llama2-pool", "llama2-candidate-pool")
        assert p.primary.target == p.shadow.target  # mirrored after the primary's picker chose the adapter
        assert p.primary.tokens == p.shadow.tokens == 8
    stats = compare.compare(pairing)
    assert set(stats) - {compare.ALL} <= {"sql-lora", "tweet-summary"}
    total = stats[compare.ALL]
    # the simulator's answer depends on (seed, model, prompt) only: the candidate answers alike
    assert total.exact_match == 1.0 and total.overlap == 1.0 and total.length_ratio == 1.0
    assert total.primary_error_rate == 0 and total.shadow_error_rate == 0
    assert compare.Gate(min_pairs=30, min_exact_match=0.99, max_ttft_delta_p90=0.05).check(total) == []


def test_a_slow_failing_candidate_shows_in_the_report_not_to_clients(mirror_stack):
    pods = _candidate_pods(mirror_stack)
    for pod in pods:
        mirror_stack.set_faults(pod, delay_seconds=0.1)
    try:
        slow = local.run(mirror_stack, MIRROR, 20, max_tokens=4)
    finally:
        for pod in pods:
            mirror_stack.set_faults(pod, delay_seconds=0.0)
    assert slow.tally.ok == 20
    total = compare.compare(compare.pair(slow.answers))[compare.ALL]
    assert total.pairs == 20 and total.ttft_delta(0.5) > 0.08 and total.e2e_delta(0.5) > 0.08
    assert any(f.startswith("TTFT delta p90") for f in compare.Gate(max_ttft_delta_p90=0.05).check(total))

    for pod in pods:
        mirror_stack.set_faults(pod, error_rate=1.0)
    try:
        failing = local.run(mirror_stack, MIRROR, 20, max_tokens=4)
    finally:
        for pod in pods:
            mirror_stack.set_faults(pod, error_rate=0.0)
    assert failing.tally.ok == 20  # the shadow's answers never reach clients
    total = compare.compare(compare.pair(failing.answers))[compare.ALL]
    assert total.pairs == 20 and total.compared == 0
    assert total.primary_error_rate == 0 and total.shadow_error_rate == 1.0
    assert compare.Gate(min_pairs=0, max_error_rate_delta=0.05).check(total) == ["error rate delta 1 > 0.05"]


def test_cli_on_the_local_stack(tmp_path, capsys):
    """`report --stack local`: its own local stack on a copy of the stack file, stopped afterwards."""
    from infershift.shadow.__main__ import main

    out = tmp_path / "shadow"
    assert main(["report", "--stack", "local", "--requests", "20", "--out", str(out),
                 "--min-pairs", "20", "--min-exact-match", "0.99", "--gate-on", "all"]) == 0
    assert "gate passed" in capsys.readouterr().out
    md = (out / "report.md").read_text()
    assert "| (all) | 20 | 0/0 | 0.0%/0.0% |" in md and "| pass |" in md


@pytest.fixture(scope="module")
def recorded_stack(tmp_path_factory):
    """The local stack with llama2-mirror sent to the candidate's **Service** through a recorder
    (`mirrorTo.record`), as an ACK or GKE gateway would mirror: no picker on the shadow side."""
    import yaml

    directory = tmp_path_factory.mktemp("shadow-recorded")
    file = directory / "Pulumi.local.yaml"
    doc = yaml.safe_load(stackspec.stack_path("local").read_text())
    doc["config"]["infershift:mirrors"][MIRROR]["mirrorTo"] = {"kind": "Service", "name": "llama2-candidate",
                                                               "record": True}
    file.write_text(yaml.safe_dump(doc, sort_keys=False))
    with run(file, Options(auto_ports=True, time_scale=50.0, poll_interval="200ms", ready_timeout=90.0,
                                     workdir=directory / "work")) as stack:
        yield stack


def test_a_mirror_to_a_service_is_recorded_and_paired(recorded_stack):
    # the rendered recorder Deployment runs locally in front of the Service; its lines are read
    assert [p.name for p in recorded_stack.answer_logs()] == ["picker-llama2-pool.log",
                                                              "recorder-llama2-candidate-recorder.log"]
    result = local.run(recorded_stack, MIRROR, 30, max_tokens=8)
    assert result.tally.ok == result.tally.total, result.tally.errors
    pairing = compare.pair(result.answers)
    assert len(pairing.pairs) == 30 and not pairing.primaries and not pairing.shadows
    for p in pairing.pairs:
        assert (p.primary.pool, p.shadow.pool) == ("llama2-pool", "llama2-candidate")
        # the copy left the gateway after the primary's picker rewrote the body: the same adapter
        assert p.primary.target == p.shadow.target and p.shadow.tokens == 8
    total = compare.compare(pairing)[compare.ALL]
    assert total.exact_match == 1.0 and total.shadow_error_rate == 0


def test_a_candidate_that_answers_differently_shows_in_the_report(tmp_path):
    """The other candidates here answer alike (the simulator's text depends on its seed, the model
    and the prompt). A candidate started outside the stack with another seed — a model that writes
    other answers, at other lengths — shows as such: exact matches and token overlap drop, the
    length ratio moves off 1, and the similarity gate fails, while clients still see the primary."""
    import yaml

    from infershift.devstack.traffic import served_count
    from tests.devstack.outside_sim import outside_simulator

    doc = yaml.safe_load(stackspec.stack_path("local").read_text())
    svc = doc["config"]["infershift:services"]["llama2-candidate"]
    with outside_simulator("--profile", svc["simProfile"], "--model", svc["model"],
                           "--served-model-name", svc["servedModelName"], "--pod-name", "other-candidate",
                           "--time-scale", "50", "--seed", "7", "--max-loras", str(svc["lora"]["maxLoras"]),
                           "--lora-modules", *(f"{n}={p}" for n, p in svc["lora"]["modules"].items())) as port:
        svc["endpoints"] = [f"http://127.0.0.1:{port}"]
        svc.pop("simulated", None)
        file = tmp_path / "Pulumi.local.yaml"
        file.write_text(yaml.safe_dump(doc, sort_keys=False))
        with run(file, Options(auto_ports=True, time_scale=50.0, poll_interval="200ms", ready_timeout=90.0,
                               workdir=tmp_path / "work")) as stack:
            result = local.run(stack, MIRROR, 30, max_tokens=512)
            served = served_count(f"127.0.0.1:{port}")
    assert result.tally.ok == result.tally.total == 30, result.tally.errors
    pairing = compare.pair(result.answers)
    assert len(pairing.pairs) == 30
    assert served >= 30  # every copy went to the outside candidate
    assert all((p.primary.pool, p.shadow.pool) == ("llama2-pool", "llama2-candidate-pool") for p in pairing.pairs)
    total = compare.compare(pairing)[compare.ALL]
    assert total.primary_error_rate == 0 and total.shadow_error_rate == 0
    # natural lengths differ with the seed (32..511 tokens under a 512 limit): few answers match
    assert total.exact_match < 0.2 and total.overlap < 0.9 and total.length_ratio != 1.0
    problems = compare.Gate(min_pairs=30, min_exact_match=0.99).check(total)
    assert any("exact match" in p for p in problems), problems
