"""A weight change is one `pulumi config set --path` scalar and changes only the route or the
model-routing object (and the `/v1/models` listing's ConfigMap, whose targets carry their
shares; its server reads the file again, so no pod changes): render before and after, and diff."""
from __future__ import annotations

import copy
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from infershift import contract, spec
from infershift.spec.config_path import parse_path, parse_value, set_path, weight_paths
from infershift.components.render import render_values
STACKS = spec.stack_names()

REPO = Path(__file__).resolve().parents[2]
ROUTING_KINDS = {"HTTPRoute", "InferenceModel", "InferenceModelRewrite"}


def _document(stack: str) -> dict:
    return yaml.safe_load(spec.stack_path(stack).read_text())


def _objects(render) -> dict:
    return {(o["kind"], o["metadata"]["name"]): o for o in render.objects}


def _listing(render) -> set:
    """The models listing's ConfigMap (components/models_listing.py)."""
    return {(o["kind"], o["metadata"]["name"]) for o in render.objects
            if o["kind"] == "ConfigMap" and contract.LISTING_LABEL in (o["metadata"].get("labels") or {})}


def _cloud(render) -> dict:
    return {(r.type, r.name): r.inputs for r in render.cloud}


def _header_commands(stack: str) -> list[tuple[str, str]]:
    text = spec.stack_path(stack).read_text()
    return re.findall(rf"pulumi config set --path '([^']+)' (\S+) -s {re.escape(stack)}", text)


def _shift(renders, stack: str, path: str, value: int):
    before = renders(stack)
    document = set_path(copy.deepcopy(_document(stack)), path, value)
    after = render_values(spec.config_values(document), stack)
    old, new = _objects(before), _objects(after)
    changed = {k for k in old.keys() | new.keys() if old.get(k) != new.get(k)}
    return before, after, changed


CASES = [(stack, path, int(value)) for stack in STACKS for path, value in _header_commands(stack)]


def test_every_stack_documents_a_weight_command():
    assert {stack for stack, _, _ in CASES} == set(STACKS)


@pytest.mark.parametrize("stack,path,value", CASES, ids=[f"{s}:{p}" for s, p, _ in CASES])
def test_documented_weight_change_touches_only_routing_objects(renders, stack, path, value):
    assert path in weight_paths(spec.load_stack(stack)), "the header's path is not a weight of the stack"
    before, after, changed = _shift(renders, stack, path, value)
    listing = _listing(before)
    assert len(listing) == 1 and listing == _listing(after)
    assert changed - listing, "the weight change changed nothing"
    assert {kind for kind, _ in changed - listing} <= ROUTING_KINDS
    assert _cloud(before) == _cloud(after)
    # The new value is in the changed object.
    dumped = yaml.safe_dump([o for k, o in _objects(after).items() if k in changed])
    assert re.search(rf"weight: {value}\b|percent: {value}\b", dumped)


def test_weight_shift_is_one_scalar_in_one_object(renders):
    _, after, changed = _shift(renders, "ack-canary", "pools.mymodel-pool-v1.models.travelhelper.targets.travel-helper-v2", 50)
    assert changed == {("InferenceModel", "mymodel-pool-v1-travelhelper"), *_listing(after)}
    targets = after.one("InferenceModel", "mymodel-pool-v1-travelhelper")["spec"]["targetModels"]
    assert targets == [{"name": "travel-helper-v1", "weight": 90}, {"name": "travel-helper-v2", "weight": 50}]


def test_route_shift_to_100_and_0_keeps_both_backends():
    doc = set_path(_document("ack-canary"), "routes.inference-route.backends.mymodel-pool-v1", 0)
    doc = set_path(doc, "routes.inference-route.backends.mymodel-pool-v2", 100)
    refs = render_values(spec.config_values(doc), "ack-canary").one("HTTPRoute", "inference-route")
    assert [(b["name"], b["weight"]) for b in refs["spec"]["rules"][0]["backendRefs"]] == [
        ("mymodel-pool-v1", 0), ("mymodel-pool-v2", 100)]


def test_v1_rewrite_weight_change_touches_only_the_rewrite(renders):
    path = "pools.llama2-pool.models.lora-request.targets.sql-lora"
    _, after, changed = _shift(renders, "local", path, 80)
    assert changed == {("InferenceModelRewrite", "llama2-pool-lora-request"), *_listing(after)}
    rule = after.one("InferenceModelRewrite", "llama2-pool-lora-request")["spec"]["rules"][0]
    assert rule["targets"] == [{"modelRewrite": "sql-lora", "weight": 80},
                               {"modelRewrite": "tweet-summary", "weight": 50}]


def test_config_path_parses_pulumi_syntax():
    assert parse_path("routes.inference-route.backends.mymodel-pool-v2") == [
        "routes", "inference-route", "backends", "mymodel-pool-v2"]
    assert parse_path('pools.llm.models["meta-llama/Llama-3.1-8B-Instruct"].priority') == [
        "pools", "llm", "models", "meta-llama/Llama-3.1-8B-Instruct", "priority"]
    assert parse_path("gateway.listeners[1].port") == ["gateway", "listeners", 1, "port"]
    assert parse_value("50") == 50 and parse_value("true") is True and parse_value("5m") == "5m"


def test_set_path_on_a_dotted_key_and_a_list_index():
    doc = set_path(_document("gke-node-rollout"), 'pools.llm.models["meta-llama/Llama-3.1-8B-Instruct"].priority', 5)
    assert doc["config"]["infershift:pools"]["llm"]["models"]["meta-llama/Llama-3.1-8B-Instruct"] == {"priority": 5}
    doc = set_path(doc, "gateway.listeners[0].port", 8088)
    assert doc["config"]["infershift:gateway"]["listeners"][0]["port"] == 8088


def test_weight_paths_round_trip_through_set_path():
    s = spec.load_stack("gke-node-rollout")
    for path in weight_paths(s):
        doc = set_path(_document("gke-node-rollout"), path, 7)
        node = doc["config"]
        segments = parse_path(path)
        node = node[f"infershift:{segments[0]}"]
        for seg in segments[1:]:
            node = node[seg]
        assert node == 7


def test_config_path_cli_edits_a_copy_and_keeps_the_header(tmp_path):
    out = tmp_path / "Pulumi.ack-canary.yaml"
    proc = subprocess.run([sys.executable, "-m", "infershift.spec.config_path", "-s", "ack-canary",
                           "routes.inference-route.backends.mymodel-pool-v2", "50", "--out", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    text = out.read_text()
    assert text.startswith("# ACK: base-model canary")
    edited = spec.load_file(out)
    assert edited.routes["inference-route"].backends == {"mymodel-pool-v1": 90, "mymodel-pool-v2": 50}


def test_config_path_cli_rejects_a_bad_path(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "infershift.spec.config_path", "-s", "ack-canary", "routes..[x", "1",
                           "--out", str(tmp_path / "x.yaml")], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "invalid config path" in proc.stderr
