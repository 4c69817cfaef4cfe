"""Real `pulumi up` of the kubeconfig platform stacks against the test control plane (issue 16 item 2).

The real Pulumi CLI and pulumi-kubernetes provider (pulumi_engine.py: built by
tools/realengine/pulumi/build.sh, file backend, no network) deploy two stacks into the control
plane of controlplane.py (a real kube-apiserver with the shared CRDs, KWOK making pods Ready):

- `local` (stacks/Pulumi.local.yaml: every guide's scenario on simulated model servers), in a
  namespace the test creates (the stack reads it: `createNamespace: false`);
- the `ack-canary` seed scenario (two pools behind one weighted HTTPRoute, a LoRA split), in a
  namespace the stack creates, its vLLM Deployments asking for GPUs of a KWOK node that has them.

Both are retargeted as the spec requires for a kubeconfig cluster (`retarget`): platform kind
`kubeconfig` with the control plane's admin kubeconfig file, no `images` (the picker's and
simulator's images named as already pushed refs, so nothing is built: checks.BUILD_HINT), no
node pools (a kubeconfig cluster's nodes are not managed here), and `gateway.awaitStatus: false`
(no gateway controller writes Gateway or HTTPRoute status in this control plane).

What the engine plans is compared with what the program renders under Pulumi's mock runtime
(components/render.py), never with a hand-written list: the preview's creates are the render's
resources; each edit's updates are exactly the objects whose rendered manifest changed, and the
provider's detailed diff names exactly the fields that changed in it.

Each class runs its steps in order on one Project (class-scoped fixture; both stacks declare the
cluster-scoped GatewayClass `inference-gateway`, so the second stack starts after the first one's
destroy). The fixture destroys the stack and removes its namespace in teardown, also on failure.
"""
from __future__ import annotations

import json
import re
import tempfile
import time
from pathlib import Path
from typing import Any

import pulumi_engine
import pytest
import yaml
from controlplane import ApiError, ControlPlane, pod_ready, require_or_skip
from pulumi_engine import EngineError, Preview, Project, Step

from infershift import contract
from infershift.components.render import Render, render_values
from infershift.spec import config_path

REPO = Path(__file__).resolve().parents[2]
# Images named as pushed refs (nothing builds them; KWOK never pulls an image).
PICKER_IMAGE = f"example.invalid/infershift/picker:{contract.PACKAGE_VERSION}"
SIM_IMAGE = f"example.invalid/infershift/sim:{contract.PACKAGE_VERSION}"
NODE_PREFIX = "pulumi-node-"
LISTING = "inference-gateway-models"  # the /v1/models listing's objects (components/models_listing.py)
# Replacements would be one of these ops (engine: deploy/step.go OpReplace and friends).
REPLACE_OPS = {"replace", "create-replacement", "delete-replaced", "discard-replaced"}


# --- the stacks -----------------------------------------------------------------------------------------------------

def retarget(stack: str, kubeconfig: Path, namespace: str, create_namespace: bool) -> dict[str, Any]:
    """stacks/Pulumi.<stack>.yaml's `infershift:` values for a kubeconfig cluster (see the module doc)."""
    doc = yaml.safe_load((REPO / "stacks" / f"Pulumi.{stack}.yaml").read_text())["config"]
    # a JSON round trip: the local stack's YAML anchors (`&observe-all`) become separate dicts
    values = json.loads(json.dumps({k.split(":", 1)[1]: v for k, v in doc.items()}))
    values["platform"] = {"kind": "kubeconfig", "kubeconfig": {"path": str(kubeconfig)},
                          "namespace": namespace, "createNamespace": create_namespace}
    values.pop("images", None)
    values.pop("nodePools", None)
    for svc in values["services"].values():
        svc.pop("nodePool", None)
        if svc.get("simulated"):
            svc["simImage"] = SIM_IMAGE
    for pool in values["pools"].values():
        pool.setdefault("picker", {})["image"] = PICKER_IMAGE
    values["gateway"]["awaitStatus"] = False
    return values


def render(values: dict[str, Any], stack: str) -> Render:
    """The program under the mock runtime with the values as the engine passes them: the CLI
    sends each structured config value as JSON with its map keys sorted (Go's encoding/json), so
    e.g. a split's targets reach the program in name order, not in the stack file's order, and
    the lists built from them (InferenceModel targetModels) follow that order."""
    return render_values(json.loads(json.dumps(values, sort_keys=True)), stack=stack)


def config_path_set(values: dict[str, Any], path: str, value: Any) -> None:
    """What `pulumi config set --path PATH VALUE` does to the values (the path parsed as
    devstack's `config set` parses it, spec/config_path.py)."""
    keys = config_path.parse_path(path)
    node = values
    for k in keys[:-1]:
        node = node[k]
    node[keys[-1]] = value


STACK_TYPE = "pulumi:pulumi:Stack"


def engine_key(step: Step) -> tuple[str, str]:
    return step.type, step.name


def engine_keys(steps: list[Step]) -> set[tuple[str, str]]:
    """(type, name) of each step but the stack's own (the mock runtime does not register it)."""
    return {engine_key(s) for s in steps if s.type != STACK_TYPE}


def rendered_keys(r: Render) -> dict[tuple[str, str], Any]:
    return {(res.type, res.name): res for res in r.resources if res.type != STACK_TYPE}


def _prop_path(prefix: str, key: str | int) -> str:
    """A property path as the engine prints it (sdk/go/common/resource/properties_path.go)."""
    if isinstance(key, int):
        return f"{prefix}[{key}]"
    if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
        return f"{prefix}.{key}" if prefix else key
    return f'{prefix}["{key}"]'


def leaf_diff(old: Any, new: Any, prefix: str = "") -> dict[str, str]:
    """path -> add / delete / update for every leaf that differs (a list that changes length is
    compared element by element, the rest added or deleted)."""
    if isinstance(old, dict) and isinstance(new, dict):
        out: dict[str, str] = {}
        for k in sorted(set(old) | set(new)):
            if k not in new:
                out[_prop_path(prefix, k)] = "delete"
            elif k not in old:
                out[_prop_path(prefix, k)] = "add"
            else:
                out.update(leaf_diff(old[k], new[k], _prop_path(prefix, k)))
        return out
    if isinstance(old, list) and isinstance(new, list):
        out = {}
        for i in range(max(len(old), len(new))):
            if i >= len(new):
                out[_prop_path(prefix, i)] = "delete"
            elif i >= len(old):
                out[_prop_path(prefix, i)] = "add"
            else:
                out.update(leaf_diff(old[i], new[i], _prop_path(prefix, i)))
        return out
    return {} if old == new else {prefix: "update"}


def expected_updates(before: Render, after: Render) -> dict[tuple[str, str], dict[str, str]]:
    """(type, name) -> leaf diff of every custom resource whose rendered inputs changed."""
    old, new = rendered_keys(before), rendered_keys(after)
    assert set(old) == set(new), (set(old) ^ set(new))
    return {k: leaf_diff(old[k].inputs, new[k].inputs) for k in old
            if old[k].custom and old[k].inputs != new[k].inputs}


def assert_only_updates(preview: Preview, before: Render, after: Render) -> dict[tuple[str, str], Step]:
    """The engine's plan is exactly the in-place updates the render predicts: the same objects,
    each with the provider's detailed diff naming exactly the fields that changed, none of them a
    replacement. Returns the update steps by (type, name)."""
    changes = preview.changes()
    assert not [s for s in changes if s.op in REPLACE_OPS or s.replace_reasons], \
        [(s.op, s.urn, s.replace_reasons) for s in changes]
    assert {s.op for s in changes} <= {"update"}, [(s.op, s.urn) for s in changes]
    expected = expected_updates(before, after)
    got = {engine_key(s): s for s in changes}
    assert set(got) == set(expected), f"engine updates {sorted(got)}, render changed {sorted(expected)}"
    for key, step in got.items():
        kinds = {path: d.get("kind", "") for path, d in step.detailed_diff.items()}
        assert kinds == expected[key], f"{key}: provider's diff {kinds}, render's {expected[key]}"
        assert not [p for p, d in step.detailed_diff.items() if "replace" in d.get("kind", "")]
    return got


def last_update(project: Project) -> dict:
    """The newest entry of `pulumi stack history` (what the update did: resourceChanges, result)."""
    out = project.pulumi("stack", "history", "--json", "--show-secrets=false", "-s", project.stack)
    return json.loads(out.stdout)[0]


def namespaced_kinds(r: Render) -> set[tuple[str, str]]:
    return {(o["apiVersion"], o["kind"]) for o in r.objects if o.get("metadata", {}).get("namespace")}


def assert_on_server(cp: ControlPlane, r: Render) -> None:
    """Every object the render declares exists on the server, with the rendered spec's fields."""
    missing = []
    for obj in r.objects:
        meta = obj["metadata"]
        live = cp.get(obj["apiVersion"], obj["kind"], meta["name"], meta.get("namespace"))
        if live is None:
            missing.append((obj["kind"], meta["name"]))
            continue
        assert meta.get("labels", {}).items() <= (live["metadata"].get("labels") or {}).items(), (obj["kind"], meta)
    assert not missing, missing


def assert_deployments_ready(cp: ControlPlane, r: Render) -> dict[str, int]:
    """Each rendered Deployment is Available with all its replicas Ready, as `up` returned (no
    waiting here: `up` awaited them); its pods run on KWOK nodes."""
    ready = {}
    for dep in r.find("Deployment"):
        meta = dep["metadata"]
        live = cp.get("apps/v1", "Deployment", meta["name"], meta["namespace"])
        assert live is not None, meta["name"]
        st = live.get("status") or {}
        want = dep["spec"]["replicas"]
        assert st.get("readyReplicas", 0) == want and st.get("updatedReplicas", 0) == want, (meta["name"], st)
        assert st.get("observedGeneration") == live["metadata"]["generation"], (meta["name"], st)
        conds = {c["type"]: c["status"] for c in st.get("conditions") or []}
        assert conds.get("Available") == "True", (meta["name"], conds)
        ready[meta["name"]] = want
    return ready


def assert_gone(cp: ControlPlane, r: Render, namespace: str, namespace_kept: bool) -> None:
    """After destroy: nothing the render declares is left, in the namespace or cluster-wide."""
    left = []
    for obj in r.objects:
        meta = obj["metadata"]
        if obj["kind"] == "Namespace":
            continue
        if cp.get(obj["apiVersion"], obj["kind"], meta["name"], meta.get("namespace")) is not None:
            left.append((obj["kind"], meta["name"]))
    assert not left, f"left after destroy: {left}"
    ns = cp.get("v1", "Namespace", namespace)
    if namespace_kept:
        assert ns is not None
        for api, kind in sorted(namespaced_kinds(r)):
            items = [i["metadata"]["name"] for i in cp.list(api, kind, namespace)
                     if (kind, i["metadata"]["name"]) not in {("ServiceAccount", "default"),
                                                              ("ConfigMap", "kube-root-ca.crt")}]
            assert items == [], (kind, items)
        # the Deployments' pods go with them (garbage collection; KWOK finishes their deletion)
        cp.wait_for(lambda: not cp.list("v1", "Pod", namespace) and not cp.list("apps/v1", "ReplicaSet", namespace),
                    60, f"the pods and ReplicaSets in {namespace} gone")
    else:
        assert ns is None, f"namespace {namespace} still there: {ns and ns.get('status')}"


# --- fixtures -------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def engine_bin() -> Path:
    b = pulumi_engine.toolchain_bin()
    if b is None:
        require_or_skip("the Pulumi CLI and pulumi-kubernetes provider are not built: run `make realengine`")
    assert b is not None
    return b


@pytest.fixture(scope="module")
def kwok_nodes(control_plane):
    """KWOK nodes for the stacks' pods, with non-loopback pod CIDRs, the session's nodes cordoned
    meanwhile (and uncordoned after). The session's nodes hand out loopback pod IPs (controlplane.py),
    which the API server refuses in EndpointSlices ("may not be in the loopback range"), so their
    Services would never get endpoints, and pulumi-kubernetes awaits every Service with a selector
    until it has some. Nothing connects to these addresses. Each node has 8 GPUs (ack-canary's vLLM
    Deployments ask for `nvidia.com/gpu`)."""
    cp = control_plane
    cordoned = [n["metadata"]["name"] for n in cp.list("v1", "Node") if not n["spec"].get("unschedulable")]
    names = [f"{NODE_PREFIX}{i}" for i in range(2)]
    capacity = {**cp.node_capacity, "nvidia.com/gpu": "8"}
    try:
        for n in cordoned:
            cp.request("PATCH", f"/api/v1/nodes/{n}", {"spec": {"unschedulable": True}},
                       content_type="application/merge-patch+json")
        for i, name in enumerate(names):
            cp.request("POST", "/api/v1/nodes", {
                "apiVersion": "v1", "kind": "Node",
                "metadata": {"name": name, "annotations": {"kwok.x-k8s.io/node": "fake"},
                             "labels": {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux", "type": "kwok"}},
                "spec": {"podCIDR": f"10.200.{i}.0/24", "podCIDRs": [f"10.200.{i}.0/24"]},
                "status": {"capacity": capacity, "allocatable": capacity}})

        def ready() -> bool:
            for name in names:
                st = (cp.get("v1", "Node", name) or {}).get("status") or {}
                if st.get("allocatable", {}).get("nvidia.com/gpu") != "8" or not any(
                        c["type"] == "Ready" and c["status"] == "True" for c in st.get("conditions") or []):
                    return False
            return True
        cp.wait_for(ready, 60, "the test's KWOK nodes Ready", "kwok")
        yield names
    finally:
        for name in names:
            cp.request("DELETE", f"/api/v1/nodes/{name}", ok=(200, 404))
        for n in cordoned:
            cp.request("PATCH", f"/api/v1/nodes/{n}", {"spec": {"unschedulable": False}},
                       content_type="application/merge-patch+json")


class Deployed:
    """One stack's Project, the values it was rendered from, and the Render of the current values."""

    def __init__(self, cp: ControlPlane, project: Project, stack: str, namespace: str, values: dict):
        self.cp, self.project, self.stack, self.namespace = cp, project, stack, namespace
        self.values = values
        self.render = render(values, stack)
        self.up_done = False
        self.attempted = False  # an update ran (teardown destroys)
        self.timings: dict[str, float] = {}

    def timed(self, what: str, fn, *args, **kwargs):
        t0 = time.monotonic()
        try:
            return fn(*args, **kwargs)
        finally:
            self.timings[what] = round(time.monotonic() - t0, 1)
            print(f"{self.stack}: {what} {self.timings[what]} s")

    def set_path(self, path: str, value: Any) -> Render:
        """`pulumi config set --path` on the real stack file, the same edit on the values; returns
        the render before the edit (self.render is the new one)."""
        self.project.config_set_path(path, value if isinstance(value, str) else json.dumps(value))
        config_path_set(self.values, path, value)
        before, self.render = self.render, render(self.values, self.stack)
        # the engine's stack file and the values the render used agree
        on_file = {k.split(":", 1)[1]: v for k, v in self.project.config().items() if k.startswith("infershift:")}
        assert on_file == self.values, "the stack file and the test's values differ after the edit"
        return before

    def require_up(self) -> None:
        if not self.up_done:
            pytest.skip(f"{self.stack} was not deployed (an earlier step failed)")


def _deployed(cp: ControlPlane, engine_bin: Path, stack: str, namespace: str, create_namespace: bool,
              extra: dict[str, Any] | None = None):
    """A Project with the retargeted stack (plus `extra`: config path -> value) and its Render."""
    root = Path(tempfile.mkdtemp(prefix=f"infershift-pulumi-{stack}-"))
    values = retarget(stack, cp.kubeconfig, namespace, create_namespace)
    for path, value in (extra or {}).items():
        config_path_set(values, path, value)
    if not create_namespace:
        cp.ensure_namespace(namespace)
    project = Project(root, engine_bin, stack, {f"infershift:{k}": v for k, v in values.items()}, timeout=300)
    d = Deployed(cp, project, stack, namespace, values)
    return root, d


def _teardown(d: Deployed, root: Path) -> None:
    import shutil

    try:
        if d.attempted and d.project.resources():
            d.project.pulumi("destroy", "--yes", "--skip-preview", "--non-interactive", "-s", d.stack,
                             program=True, check=False, timeout=180)
    finally:
        # whatever a failed destroy left: the cluster-scoped objects, and the namespace with the rest
        d.cp.delete([o for o in d.render.objects if not o["metadata"].get("namespace") and o["kind"] != "Namespace"])
        d.cp.delete({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": d.namespace}})
        print(f"{d.stack} timings (s): {d.timings}")
        shutil.rmtree(root, ignore_errors=True)


# --- the local stack ------------------------------------------------------------------------------------------------

LOCAL_NS = "pulumi-local"


@pytest.fixture(scope="class")
def local(control_plane, engine_bin, kwok_nodes):
    root, d = _deployed(control_plane, engine_bin, "local", LOCAL_NS, create_namespace=False)
    try:
        yield d
    finally:
        _teardown(d, root)


class TestLocalStack:
    def test_preview_creates_what_the_program_renders(self, local: Deployed):
        p = local.timed("preview (create)", local.project.preview)
        assert not [d for d in p.diagnostics if d.get("severity") == "error"], p.diagnostics
        creates, reads = engine_keys(p.ops("create")), engine_keys(p.ops("read"))
        rendered = rendered_keys(local.render)
        assert creates == {k for k, r in rendered.items() if not r.read}
        assert reads == {k for k, r in rendered.items() if r.read} == {("kubernetes:core/v1:Namespace", "cluster-namespace")}
        assert {s.op for s in p.steps} == {"create", "read"}
        # the Kubernetes objects the engine would create: the render's kinds and names
        engine_objects = sorted(s.kind_name for s in p.ops("create") if s.type.startswith("kubernetes:"))
        assert engine_objects == sorted((o["kind"], o["metadata"]["name"]) for o in local.render.objects)
        assert len(engine_objects) == 87  # with the /v1/models listing: ConfigMap, Deployment, Service, 3 HTTPRoutes

    def test_up_awaits_deployments_until_kwok_makes_them_ready(self, local: Deployed):
        cp = local.cp
        local.attempted = True
        local.timed("up (create)", local.project.up)
        local.up_done = True
        assert_on_server(cp, local.render)
        ready = assert_deployments_ready(cp, local.render)
        assert len(ready) == 12 and sum(ready.values()) == 15 and ready[LISTING] == 1
        for pod in cp.list("v1", "Pod", LOCAL_NS):
            node = cp.get("v1", "Node", pod["spec"]["nodeName"])
            assert node and node["metadata"]["annotations"].get("kwok.x-k8s.io/node") == "fake" and pod_ready(pod)
        # the engine created every resource the render declares (the stack too), and read the namespace
        declared = [r for r in rendered_keys(local.render).values() if not r.read]
        h = last_update(local.project)
        assert h["result"] == "succeeded" and h["resourceChanges"].get("create") == len(declared) + 1, h

    def test_route_weight_is_an_in_place_update_of_the_httproute(self, local: Deployed):
        local.require_up()
        before = local.set_path("routes.inference-route.backends.mymodel-pool-v2", 50)
        p = local.timed("preview (route weight)", local.project.preview)
        updates = assert_only_updates(p, before, local.render)
        # the route, and the /v1/models listing whose targets carry the route's shares (no pod changes)
        assert sorted(s.kind_name for s in updates.values()) == [("ConfigMap", LISTING), ("HTTPRoute", "inference-route")]
        local.timed("up (route weight)", local.project.up)
        h = last_update(local.project)
        assert h["result"] == "succeeded" and h["resourceChanges"].get("update") == 2, h["resourceChanges"]
        listing = json.loads(local.cp.get("v1", "ConfigMap", LISTING, LOCAL_NS)["data"][contract.LISTING_FILE])
        mymodel = next(m for m in listing["llm-gw"]["data"] if m["id"] == "mymodel")
        assert {t["pool"]: t["share"] for t in mymodel["targets"]} == {"mymodel-pool-v1": 0.6429,
                                                                       "mymodel-pool-v2": 0.3571}
        route = local.cp.get("gateway.networking.k8s.io/v1", "HTTPRoute", "inference-route", LOCAL_NS)
        weights = {b["name"]: b["weight"] for rule in route["spec"]["rules"] for b in rule["backendRefs"]
                   if len(rule["backendRefs"]) == 2}
        assert weights == {"mymodel-pool-v1": 90, "mymodel-pool-v2": 50}

    def test_model_splits_are_in_place_updates_of_the_model_routing_objects(self, local: Deployed):
        local.require_up()
        before = local.render
        local.set_path("pools.llama2-pool.models.lora-request.targets.sql-lora", 80)  # v1 pool: InferenceModelRewrite
        local.set_path("pools.reasoning-pool.models.qwq.targets.deepseek-r1", 10)  # v1alpha2 pool: InferenceModel
        p = local.timed("preview (model splits)", local.project.preview)
        updates = assert_only_updates(p, before, local.render)
        assert sorted(s.kind_name for s in updates.values()) == [
            ("ConfigMap", LISTING), ("InferenceModel", "reasoning-pool-qwq"),
            ("InferenceModelRewrite", "llama2-pool-lora-request")]
        local.timed("up (model splits)", local.project.up)
        cp = local.cp
        rw = cp.get("llm-d.ai/v1alpha2", "InferenceModelRewrite", "llama2-pool-lora-request", LOCAL_NS)
        assert {t["modelRewrite"]: t["weight"] for t in rw["spec"]["rules"][0]["targets"]} == \
            {"tweet-summary": 50, "sql-lora": 80}
        im = cp.get("inference.networking.x-k8s.io/v1alpha2", "InferenceModel", "reasoning-pool-qwq", LOCAL_NS)
        assert {t["name"]: t["weight"] for t in im["spec"]["targetModels"]} == {"qwq-32b": 50, "deepseek-r1": 10}

    def test_label_and_replicas_edits_replace_nothing(self, local: Deployed):
        local.require_up()
        before = local.render
        local.set_path("services.llama2.labels.tier", "gold")
        local.set_path("services.llama2.replicas", 3)
        p = local.timed("preview (label, replicas)", local.project.preview)
        updates = assert_only_updates(p, before, local.render)
        assert {s.kind_name for s in updates.values()} == {
            ("Deployment", "llama2"), ("Service", "llama2"), ("PodDisruptionBudget", "llama2")}
        local.timed("up (label, replicas)", local.project.up)
        # a rolling update (the pod template's labels changed), awaited to the end by `up`
        assert assert_deployments_ready(local.cp, local.render)["llama2"] == 3
        pods = local.cp.list("v1", "Pod", LOCAL_NS, f"{contract.SERVICE_LABEL}=llama2")
        assert len([p for p in pods if pod_ready(p) and p["metadata"]["labels"].get("tier") == "gold"]) == 3

    def test_an_object_the_server_refuses_fails_up_with_the_servers_message(self, local: Deployed):
        """What the spec cannot know: the cluster's own admission rules. The spec refuses what
        the HTTPRoute CRD refuses (contract.http_path_problem, the CRD's HTTPPathMatch rules);
        here a platform team's ValidatingAdmissionPolicy (admissionregistration.k8s.io/v1, GA
        since Kubernetes 1.30) allows this route's paths only under /v1/. `up` fails with the
        policy's message and the live route keeps its spec."""
        local.require_up()
        cp = local.cp
        policy = {
            "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicy",
            "metadata": {"name": "inference-route-openai-paths"},
            "spec": {
                "failurePolicy": "Fail",
                "matchConstraints": {"resourceRules": [{
                    "apiGroups": ["gateway.networking.k8s.io"], "apiVersions": ["*"], "resources": ["httproutes"],
                    "operations": ["CREATE", "UPDATE"], "resourceNames": ["inference-route"]}]},
                "validations": [{
                    "expression": "object.spec.rules.all(r, !has(r.matches) || r.matches.all(m, "
                                  "!has(m.path) || m.path.value.startsWith('/v1/')))",
                    "message": "this cluster serves the OpenAI API under /v1/ only"}]}}
        binding = {
            "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicyBinding",
            "metadata": {"name": "inference-route-openai-paths"},
            "spec": {"policyName": "inference-route-openai-paths", "validationActions": ["Deny"],
                     "matchResources": {"namespaceSelector": {"matchLabels": {
                         "kubernetes.io/metadata.name": LOCAL_NS}}}}}
        old_paths = list(local.values["routes"]["inference-route"]["paths"])
        bad = "/openai/v1/chat/completions"
        before = cp.get("gateway.networking.k8s.io/v1", "HTTPRoute", "inference-route", LOCAL_NS)
        cp.apply([policy, binding])
        try:
            # the API server loads policies asynchronously: wait until a dry-run update is refused
            probe = {**before, "spec": {**before["spec"], "rules": [
                {**before["spec"]["rules"][0], "matches": [{"path": {"type": "PathPrefix", "value": bad}}]},
                *before["spec"]["rules"][1:]]}}
            route_path = cp.path("gateway.networking.k8s.io/v1", "HTTPRoute", "inference-route", LOCAL_NS)

            def refused() -> bool:
                try:
                    cp.request("PUT", route_path, probe, params={"dryRun": "All"})
                except ApiError as e:
                    return "under /v1/" in e.message
                return False
            cp.wait_for(refused, 30, "the admission policy to take effect")
            local.set_path("routes.inference-route.paths[1]", bad)
            with pytest.raises(EngineError) as e:
                local.timed("up (refused)", local.project.up)
            out = e.value.stdout + e.value.stderr
            assert "inference-route" in out and "this cluster serves the OpenAI API under /v1/ only" in out, out[-3000:]
            after = cp.get("gateway.networking.k8s.io/v1", "HTTPRoute", "inference-route", LOCAL_NS)
            assert after["spec"] == before["spec"] and after["metadata"]["generation"] == before["metadata"]["generation"]
        finally:
            local.set_path("routes.inference-route.paths[1]", old_paths[1])
            cp.delete([binding, policy])

    def test_a_rollout_step_goes_live_through_the_automation_api(self, local: Deployed):
        """Issue 15 item 2 on the real engine: the rollout controller writes a step's weights and
        status into the stack file (the edit `pulumi config set --path` makes) and its
        AutomationApply (pulumi.automation: select the project's stack, `up`, output streamed) puts
        them live — the HTTPRoute on the API server changes in place, in the same stack state the
        CLI's updates wrote. The program is served inline by the Automation API (the Python
        language host cannot be built here, pulumi_engine.py says why)."""
        local.require_up()
        from infershift.components.program import main as program
        from infershift.rollout.automation import AutomationApply
        from infershift.rollout.controller import Controller
        from infershift.rollout.metrics import MetricsPages

        file = local.project.stack_file
        rollout = {"route": "inference-route", "stable": "mymodel-pool-v1", "canary": "mymodel-pool-v2",
                   "steps": [25, 100], "dwell": "5s", "minRequests": 10,
                   "gates": {"ttftP90": {"tolerance": 0.5}, "errorRate": {"tolerance": 0.02}}}
        config_path.set_in_file(file, "infershift:rollouts", {"v2": rollout})
        updates_before = len(json.loads(local.project.pulumi("stack", "history", "--json", "-s", local.stack).stdout))
        lines: list[str] = []
        applier = AutomationApply(str(local.project.bin_dir.parent), local.project.env(), log=lines.append,
                                  program=program)
        controller = Controller(file, "v2", MetricsPages({}), applier, log=lines.append)
        t0 = time.monotonic()
        controller.write(25, "Progressing", 0, "step 1 of 2: canary at 25%")
        local.timings["automation api up (rollout step)"] = round(time.monotonic() - t0, 1)
        route = local.cp.get("gateway.networking.k8s.io/v1", "HTTPRoute", "inference-route", LOCAL_NS)
        weights = {b["name"]: b["weight"] for rule in route["spec"]["rules"] for b in rule["backendRefs"]
                   if len(rule["backendRefs"]) == 2}
        assert weights == {"mymodel-pool-v1": 75, "mymodel-pool-v2": 25}
        history = json.loads(local.project.pulumi("stack", "history", "--json", "-s", local.stack).stdout)
        assert len(history) == updates_before + 1
        h = history[0]
        assert h["kind"] == "update" and h["result"] == "succeeded", h
        # the route and the /v1/models listing (it carries the route's shares); nothing replaced
        assert h["resourceChanges"].get("update") == 2 and "replace" not in h["resourceChanges"], h["resourceChanges"]
        assert any(line.startswith("pulumi up: ") and "inference-route" in line for line in lines), lines[-20:]
        assert any("applied: pulumi up: succeeded" in line for line in lines), lines[-5:]
        status = local.project.config()["infershift:rollouts"]["v2"]["status"]
        assert (status["phase"], status["step"], status["canaryPercent"]) == ("Progressing", 0, 25)
        # the test's values follow the file (the destroy below compares against their render)
        local.values = {k.split(":", 1)[1]: v for k, v in local.project.config().items() if k.startswith("infershift:")}
        local.render = render(local.values, local.stack)

    def test_destroy_removes_everything(self, local: Deployed):
        local.require_up()
        local.timed("destroy", local.project.destroy)
        local.up_done = False
        assert local.project.resources() == []
        assert_gone(local.cp, local.render, LOCAL_NS, namespace_kept=True)


# --- the ack-canary seed scenario -----------------------------------------------------------------------------------

ACK_NS = "pulumi-ack-canary"
CHAT_TEMPLATE = "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}\n{% endfor %}<|assistant|>"


@pytest.fixture(scope="class")
def ack(control_plane, engine_bin, kwok_nodes):
    # a chat template for qwen, so that editing one can be shown
    root, d = _deployed(control_plane, engine_bin, "ack-canary", ACK_NS, create_namespace=True,
                        extra={"services.qwen.chatTemplate": CHAT_TEMPLATE})
    try:
        yield d
    finally:
        _teardown(d, root)


class TestAckCanaryScenario:
    def test_preview_creates_what_the_program_renders(self, ack: Deployed):
        p = ack.timed("preview (create)", ack.project.preview)
        rendered = rendered_keys(ack.render)
        assert engine_keys(p.ops("create")) == set(rendered)
        assert {s.op for s in p.steps} == {"create"}
        engine_objects = sorted(s.kind_name for s in p.ops("create") if s.type.startswith("kubernetes:"))
        assert engine_objects == sorted((o["kind"], o["metadata"]["name"]) for o in ack.render.objects)
        assert ("Namespace", ACK_NS) in engine_objects and ("ConfigMap", "qwen-chat-template") in engine_objects

    def test_up_on_gpu_nodes(self, ack: Deployed, kwok_nodes):
        cp = ack.cp
        ack.attempted = True
        ack.timed("up (create)", ack.project.up)
        ack.up_done = True
        assert_on_server(cp, ack.render)
        assert assert_deployments_ready(cp, ack.render) == {
            "qwen": 1, "deepseek-r1": 1, "mymodel-pool-v1-epp": 1, "mymodel-pool-v2-epp": 1, LISTING: 1}
        vllm = cp.list("v1", "Pod", ACK_NS, f"{contract.SERVICE_LABEL} in (qwen,deepseek-r1)")
        assert len(vllm) == 2 and {p["spec"]["nodeName"] for p in vllm} <= set(kwok_nodes)

    def test_route_weight_is_an_in_place_update_of_the_httproute(self, ack: Deployed):
        ack.require_up()
        before = ack.set_path("routes.inference-route.backends.mymodel-pool-v2", 50)
        p = ack.timed("preview (route weight)", ack.project.preview)
        updates = assert_only_updates(p, before, ack.render)
        assert sorted(s.kind_name for s in updates.values()) == [("ConfigMap", LISTING), ("HTTPRoute", "inference-route")]
        ack.timed("up (route weight)", ack.project.up)
        route = ack.cp.get("gateway.networking.k8s.io/v1", "HTTPRoute", "inference-route", ACK_NS)
        assert {b["name"]: b["weight"] for b in route["spec"]["rules"][0]["backendRefs"]} == \
            {"mymodel-pool-v1": 90, "mymodel-pool-v2": 50}

    def test_chat_template_and_replicas_edits_replace_nothing(self, ack: Deployed):
        ack.require_up()
        before = ack.render
        ack.set_path("services.qwen.chatTemplate", CHAT_TEMPLATE.replace("<|assistant|>", "<|assistant|>\n"))
        ack.set_path("services.deepseek-r1.replicas", 2)
        p = ack.timed("preview (chat template, replicas)", ack.project.preview)
        updates = assert_only_updates(p, before, ack.render)
        assert {s.kind_name for s in updates.values()} == {
            ("ConfigMap", "qwen-chat-template"), ("Deployment", "qwen"), ("Deployment", "deepseek-r1")}
        ack.timed("up (chat template, replicas)", ack.project.up)
        ready = assert_deployments_ready(ack.cp, ack.render)
        assert ready["deepseek-r1"] == 2
        cm = ack.cp.get("v1", "ConfigMap", "qwen-chat-template", ACK_NS)
        assert next(iter(cm["data"].values())).endswith("<|assistant|>\n")

    def test_destroy_removes_everything_and_the_namespace(self, ack: Deployed):
        ack.require_up()
        ack.timed("destroy", ack.project.destroy)
        ack.up_done = False
        assert ack.project.resources() == []
        assert_gone(ack.cp, ack.render, ACK_NS, namespace_kept=False)
