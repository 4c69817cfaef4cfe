"""`devstack up --manifests` on the guides' own YAML: their curl commands get 200 from the model
the guide expects, with the guide's weights observed within max(0.10, 4.5 sigma) over >= 200
requests. Seeds 002/003 are read straight from ../shared/seeds; 000/004 from testdata/seeds."""
from __future__ import annotations

import copy
from collections import Counter

import httpx
import pytest
import yaml
from devstack_helpers import FAST, TESTDATA, within
from seeds import SEEDS, curl_bodies, heredocs, named_blocks, seed_text

from infershift.devstack import manifests, translate
from infershift.devstack.stack import LocalStack, Options
from infershift.devstack.traffic import burst, settled_count

N = 200
pytestmark = pytest.mark.skipif(not SEEDS.exists(), reason=f"the seed guides are not at {SEEDS}")


def write(tmp_path, name: str, text: str):
    path = tmp_path / name
    path.write_text(text)
    return path


def running(tmp_path, paths):
    stack = LocalStack(None, Options(**FAST, workdir=tmp_path / "work"), manifests=paths,
                       log=lambda msg: print(f"devstack: {msg}"))
    return stack


def short(body: dict) -> dict:
    """The seed's request, answered in a few tokens (hundreds of them are sent)."""
    return {**body, "max_tokens": 4, **({"max_completion_tokens": 4} if "max_completion_tokens" in body else {})}


def by_deployment(stack, tally) -> Counter:
    return tally.by(stack.pod_service())


def seed_003_blocks() -> list[str]:
    blocks = heredocs(seed_text("003"))
    kinds = [yaml.safe_load_all(b).__next__()["kind"] for b in blocks]
    assert kinds == ["Deployment", "InferencePool", "GatewayClass", "Deployment", "InferencePool", "HTTPRoute",
                     "InferenceModel"], kinds
    return blocks


@pytest.mark.parametrize("scenario", ["base-model", "lora"])
def test_seed_003_canary_scenarios(tmp_path, scenario):
    blocks = seed_003_blocks()
    prep, s1, s2 = blocks[:3], blocks[3:6], blocks[6:]
    chosen = prep + (s1 if scenario == "base-model" else s2)
    paths = [write(tmp_path, f"{i}.yaml", b) for i, b in enumerate(chosen)]
    bodies = curl_bodies(seed_text("003"))
    with running(tmp_path, paths) as stack:
        url = stack.url("llm-gw") + "/v1/chat/completions"
        if scenario == "base-model":
            r = httpx.post(url, json=bodies[1], timeout=60)
            assert r.status_code == 200 and r.json()["object"] == "chat.completion", r.text
            tally = burst(url, short(bodies[1]), N)
            assert tally.failed == 0, tally.errors
            ok, why = within(by_deployment(stack, tally)["deepseek-r1"], N, 0.10)
            assert ok, why
        else:
            r = httpx.post(url, json=bodies[2], timeout=60)
            assert r.status_code == 200, r.text
            tally = burst(url, short(bodies[2]), N)
            assert tally.failed == 0, tally.errors
            assert set(tally.targets) <= {"travel-helper-v1", "travel-helper-v2"}
            ok, why = within(tally.targets["travel-helper-v2"], N, 0.10)
            assert ok, why


def test_seed_003_all_steps_together_warn_of_the_404_share():
    """Applied in one go, the 90/10 route sends travelhelper requests to the pool whose servers do
    not serve it: the gateway would answer those with 404, and devstack says so before starting."""
    objs = [o for b in seed_003_blocks() for o in yaml.safe_load_all(b) if o]
    gw = translate.translate(objs)
    assert any("travelhelper" in w and "mymodel-pool-v2" in w and "404" in w for w in gw.warnings), gw.warnings


def test_seed_000_laid_out_runs_the_same_canary(tmp_path):
    deployments = [b for b in seed_003_blocks() if "kind: Deployment" in b.split("\n")[1]]
    paths = [write(tmp_path, f"servers-{i}.yaml", b) for i, b in enumerate(deployments)]
    paths += sorted((TESTDATA / "seeds" / "000").glob("*.yaml"))
    bodies = curl_bodies(seed_text("000"))
    with running(tmp_path, paths) as stack:
        url = stack.url("llm-gw") + "/v1/chat/completions"
        tally = burst(url, short(bodies[0]), N)
        assert tally.failed == 0, tally.errors
        ok, why = within(by_deployment(stack, tally)["deepseek-r1"], N, 0.10)
        assert ok, why
        assert stack.gw.buffer_limit == 20 << 20 and stack.gw.request_timeout == 24 * 3600


def test_seed_002_mirror_to_a_service(tmp_path):
    blocks = named_blocks(seed_text("002"))
    assert set(blocks) >= {"inference_app.yaml", "inference_rules.yaml", "gateway.yaml", "sleep.yaml"}
    # "vllm-llama2-7b-pool-1 is the same as vllm-llama2-7b-pool except for its name" (the guide).
    app = [o for o in yaml.safe_load_all(blocks["inference_app.yaml"]) if o]
    twin = copy.deepcopy(next(o for o in app if o["kind"] == "Deployment"))
    twin["metadata"]["name"] = "vllm-llama2-7b-pool-1"
    twin["spec"]["selector"]["matchLabels"]["app"] = "vllm-llama2-7b-pool-1"
    twin["spec"]["template"]["metadata"]["labels"]["app"] = "vllm-llama2-7b-pool-1"
    paths = [write(tmp_path, name, text) for name, text in blocks.items()]
    paths.append(write(tmp_path, "inference_app_1.yaml", yaml.safe_dump(twin)))
    body = curl_bodies(seed_text("002"))[0]
    with running(tmp_path, paths) as stack:
        assert any("Deployment sleep" in x for x in stack.gw.ignored)
        url = stack.url("http") + "/v1/chat/completions"
        r = httpx.post(url, json=body, headers={"host": "example.com"}, timeout=60)
        assert r.status_code == 200, r.text
        mirror = [e.address for e in stack.endpoints["vllm-llama2-7b-pool-1"]]
        before = settled_count(mirror, 1)
        tally = burst(url, short(body), N, headers={"host": "example.com"})
        assert tally.failed == 0, tally.errors
        assert set(by_deployment(stack, tally)) == {"vllm-llama2-7b-pool"}
        mirrored = settled_count(mirror, before + N) - before
        assert mirrored >= N * 0.95, f"the mirror Service's servers got {mirrored} of {N}"
        # The route names example.com: another host is not routed (Gateway API hostnames).
        other = httpx.post(url, json=body, headers={"host": "other.example"}, timeout=30)
        assert other.status_code == 404 and other.json()["error"]["code"] == "route_not_found"


@pytest.mark.parametrize("scenario,model,targets", [
    ("004-lora", "lora-request", {"tweet-summary": 0.5, "sql-lora": 0.5}),
    ("004-reasoning", "qwq", {"qwq-32b": 0.5, "deepseek-r1": 0.5}),
])
def test_seed_004_attach_to_pools(tmp_path, scenario, model, targets):
    paths = sorted((TESTDATA / "seeds" / scenario).glob("*.yaml"))
    objs = manifests.load(paths)
    assert {o["apiVersion"] for o in objs.items if o["kind"] == "InferencePool"} == {
        "inference.networking.x-k8s.io/v1alpha1"}
    body = next(b for b in curl_bodies(seed_text("004")) if b["model"] == model)
    path = "/v1/completions" if "prompt" in body else "/v1/chat/completions"
    headers = {"host": "test.com"} if model == "lora-request" else {}
    with running(tmp_path, paths) as stack:
        url = stack.url("llm-gw") + path
        r = httpx.post(url, json=body, headers=headers, timeout=120)
        assert r.status_code == 200, r.text
        # the guide reads the split from the response body's `model`: the served target
        assert r.json()["model"] in targets and r.json()["model"] == r.headers["x-infershift-target-model"]
        tally = burst(url, short(body), N, headers=headers)
        assert tally.failed == 0, tally.errors
        assert set(tally.targets) <= set(targets)
        for target, share in targets.items():
            ok, why = within(tally.targets[target], N, share)
            assert ok, f"{target}: {why}"
        if model == "qwq":  # each target served by its own Deployment (TP4 QwQ, 1-GPU DeepSeek)
            assert {k: v for k, v in tally.pod_targets.items() if v} and all(
                stack.pod_service()[pod] == target for (pod, target) in tally.pod_targets)


def test_manifest_edits_apply_live_with_no_failed_request(tmp_path):
    """`kubectl apply` of an edited HTTPRoute and InferenceModel while traffic flows: the seed's
    weight shift (90/10 -> 50/50 -> 0/100) and its LoRA shift, with zero failed requests."""
    from devstack_helpers import FAST as fast

    from infershift.devstack.traffic import Load

    deployments = [b for b in seed_003_blocks() if "kind: Deployment" in b.split("\n")[1]]
    paths = [write(tmp_path, f"servers-{i}.yaml", b) for i, b in enumerate(deployments)]
    folder = tmp_path / "objects"
    folder.mkdir()
    for f in sorted((TESTDATA / "seeds" / "000").glob("*.yaml")):
        (folder / f.name).write_text(f.read_text())
    route_file, lora_file = folder / "4-route-90-10.yaml", folder / "5-loramodel.yaml"
    stack = LocalStack(None, Options(**{**fast, "watch_interval": 0.1}, workdir=tmp_path / "work"),
                       manifests=[*paths, folder], log=lambda msg: print(f"devstack: {msg}"))
    bodies = curl_bodies(seed_text("000"))

    def edit(path, old: str, new: str):
        seen = len(stack.applied)
        path.write_text(path.read_text().replace(old, new))
        import time
        deadline = time.monotonic() + 30
        while len(stack.applied) == seen:
            assert time.monotonic() < deadline, "the watcher did not pick up the edit"
            time.sleep(0.02)
        assert stack.applied[-1].ok, stack.applied[-1].message

    with stack:
        url = stack.url("llm-gw") + "/v1/chat/completions"
        with Load(url, short(bodies[0]), concurrency=4) as load:
            v1, v2 = "name: mymodel-pool-v1\n      port: 8000\n      weight: ", "name: mymodel-pool-v2\n      weight: "
            edit(route_file, v1 + "90", v1 + "50")
            edit(route_file, v2 + "10", v2 + "50")
            tally = burst(url, short(bodies[0]), N)
            ok, why = within(by_deployment(stack, tally)["deepseek-r1"], N, 0.5)
            assert ok and tally.failed == 0, (why, tally.errors)
            edit(route_file, v1 + "50", v1 + "0")
            edit(route_file, v2 + "50", v2 + "100")
            tally = burst(url, short(bodies[0]), 60)
            assert by_deployment(stack, tally) == {"deepseek-r1": 60}, by_deployment(stack, tally)
            # Back to pool v1 alone, then shift the LoRA weights inside it (the picker reloads).
            edit(route_file, v1 + "0", v1 + "100")
            edit(route_file, v2 + "100", v2 + "0")
            edit(lora_file, "weight: 90", "weight: 0")
            edit(lora_file, "weight: 10", "weight: 100")
            import time
            deadline = time.monotonic() + 30
            while True:
                tally = burst(url, short(bodies[2]), 20)
                assert tally.failed == 0, tally.errors
                if tally.targets == {"travel-helper-v2": 20}:
                    break
                assert time.monotonic() < deadline, f"the picker still routes {dict(tally.targets)}"
                time.sleep(0.1)
        assert load.tally.total > 0 and load.tally.failed == 0, load.tally.errors
