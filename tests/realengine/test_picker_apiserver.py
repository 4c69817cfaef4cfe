"""The picker against a real API server (issue 16 item 3, issue 12 item 7).

The real picker process (.venv-picker) runs with a kubeconfig for its own ServiceAccount, bound to
exactly the Role infershift's components render (components/endpoint_picker.py manifests: the
ServiceAccount, Role, RoleBinding and the ConfigMap's config.yaml are applied as rendered), and
the pool and model-routing objects as components/inference_pool.py and model_routing.py render
them. Pods matching the pool's selector are created and deleted; KWOK (controlplane.py) runs them
and gives them loopback IPs. What the picker makes of the cluster is read from its own log lines
("kubernetes endpoints", "kubernetes routing": logged on every change, k8s.py).
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest
import yaml
from controlplane import ApiError, pod_ready, require_or_skip
from picker_process import PickerProcess

from infershift import proc
from infershift.components import model_routing
from infershift.components.endpoint_picker import manifests as picker_manifests
from infershift.components.inference_pool import default_picker_config, pool_manifest
from infershift.devstack.ports import free_port

REPO = Path(__file__).resolve().parents[2]
PICKER_PY = REPO / ".venv-picker" / "bin" / "python"
NS = "picker-e2e"
POOL = "pool"
SA = f"{POOL}-epp"  # picker_name(): the ServiceAccount, Role and RoleBinding's name
PORT = free_port()  # the pool's target port: a simulator may listen on it at a pod's loopback IP


class Picker(PickerProcess):
    """One picker process (own process group), its JSON log lines."""

    def __init__(self, workdir: Path, kubeconfig: Path, config: dict, name: str = "picker"):
        super().__init__(workdir, kubeconfig, config, name)
        self.wait(lambda: self.find("picker started"), 30, "the picker started")

    def endpoints(self) -> list[str] | None:
        r = self.find("kubernetes endpoints")
        return sorted(r["endpoints"]) if r else None

    def routing(self) -> dict | None:
        return self.find("kubernetes routing")


def _pod(name: str, labels: dict[str, str]) -> dict:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": NS, "labels": labels},
            "spec": {"terminationGracePeriodSeconds": 0,
                     "containers": [{"name": "vllm", "image": "example.invalid/vllm:1",
                                     "ports": [{"containerPort": PORT}]}]}}


def _ready_ip(cp, name: str) -> str:
    pod = cp.wait_for(lambda: (p := cp.get("v1", "Pod", name, NS)) and pod_ready(p) and p, 60, f"pod {name} Ready", "kwok")
    return pod["status"]["podIP"]


@pytest.fixture(scope="module")
def cluster(control_plane):
    """The namespace with the pool, its routing objects and the picker's RBAC, as rendered."""
    cp = control_plane
    cp.ensure_namespace(NS)
    pool_args = {"selector": {"app": "model"}, "namespace": NS, "api_version": "v1", "target_ports": [PORT]}
    rendered = picker_manifests({"pool_name": POOL, "pool_api_version": "v1", "namespace": NS,
                                 "image": "example.invalid/picker:1",
                                 "config": default_picker_config(POOL, pool_args)})  # type: ignore[arg-type,typeddict-item]
    by_kind = {m["kind"]: m for m in rendered}
    cp.apply([by_kind[k] for k in ("ServiceAccount", "Role", "RoleBinding", "ConfigMap")])
    cp.apply(pool_manifest(POOL, pool_args))  # type: ignore[arg-type]
    config = yaml.safe_load(by_kind["ConfigMap"]["data"]["config.yaml"])
    return cp, config, by_kind["Role"]


@pytest.fixture(scope="module")
def picker(cluster, tmp_path_factory):
    cp, config, _ = cluster
    if not PICKER_PY.exists():
        require_or_skip("no .venv-picker for the picker process: run `make setup`")
    creds = cp.service_account_kubeconfig(NS, SA, expiration_seconds=3600, bound_secret="picker-token-1")
    t0 = time.monotonic()
    p = Picker(tmp_path_factory.mktemp("picker"), creds.kubeconfig, config)
    print(f"picker started in {time.monotonic() - t0:.1f} s")
    try:
        yield p, creds
    finally:
        p.stop()


def test_the_role_is_the_rendered_one_and_nothing_more(cluster):
    cp, _, role = cluster
    stored = cp.get("rbac.authorization.k8s.io/v1", "Role", SA, NS)
    assert stored is not None and stored["rules"] == role["rules"]
    binding = cp.get("rbac.authorization.k8s.io/v1", "RoleBinding", SA, NS)
    assert binding is not None and binding["subjects"] == [{"kind": "ServiceAccount", "name": SA, "namespace": NS}]


def test_discovers_pods_of_the_pool_selector(cluster, picker):
    cp, _, _ = cluster
    pk, _ = picker
    try:
        cp.apply([_pod("m-0", {"app": "model"}), _pod("m-1", {"app": "model"}), _pod("other", {"app": "other"})])
        ips = {n: _ready_ip(cp, n) for n in ("m-0", "m-1", "other")}
        want = sorted([f"m-0={ips['m-0']}:{PORT}", f"m-1={ips['m-1']}:{PORT}"])
        pk.wait(lambda: pk.endpoints() == want, 30, f"endpoints {want}")
        cp.delete(_pod("m-1", {}), grace_period_seconds=0)
        pk.wait(lambda: pk.endpoints() == [f"m-0={ips['m-0']}:{PORT}"], 30, "m-1 gone")
    finally:
        cp.delete([_pod(n, {}) for n in ("m-0", "m-1", "other")], grace_period_seconds=0)
    pk.wait(lambda: pk.endpoints() == [], 30, "no endpoints")


def _metric(pk: Picker, name: str) -> float | None:
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{pk.ports['metrics']}/metrics", timeout=5) as r:
            text = r.read().decode()
    except OSError:
        return None
    vals = [float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
            if line.startswith(name + "{") or line.startswith(name + " ")]
    return sum(vals) if vals else None


def test_scrapes_a_discovered_pod_at_its_kwok_address(cluster, picker, tmp_path):
    """A real model server (the simulator) on the address KWOK gave the pod: the picker scrapes it,
    so the pool counts one ready pod; deleting the Pod removes it though the server still answers."""
    cp, _, _ = cluster
    pk, _ = picker
    sim = None
    try:
        cp.apply(_pod("s-0", {"app": "model"}))
        ip = _ready_ip(cp, "s-0")
        with open(tmp_path / "sim.log", "ab") as out:
            sim = proc.spawn([sys.executable, "-m", "infershift.sim", "--model", "llama-8b", "--host", ip,
                              "--port", str(PORT)], out=out, cwd=str(REPO))
        pk.wait(lambda: pk.endpoints() == [f"s-0={ip}:{PORT}"], 30, "s-0 discovered")
        pk.wait(lambda: _metric(pk, "inference_pool_ready_pods") == 1, 30, "s-0 scraped, a ready pod")
        cp.delete(_pod("s-0", {}), grace_period_seconds=0)
        pk.wait(lambda: _metric(pk, "inference_pool_ready_pods") == 0 and pk.endpoints() == [], 30,
                "s-0 gone with its Pod")
        assert sim.poll() is None  # still serving: the Pod's deletion removed it, not a failed scrape
    finally:
        if sim is not None:
            proc.stop_group(sim, 5)
        cp.delete(_pod("s-0", {}), grace_period_seconds=0)


def test_model_routing_objects_change_live(cluster, picker):
    cp, _, _ = cluster
    pk, _ = picker

    def objs(weights: dict[str, int], criticality: str = "Critical"):
        return model_routing.manifests(POOL, "v1", NS, {"chat": {"targets": weights, "criticality": criticality}})
    try:
        cp.apply(objs({"llama-8b": 90, "llama-70b": 10}))
        pk.wait(lambda: (r := pk.routing()) and r["models"].get("chat") == ["llama-8b:90", "llama-70b:10"]
                and r["model_priorities"].get("chat") == 1, 30, "chat routed 90/10, priority 1")
        cp.apply(objs({"llama-8b": 50, "llama-70b": 50}, "Sheddable"))  # a weight shift, as `pulumi up` applies it
        pk.wait(lambda: (r := pk.routing()) and r["models"].get("chat") == ["llama-8b:50", "llama-70b:50"]
                and r["model_priorities"].get("chat") == -1, 30, "chat routed 50/50, priority -1")
    finally:
        cp.delete(objs({"x": 1}))
    pk.wait(lambda: (r := pk.routing()) and "chat" not in r["models"] and "chat" not in r["model_priorities"],
            30, "chat's routing gone")


def test_a_permission_the_role_lacks_is_refused(cluster, picker, tmp_path):
    cp, config, _ = cluster
    _, creds = picker
    s = cp.session_for_token(creds.token_path)
    cp.request("GET", f"/api/v1/namespaces/{NS}/pods", session=s)  # granted
    for path, what in [(f"/api/v1/namespaces/{NS}/secrets", 'cannot list resource "secrets"'),
                       ("/api/v1/namespaces/default/pods", 'cannot list resource "pods"'),
                       (f"/apis/inference.networking.k8s.io/v1/namespaces/{NS}/inferencepools",
                        'cannot list resource "inferencepools"')]:  # only its own pool, by name
        with pytest.raises(ApiError) as e:
            cp.request("GET", path, session=s)
        assert e.value.status == 403 and what in e.value.message, e.value
    with pytest.raises(ApiError) as e:
        cp.request("DELETE", f"/api/v1/namespaces/{NS}/pods/any", session=s)
    assert e.value.status == 403
    # the picker itself, told to follow a pool its Role does not name: the server refuses, it says so
    other = {**config, "pool": {**config["pool"], "name": "someone-elses-pool"}}
    pk2 = Picker(tmp_path, creds.kubeconfig, other, name="picker-other")
    try:
        rec = pk2.wait(lambda: next((r for r in pk2.records("watch failed; retrying")
                                     if r.get("kind") == "pool" and r.get("status") == 403), None),
                       30, "a 403 for the other pool")
        assert 'cannot list resource "inferencepools"' in rec["error"], rec
        assert rec["level"] == "error"
    finally:
        pk2.stop()


def test_token_rotation_and_revocation(cluster, picker):
    """The kubelet rewrites the projected token file; the old token is revoked (its bound Secret
    deleted). The picker's next requests must carry the new token."""
    cp, _, _ = cluster
    pk, creds = picker
    old = creds.token
    assert cp.token_review(old)["authenticated"] is True
    new = creds.rotate(expiration_seconds=3600, bound_secret="picker-token-2")
    cp.delete({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "picker-token-1", "namespace": NS}})
    cp.wait_for(lambda: not cp.token_review(old).get("authenticated"), 30, "the old token revoked")
    assert cp.token_review(new)["authenticated"] is True
    # New requests: the pool's selector changes, so the picker lists and watches pods anew; and
    # the API server restarts, so every watch reconnects. Only the new token can do either.
    try:
        cp.apply({**pool_manifest(POOL, {"selector": {"app": "model-b"}, "namespace": NS, "api_version": "v1",  # type: ignore[arg-type]
                                        "target_ports": [PORT]})})
        cp.apply(_pod("b-0", {"app": "model-b"}))
        ip = _ready_ip(cp, "b-0")
        pk.wait(lambda: pk.endpoints() == [f"b-0={ip}:{PORT}"], 30, "b-0 discovered with the new selector")
        cp.restart_apiserver(downtime=1.0)
        cp.apply(_pod("b-1", {"app": "model-b"}))
        ip1 = _ready_ip(cp, "b-1")
        pk.wait(lambda: pk.endpoints() == sorted([f"b-0={ip}:{PORT}", f"b-1={ip1}:{PORT}"]), 60,
                "b-1 discovered after the restart")
    finally:
        cp.delete([_pod(n, {}) for n in ("b-0", "b-1")], grace_period_seconds=0)
        cp.apply(pool_manifest(POOL, {"selector": {"app": "model"}, "namespace": NS, "api_version": "v1",  # type: ignore[arg-type]
                                      "target_ports": [PORT]}))
    assert cp.token_review(old).get("authenticated") is not True


def test_watches_resume_after_the_api_server_restarts(cluster, picker):
    cp, _, _ = cluster
    pk, _ = picker
    cp.apply(_pod("r-0", {"app": "model"}))
    ip0 = _ready_ip(cp, "r-0")
    pk.wait(lambda: pk.endpoints() == [f"r-0={ip0}:{PORT}"], 30, "r-0 discovered")
    failed_before = len(pk.records("watch failed; retrying"))
    try:
        cp.restart_apiserver(downtime=2.0)
        # every watch broke (the picker says so) ...
        pk.wait(lambda: len(pk.records("watch failed; retrying")) > failed_before, 30, "the watches' failure logged")
        # ... and follows again: pods and routing objects changed after the restart are seen
        cp.apply(_pod("r-1", {"app": "model"}))
        ip1 = _ready_ip(cp, "r-1")
        cp.apply(model_routing.manifests(POOL, "v1", NS, {"after": {"targets": {"llama-8b": 1}}}))
        pk.wait(lambda: pk.endpoints() == sorted([f"r-0={ip0}:{PORT}", f"r-1={ip1}:{PORT}"]), 60, "r-1 after the restart")
        pk.wait(lambda: (r := pk.routing()) and r["models"].get("after") == ["llama-8b:1"], 60,
                "a rewrite made after the restart")
        cp.delete(_pod("r-0", {}), grace_period_seconds=0)
        pk.wait(lambda: pk.endpoints() == [f"r-1={ip1}:{PORT}"], 30, "r-0's deletion after the restart")
    finally:
        cp.delete([_pod(n, {}) for n in ("r-0", "r-1")], grace_period_seconds=0)
        cp.delete(model_routing.manifests(POOL, "v1", NS, {"after": {"targets": {"llama-8b": 1}}}))


EXEC_PLUGIN = """#!{python}
# A credential plugin (client.authentication.k8s.io/v1): mints a token for the picker's
# ServiceAccount with the TokenRequest API (as admin) and prints it as an ExecCredential.
import json, os, ssl, sys, urllib.request
info = json.loads(os.environ["KUBERNETES_EXEC_INFO"])
ctx = ssl.create_default_context(cafile={ca!r})
ctx.load_cert_chain({cert!r}, {key!r})
req = urllib.request.Request({url!r}, method="POST", headers={{"Content-Type": "application/json"}},
    data=json.dumps({{"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                      "spec": {{"expirationSeconds": 600}}}}).encode())
status = json.load(urllib.request.urlopen(req, context=ctx, timeout=30))["status"]
with open({count!r}, "a") as f:
    f.write("run\\n")
print(json.dumps({{"apiVersion": info["apiVersion"], "kind": "ExecCredential",
                  "status": {{"token": status["token"], "expirationTimestamp": status["expirationTimestamp"]}}}}))
"""


def test_exec_plugin_kubeconfig(cluster, tmp_path):
    cp, config, _ = cluster
    count = tmp_path / "runs"
    plugin = tmp_path / "bin" / "mint-token"
    plugin.parent.mkdir()
    plugin.write_text(EXEC_PLUGIN.format(
        python=sys.executable, ca=str(cp.ca_file), cert=str(cp.pki["admin.crt"]), key=str(cp.pki["admin.key"]),
        url=f"{cp.server}/api/v1/namespaces/{NS}/serviceaccounts/{SA}/token", count=str(count)))
    plugin.chmod(0o755)
    kc = tmp_path / "kubeconfig"
    kc.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "exec",
        "clusters": [{"name": "c", "cluster": {"server": cp.server, "certificate-authority": str(cp.ca_file)}}],
        "contexts": [{"name": "exec", "context": {"cluster": "c", "user": "exec", "namespace": NS}}],
        "users": [{"name": "exec", "user": {"exec": {
            "apiVersion": "client.authentication.k8s.io/v1", "command": "./bin/mint-token",
            "interactiveMode": "Never"}}}]}))
    try:
        cp.apply(_pod("e-0", {"app": "model"}))
        ip = _ready_ip(cp, "e-0")
        pk = Picker(tmp_path, kc, config, name="picker-exec")
        try:
            pk.wait(lambda: pk.endpoints() == [f"e-0={ip}:{PORT}"], 30, "e-0 discovered through the exec plugin's token")
            assert count.read_text().count("run") == 1  # one token for all the watches: cached until it expires
            assert not pk.records("watch failed; retrying")
        finally:
            pk.stop()
    finally:
        cp.delete(_pod("e-0", {}), grace_period_seconds=0)
