"""Kubernetes access without a cluster: kubeconfig parsing, TLS material, token refresh (token file,
exec plugin), the pod label selector, and InferenceObjective priorities by their model-name
annotation. Against a real API server: tests/realengine/test_picker_apiserver.py."""
from __future__ import annotations

import base64
import os
import random
import shutil
import subprocess
import sys

import pytest

from infershift.components.model_routing import manifests
from infershift.picker.config import parse_config
from infershift.picker.errors import ConfigError
from infershift.picker.k8s import (KubeDiscovery, label_selector, list_url, watched_urls, merge_routing, model_priorities_from,
                        watch_url)
from infershift.picker.kube_auth import from_kubeconfig, in_cluster, ssl_context
from infershift.picker.pool import Pool
from bench.pickerbench.procs import REPO
from infershift.picker.routing import resolve
from test_picker_k8s import PODS, POOL_V1


def kubeconfig(tmp_path, users: dict, current="dev", extra_clusters=None) -> str:
    import yaml

    doc = {"apiVersion": "v1", "kind": "Config", "current-context": current,
           "clusters": [{"name": "c1", "cluster": {"server": "https://10.0.0.1:6443",
                                                   "certificate-authority": "ca.pem"}},
                        *(extra_clusters or [])],
           "contexts": [{"name": n, "context": {"cluster": u.pop("_cluster", "c1"), "user": n,
                                                **({"namespace": u.pop("_ns")} if "_ns" in u else {})}}
                        for n, u in users.items()],
           "users": [{"name": n, "user": u} for n, u in users.items()]}
    p = tmp_path / "kubeconfig"
    p.write_text(yaml.safe_dump(doc))
    return str(p)


def test_token_and_token_file_and_context_choice(tmp_path):
    (tmp_path / "tok").write_text("from-file\n")
    path = kubeconfig(tmp_path, {"dev": {"token": "abc", "_ns": "llm"}, "ci": {"tokenFile": "tok"}})
    c = from_kubeconfig(path)
    assert (c.server, c.token, c.namespace) == ("https://10.0.0.1:6443", "abc", "llm")
    assert c.ca_file == str(tmp_path / "ca.pem")  # relative to the kubeconfig, as kubectl does
    assert c.headers() == {"Authorization": "Bearer abc"}
    assert from_kubeconfig(path, "ci").token == "from-file"


@pytest.mark.parametrize("users, context, message", [
    ({"dev": {"exec": {"command": "gke-gcloud-auth-plugin"}}}, None, "exec.apiVersion None is not one of"),
    ({"dev": {"exec": {"apiVersion": "client.authentication.k8s.io/v1", "command": "p",
                       "interactiveMode": "Always"}}}, None, "exec.interactiveMode is Always"),
    ({"dev": {"auth-provider": {"name": "gcp"}}}, None, "uses auth-provider"),
    ({"dev": {"token": "x"}}, "prod", "no context named 'prod'"),
    ({"dev": {"client-certificate": "a.crt"}}, None, "without its key"),
    ({"dev": {}}, None, "neither a token, an exec plugin nor a client certificate"),
    ({"dev": {"client-certificate-data": "%%%", "client-key-data": "%%%"}}, None, "not valid base64"),
    ({"dev": {"token": "x", "_cluster": "nowhere"}}, None, "no cluster named 'nowhere'"),
])
def test_kubeconfig_errors_name_the_problem(tmp_path, users, context, message):
    with pytest.raises(ConfigError, match=message):
        from_kubeconfig(kubeconfig(tmp_path, users), context)


def test_missing_file_and_not_in_cluster(tmp_path):
    with pytest.raises(ConfigError, match="cannot read kubeconfig"):
        from_kubeconfig(str(tmp_path / "nope"))
    with pytest.raises(ConfigError, match="KUBERNETES_SERVICE_HOST"):
        in_cluster({})
    sa = tmp_path / "sa"
    sa.mkdir()
    (sa / "token").write_text("sa-token\n")
    c = in_cluster({"KUBERNETES_SERVICE_HOST": "fd00::1", "KUBERNETES_SERVICE_PORT": "443"}, str(sa))
    assert (c.server, c.token, c.ca_file) == ("https://[fd00::1]:443", "sa-token", str(sa / "ca.crt"))


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command to make a test CA")
def test_client_certificate_and_ca_data_load_into_tls(tmp_path):
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=test",
                    "-keyout", str(tmp_path / "k.pem"), "-out", str(tmp_path / "c.pem")],
                   check=True, capture_output=True, timeout=60)
    cert, key = (tmp_path / "c.pem").read_bytes(), (tmp_path / "k.pem").read_bytes()
    b64 = lambda b: base64.b64encode(b).decode()  # noqa: E731
    path = kubeconfig(tmp_path, {"dev": {"client-certificate-data": b64(cert), "client-key-data": b64(key)}},
                      extra_clusters=[{"name": "c2", "cluster": {"server": "https://k8s.example:443",
                                                                 "certificate-authority-data": b64(cert)}}])
    import yaml

    doc = yaml.safe_load(open(path))
    doc["contexts"][0]["context"]["cluster"] = "c2"
    open(path, "w").write(yaml.safe_dump(doc))
    c = from_kubeconfig(path)
    assert c.cert_data == cert and c.key_data == key and c.ca_data == cert.decode() and c.token is None
    ctx = ssl_context(c)
    assert ctx.verify_mode.name == "CERT_REQUIRED" and ctx.cert_store_stats()["x509_ca"] == 1
    # a cert that is not a certificate is refused at start, not at the first request
    bad = from_kubeconfig(path).__class__(**{**c.__dict__, "cert_data": b"not a cert"})
    with pytest.raises(ConfigError, match="cannot be loaded"):
        ssl_context(bad)


def test_pod_watch_uses_the_pools_label_selector():
    assert label_selector({"app": "qwen", "tier": "gpu"}) == "app=qwen,tier=gpu"
    url = list_url("https://k:6443", "/api/v1/namespaces/ns/pods", "app=qwen,tier=gpu")
    assert url == "https://k:6443/api/v1/namespaces/ns/pods?labelSelector=app%3Dqwen%2Ctier%3Dgpu"
    assert watch_url(url, "42").endswith("labelSelector=app%3Dqwen%2Ctier%3Dgpu&watch=1&allowWatchBookmarks=true"
                                         "&resourceVersion=42")
    assert watch_url("https://k/apis/x", "7") == "https://k/apis/x?watch=1&allowWatchBookmarks=true&resourceVersion=7"
    cfg = parse_config({"pool": {"name": "qwen-pool"}, "kubernetes": {}})
    kd = KubeDiscovery(Pool(cfg, clock=lambda: 0.0, rng=random.Random(1)), cfg)
    kd.stores["pool"]["qwen-pool"] = POOL_V1
    kd.stores["pods"] = {p["metadata"]["name"]: p for p in PODS}
    kd._recompute()
    assert kd.selector == "app=qwen" and kd.selector_changed.is_set()
    assert sorted(kd.pool.endpoints) == ["10.1.0.5:8000", "10.1.0.5:8001", "[fd00::3]:8000", "[fd00::3]:8001"]
    kd.selector_changed.clear()
    kd._recompute()  # same selector: the pod watch keeps running
    assert not kd.selector_changed.is_set()


def test_objective_priority_applies_to_its_annotated_model():
    model = "meta-llama/Llama-3.1-8B"  # both pools of a canary serve it; objective names differ per pool
    objs = (manifests("llama-v1", "v1", "default", {model: {"criticality": "Sheddable"}, "chat": {"priority": 2}})
            + manifests("llama-v2", "v1", "default", {model: {"criticality": "Critical"}}))
    objectives = [o for o in objs if o["kind"] == "InferenceObjective"]
    assert len({o["metadata"]["name"] for o in objectives}) == 3
    assert model_priorities_from(objectives, "llama-v1") == {model: -1, "chat": 2}
    assert model_priorities_from(objectives, "llama-v2") == {model: 1}
    cfg = merge_routing(parse_config({"pool": {"name": "llama-v1"}, "kubernetes": {}}), [], [], objectives)
    assert cfg.model_priorities == {model: -1, "chat": 2}
    # the objective makes the model sheddable without any header; a header naming another objective wins
    eps = []
    r = resolve(model, {"x-gateway-model-name-rewrite": model}, cfg.models, cfg.objectives, None, eps,
                random.Random(1), cfg.model_priorities)
    assert r.sheddable
    critical = next(o["metadata"]["name"] for o in objectives if o["spec"]["priority"] == 2)
    r = resolve(model, {"x-gateway-model-name-rewrite": model, "x-gateway-inference-objective": critical},
                cfg.models, cfg.objectives, None, eps, random.Random(1), cfg.model_priorities)
    assert not r.sheddable
    other = merge_routing(parse_config({"pool": {"name": "llama-v2"}, "kubernetes": {}}), [], [], objectives)
    assert not resolve(model, {"x-gateway-model-name-rewrite": model}, other.models, other.objectives, None, eps,
                       random.Random(1), other.model_priorities).sheddable


def test_cli_kube_flags_errors_exit_2(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("pool: {name: p}\nkubernetes: {}\n")
    env = dict(os.environ, PYTHONPATH=str(REPO))
    for extra, message in ((["--kube-context", "dev"], "--kube-context needs --kubeconfig"),
                           (["--kubeconfig", str(tmp_path / "missing")], "cannot read kubeconfig")):
        r = subprocess.run([sys.executable, "-m", "infershift.picker", "--config", str(cfg), "--grpc-port", "0",
                            "--health-port", "0", "--metrics-port", "0", *extra],
                           capture_output=True, text=True, timeout=60, cwd=str(REPO), env=env)
        assert r.returncode == 2 and message in r.stderr, r.stderr


def test_watches_only_its_pool_and_its_pool_apis_routing_kinds():
    v1 = watched_urls("https://k", "inference.networking.k8s.io/v1", "ns", "llm-pool")
    assert v1 == {
        "pool": "https://k/apis/inference.networking.k8s.io/v1/namespaces/ns/inferencepools"
                "?fieldSelector=metadata.name%3Dllm-pool",
        "rewrites": "https://k/apis/llm-d.ai/v1alpha2/namespaces/ns/inferencemodelrewrites",
        "objectives": "https://k/apis/llm-d.ai/v1alpha2/namespaces/ns/inferenceobjectives",
    }
    v1alpha2 = watched_urls("https://k", "inference.networking.x-k8s.io/v1alpha2", "ns", "mymodel-pool-v1")
    assert v1alpha2 == {
        "pool": "https://k/apis/inference.networking.x-k8s.io/v1alpha2/namespaces/ns/inferencepools"
                "?fieldSelector=metadata.name%3Dmymodel-pool-v1",
        "models": "https://k/apis/inference.networking.x-k8s.io/v1alpha2/namespaces/ns/inferencemodels",
    }


def test_token_file_is_reread_after_a_minute_or_a_401(tmp_path):
    import asyncio

    from infershift.picker.kube_auth import TokenSource

    (tmp_path / "tok").write_text("one\n")
    c = from_kubeconfig(kubeconfig(tmp_path, {"dev": {"tokenFile": "tok"}}))
    now = [0.0]
    ts = TokenSource(c, clock=lambda: now[0])

    async def go():
        assert await ts.token() == "one"
        (tmp_path / "tok").write_text("two\n")  # the kubelet rotated the projected token
        now[0] = 59.0
        assert await ts.token() == "one"      # cached up to a minute, as client-go
        now[0] = 60.0
        assert await ts.headers() == {"Authorization": "Bearer two"}
        (tmp_path / "tok").write_text("three\n")
        ts.invalidate()                       # a 401: read again at once
        assert await ts.token() == "three"
        os.remove(tmp_path / "tok")           # mid-rotation: keep the last token
        ts.invalidate()
        assert await ts.token() == "three"
        assert ts.refreshes == 2
    asyncio.run(go())


def _plugin(tmp_path, body: str) -> str:
    p = tmp_path / "bin" / "plugin"
    p.parent.mkdir(exist_ok=True)
    p.write_text(f"#!{sys.executable}\n{body}")
    p.chmod(0o755)
    return "./bin/plugin"  # relative to the kubeconfig's folder, as client-go resolves it


def test_exec_plugin_token_is_cached_until_expiry_and_rerun_after_a_401(tmp_path):
    import asyncio
    import datetime
    import json

    from infershift.picker.kube_auth import TokenSource

    body = """import json, os, sys
info = json.loads(os.environ["KUBERNETES_EXEC_INFO"])
assert info["kind"] == "ExecCredential" and info["spec"]["interactive"] is False, info
n = int(open(sys.argv[1]).read()) + 1 if os.path.exists(sys.argv[1]) else 1
open(sys.argv[1], "w").write(str(n))
print(json.dumps({"apiVersion": info["apiVersion"], "kind": "ExecCredential",
                  "status": {"token": f"tok-{n}-{os.environ['EXTRA']}-{info['spec']['cluster']['server']}",
                             "expirationTimestamp": "2030-01-01T00:00:00Z"}}))
"""
    count = tmp_path / "count"
    exec_ = {"apiVersion": "client.authentication.k8s.io/v1", "command": _plugin(tmp_path, body),
             "args": [str(count)], "env": [{"name": "EXTRA", "value": "x"}], "provideClusterInfo": True}
    c = from_kubeconfig(kubeconfig(tmp_path, {"dev": {"exec": exec_}}))
    wall = [1.0e9]
    ts = TokenSource(c, wall=lambda: wall[0])

    async def go():
        assert await ts.token() == "tok-1-x-https://10.0.0.1:6443"
        assert await ts.token() == "tok-1-x-https://10.0.0.1:6443"   # cached: the plugin ran once
        ts.invalidate()
        assert await ts.token() == "tok-2-x-https://10.0.0.1:6443"   # re-run after a 401
        wall[0] = datetime.datetime(2030, 1, 1, tzinfo=datetime.timezone.utc).timestamp()
        assert await ts.token() == "tok-3-x-https://10.0.0.1:6443"   # re-run at its expiry
    asyncio.run(go())
    assert count.read_text() == "3"
    # what a broken plugin says
    for out, message in [("print('nope')", "not an ExecCredential"),
                         ("import sys; sys.stderr.write('denied'); sys.exit(3)", "exited with 3: denied"),
                         (f"print({json.dumps(json.dumps({'apiVersion': 'client.authentication.k8s.io/v1', 'kind': 'ExecCredential', 'status': {'clientCertificateData': 'x'}}))})",
                          "status.clientCertificateData")]:
        exec_["command"] = _plugin(tmp_path, out)
        ts = TokenSource(from_kubeconfig(kubeconfig(tmp_path, {"dev": dict(exec=dict(exec_))})))
        with pytest.raises(ConfigError, match=message):
            asyncio.run(ts.token())
