"""GET /v1/models: what a cluster serves (the rendered listings ConfigMap, served by the rendered
Deployment's own command line, picker/listing.py) and what the local stack's Envoy answers are
one listing, computed once (components/models_listing.py); and that listing agrees with the
local stack's own derivation from the objects (envoy_config.models_list, the fallback for YAML
without the listing objects) for every stack."""
from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from devstack_helpers import REPO

from infershift import contract, spec
from infershift.devstack import envoy_config, manifests, render, translate
from infershift.devstack.ports import free_port
from infershift.spec.config_path import set_many_in_file

PICKER_PYTHON = REPO / ".venv-picker" / "bin" / "python"


def _labelled(objects: list[dict]) -> list[dict]:
    return [o for o in objects if contract.LISTING_LABEL in ((o.get("metadata") or {}).get("labels") or {})]


def _one(objects: list[dict], kind: str) -> dict:
    [obj] = [o for o in _labelled(objects) if o["kind"] == kind]
    return obj


def _route_keys(objects: list[dict]) -> dict[str, str]:
    """Listener -> the listing key its rendered /v1/models rule sets."""
    out = {}
    for r in _labelled(objects):
        if r["kind"] != "HTTPRoute":
            continue
        rule, management = r["spec"]["rules"]
        # Core matches only (GKE's gateway has no method matching): the server answers the methods
        assert rule["matches"] == [{"path": {"type": "Exact", "value": "/v1/models"}}]
        # the model servers' management paths go to the listing server too, which answers 404
        assert management["matches"] == [{"path": {"type": "Exact", "value": p}} for p in contract.MANAGEMENT_PATHS] \
            + [{"path": {"type": "PathPrefix", "value": p}} for p in contract.MANAGEMENT_PREFIXES]
        assert management["backendRefs"] == rule["backendRefs"] and "filters" not in management
        [header] = rule["filters"][0]["requestHeaderModifier"]["set"]
        assert header["name"] == contract.LISTING_HEADER
        out[r["spec"]["parentRefs"][0]["sectionName"]] = header["value"]
    return out


def _fallback(objects: list[dict]) -> dict[str, dict]:
    """The local stack's own listing of the objects without the listing objects: listing key -> list."""
    plane = render.fixed_plane(translate.translate([o for o in objects if o not in _labelled(objects)]))
    out = {}
    for lst in plane.listeners:
        for vh in envoy_config.gateway_routes(plane, lst.key)["virtual_hosts"]:
            for r in vh["routes"]:
                if r["name"] == "models":
                    key = lst.key if vh["name"] == "any-host" else f"{lst.key}/{vh['name']}"
                    out[key] = json.loads(r["direct_response"]["body"]["inline_string"])
    return out


@pytest.mark.parametrize("name", spec.stack_names())
def test_the_rendered_listing_is_what_the_local_stack_derives_from_the_objects(name):
    objects = manifests.render_stack_file(spec.stack_path(name)).items
    rendered = json.loads(_one(objects, "ConfigMap")["data"][contract.LISTING_FILE])
    assert rendered and rendered == _fallback(objects)
    # the local stack answers the rendered rules with the rendered listing, not its own
    gw = translate.translate(objects)
    listing_rules = [r for p in gw.ports for r in p.rules if r.listing is not None]
    assert {json.dumps(v) for v in rendered.values()} == {r.listing for r in listing_rules}
    assert not [w for w in gw.warnings if "listing" in w]
    assert not [i for i in gw.ignored if "models" in i]


class ListingServer:
    """The rendered Deployment's container, run here: its command and args, with the ConfigMap's
    data written where its volume is mounted (a directory of ours), on a free loopback port."""

    def __init__(self, objects: list[dict], directory: Path):
        deployment, self.configmap = _one(objects, "Deployment"), _one(objects, "ConfigMap")
        [c] = deployment["spec"]["template"]["spec"]["containers"]
        [mount] = c["volumeMounts"]
        self.mount, self.dir = mount["mountPath"], directory
        argv = [*c["command"], *c["args"]]
        assert argv[0] == "python"
        self.port = free_port()
        flags = {"--port": str(self.port), "--host": "127.0.0.1"}
        argv = [str(PICKER_PYTHON), *argv[1:]]  # the picker image's environment
        for i, a in enumerate(argv[:-1]):
            if a in flags:
                argv[i + 1] = flags[a]
            elif a == "--file":
                assert argv[i + 1].startswith(self.mount + "/")
                argv[i + 1] = str(directory / argv[i + 1][len(self.mount) + 1:])
        self.write(self.configmap)
        self.proc = subprocess.Popen(argv, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.url = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 20
        while True:
            assert self.proc.poll() is None, self.proc.stderr.read().decode() if self.proc.stderr else ""
            try:
                if httpx.get(self.url + "/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the listing server did not get ready"
            time.sleep(0.1)

    def write(self, configmap: dict) -> None:
        """As the kubelet updates a ConfigMap volume: each key's file replaced atomically."""
        for key, text in configmap["data"].items():
            tmp = self.dir / f".{key}.tmp"
            tmp.write_text(text)
            os.replace(tmp, self.dir / key)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def listing_server(local_stack, tmp_path):
    server = ListingServer(local_stack.objects.items, tmp_path)
    yield server
    server.stop()


@pytest.mark.skipif(not PICKER_PYTHON.exists(), reason="needs .venv-picker (make setup)")
def test_the_listing_server_answers_as_the_local_gateway_does(local_stack, listing_server):
    keys = _route_keys(local_stack.objects.items)
    assert set(keys) == {"llm-gw", "lora-gw", "reasoning-gw"}

    def both(listener: str) -> tuple[httpx.Response, httpx.Response]:
        deployed = httpx.get(listing_server.url + "/v1/models", headers={contract.LISTING_HEADER: keys[listener]},
                             timeout=10)
        local = httpx.get(local_stack.url(listener) + "/v1/models", timeout=10)
        return deployed, local

    for listener in keys:
        deployed, local = both(listener)
        assert deployed.status_code == local.status_code == 200
        assert deployed.headers["content-type"] == local.headers["content-type"] == "application/json"
        assert deployed.content == local.content, listener  # byte for byte
        listing = deployed.json()
        assert listing["object"] == "list" and listing["data"]
    # HEAD and the other methods, through the gateway as from the server
    for method in ("HEAD", "POST", "DELETE", "PUT"):
        deployed = httpx.request(method, listing_server.url + "/v1/models?x=1", json={} if method == "POST" else None,
                                 headers={contract.LISTING_HEADER: keys["llm-gw"]}, timeout=10)
        local = httpx.request(method, local_stack.url("llm-gw") + "/v1/models?x=1",
                              json={} if method == "POST" else None, timeout=10)
        assert deployed.status_code == local.status_code == (200 if method == "HEAD" else 405), method
        assert deployed.content == local.content, method
        assert deployed.headers["content-type"] == local.headers["content-type"] == "application/json"
        if method == "HEAD":
            assert deployed.content == b"" and int(deployed.headers["content-length"]) > 0
        else:
            assert deployed.headers["allow"] == local.headers["allow"] == "GET, HEAD"
            assert deployed.json()["error"]["code"] == "method_not_allowed"
    for path, headers in (("/v1/chat/completions", {}), ("/v1/models", {contract.LISTING_HEADER: "nope"}),
                          ("/v1/models", {})):  # several listings: the header must name one
        r = httpx.get(listing_server.url + path, headers=headers)
        assert r.status_code == 404 and r.headers["content-type"] == "application/json", (path, headers)
        assert r.json()["error"]["type"] == "invalid_request_error"
    # the management paths the rendered routes send to the listing server: 404 JSON from it, as from
    # the local gateway (a catch-all route would otherwise reach the model servers' management API)
    for path in (*contract.MANAGEMENT_PATHS, "/admin", "/admin/faults"):
        deployed = httpx.post(listing_server.url + path, json={"lora_name": "x", "lora_path": "/etc"}, timeout=10)
        local = httpx.post(local_stack.url("llm-gw") + path, json={"lora_name": "x", "lora_path": "/etc"}, timeout=10)
        assert deployed.status_code == local.status_code == 404, path
        assert deployed.json()["error"]["code"] == local.json()["error"]["code"] == "route_not_found", path

    # A weight edit: the local stack applies it live; a cluster gets a new ConfigMap, which the
    # kubelet writes into the volume, and the server reads it again.
    set_many_in_file(local_stack.stack_file, {"routes.inference-route.backends.mymodel-pool-v1": 50,
                                              "routes.inference-route.backends.mymodel-pool-v2": 50})
    assert local_stack.apply().ok
    listing_server.write(_one(local_stack.objects.items, "ConfigMap"))
    deadline = time.monotonic() + 20
    while True:
        deployed, local = both("llm-gw")
        if deployed.content == local.content and b'"share": 0.5' in deployed.content:
            break
        assert time.monotonic() < deadline, (deployed.text, local.text)
        time.sleep(0.2)
    mymodel = {m["id"]: m for m in deployed.json()["data"]}["mymodel"]
    assert {t["pool"]: t["share"] for t in mymodel["targets"]} == {"mymodel-pool-v1": 0.5, "mymodel-pool-v2": 0.5}


@pytest.mark.skipif(not PICKER_PYTHON.exists(), reason="needs .venv-picker (make setup)")
def test_the_listing_server_refuses_a_bad_file_and_keeps_the_last_good_one(tmp_path):
    path = tmp_path / "listings.json"
    path.write_text('{"a": {"object": "list", "data": [{"id": 1}]}}')
    run = subprocess.run([str(PICKER_PYTHON), "-m", contract.LISTING_MODULE, "--file", str(path), "--port", "0"],
                         cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True,
                         timeout=20)
    assert run.returncode == 2 and "['a'].data[0] is not a model" in run.stderr
    good = {"a": {"object": "list", "data": [{"id": "m", "object": "model"}]}}
    path.write_text(json.dumps(good))
    port = free_port()
    proc = subprocess.Popen([str(PICKER_PYTHON), "-m", contract.LISTING_MODULE, "--file", str(path),
                             "--port", str(port)], cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        url = f"http://127.0.0.1:{port}/v1/models"
        deadline = time.monotonic() + 20
        while True:
            try:
                r = httpx.get(url, timeout=2)  # one listing: no header needed
                break
            except httpx.TransportError:
                assert proc.poll() is None and time.monotonic() < deadline
                time.sleep(0.1)
        assert r.status_code == 200 and r.json() == good["a"]
        path.write_text("{not json")
        r = httpx.get(url, timeout=2)
        assert r.status_code == 200 and r.json() == good["a"]
    finally:
        proc.terminate()
        proc.wait(10)
    assert "reload failed" in proc.stderr.read().decode()
