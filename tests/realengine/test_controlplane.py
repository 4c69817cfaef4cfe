"""The local control plane itself (controlplane.py): what the other real-engine tests rely on.

Started once per session by the `control_plane` fixture (conftest.py); the last test starts and
stops one more, to show that stop() leaves no process behind.
"""
from __future__ import annotations

import copy
import ipaddress
import os
import time
from pathlib import Path

import controlplane
import pytest
import yaml
from controlplane import CRDS_DIR, ApiError, ControlPlane, pod_ready

NS = "cp-tests"


def _socket_inodes(pid: int) -> set[str]:
    out = set()
    fd_dir = Path(f"/proc/{pid}/fd")
    for fd in fd_dir.iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            out.add(target[len("socket:["):-1])
    return out


def _listening(pids: set[int]) -> list[tuple[str, int]]:
    """(address, port) of every TCP socket in LISTEN state that one of `pids` holds (/proc/net/tcp{,6})."""
    inodes = set().union(*(_socket_inodes(p) for p in pids))
    found = []
    for table, size in (("/proc/net/tcp", 4), ("/proc/net/tcp6", 16)):
        for line in Path(table).read_text().splitlines()[1:]:
            f = line.split()
            if f[3] != "0A" or f[9] not in inodes:  # 0A: TCP_LISTEN
                continue
            hexaddr, hexport = f[1].split(":")
            raw = bytes.fromhex(hexaddr)
            # the kernel prints each 32-bit word in host (little-endian) order
            raw = b"".join(raw[i:i + 4][::-1] for i in range(0, size, 4))
            found.append((str(ipaddress.ip_address(raw)), int(hexport, 16)))
    return found


def _group_pids(pgids: set[int]) -> set[int]:
    """Every live process whose process group is one of `pgids`."""
    out = set()
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) ": state ppid pgrp ...
        if fields[0] != "Z" and int(fields[2]) in pgids:
            out.add(int(d.name))
    return out


def test_runs_on_loopback_only_with_the_pinned_version(control_plane):
    cp = control_plane
    pids = {c.p.pid for c in cp.components.values() if c.p is not None}
    assert set(cp.components) == {"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok"}
    assert all(c.alive() for c in cp.components.values())
    listening = _listening(_group_pids(pids))
    ports = {p for _, p in listening}
    assert {cp.port, cp.etcd_port, cp.etcd_peer_port} <= ports, listening
    assert all(ipaddress.ip_address(a).is_loopback for a, _ in listening), listening
    version = cp.request("GET", "/version")
    pinned = next(line.split()[1] for line in controlplane.BUILD_SCRIPT.with_name("go.mod").read_text().splitlines()
                  if line.strip().startswith("k8s.io/kubernetes "))
    assert version["gitVersion"] == pinned
    # RBAC is on: an authenticated user without bindings is refused by the server
    cp.ensure_namespace(NS)
    cp.apply({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "nobody", "namespace": NS}})
    creds = cp.service_account_kubeconfig(NS, "nobody", expiration_seconds=600)
    with pytest.raises(ApiError) as e:
        cp.request("GET", f"/api/v1/namespaces/{NS}/pods", session=cp.session_for_token(creds.token))
    assert e.value.status == 403 and "system:serviceaccount:cp-tests:nobody" in e.value.message


def test_every_shared_crd_is_established(control_plane):
    cp = control_plane
    expected = sorted(d["metadata"]["name"] for p in CRDS_DIR.rglob("*.yaml")
                      for d in yaml.safe_load_all(p.read_text()) if d and d.get("kind") == "CustomResourceDefinition")
    assert len(expected) >= 12
    on_server = {c["metadata"]["name"]: c for c in cp.list("apiextensions.k8s.io/v1", "CustomResourceDefinition")}
    for name in expected:
        conds = {c["type"]: c["status"] for c in on_server[name]["status"]["conditions"]}
        assert conds.get("Established") == "True" and conds.get("NamesAccepted") == "True", (name, conds)
    # and the groups are served: one list per kind of the Inference Extension and llm-d
    for api, kind in [("inference.networking.k8s.io/v1", "InferencePool"),
                      ("inference.networking.x-k8s.io/v1alpha2", "InferenceModel"),
                      ("llm-d.ai/v1alpha2", "InferenceObjective"), ("llm-d.ai/v1alpha2", "InferenceModelRewrite"),
                      ("gateway.networking.k8s.io/v1", "HTTPRoute")]:
        assert cp.list(api, kind, namespace="default") == []


POOL = {"apiVersion": "inference.networking.k8s.io/v1", "kind": "InferencePool",
        "metadata": {"name": "p", "namespace": NS},
        "spec": {"selector": {"matchLabels": {"app": "m"}}, "targetPorts": [{"number": 8000}],
                 "endpointPickerRef": {"name": "p-epp", "port": {"number": 9002}}}}
ROUTE = {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
         "metadata": {"name": "r", "namespace": NS},
         "spec": {"parentRefs": [{"name": "gw"}],
                  "rules": [{"backendRefs": [{"group": "", "kind": "Service", "name": "svc", "port": 80}]}]}}


@pytest.mark.parametrize("obj, mutate, message", [
    (POOL, lambda o: o["spec"]["endpointPickerRef"].pop("port"),
     "port is required when kind is 'Service' or unspecified"),                         # CEL rule
    (POOL, lambda o: o["spec"].update(targetPorts=[{"number": 8000}, {"number": 8000}]),
     "port number must be unique"),                                                     # CEL rule
    (POOL, lambda o: o["spec"].update(targetPorts=[{"number": 70000}]),
     "spec.targetPorts[0].number: Invalid value: 70000"),                              # schema maximum
    (ROUTE, lambda o: o["spec"]["rules"][0]["backendRefs"][0].pop("port"),
     "Must have port for Service reference"),                                           # CEL rule
    (ROUTE, lambda o: o["spec"]["rules"][0].update(matches=[{"path": {"type": "Glob", "value": "/v1"}}]),
     'spec.rules[0].matches[0].path.type: Unsupported value: "Glob"'),                 # schema enum
], ids=["pool-picker-port", "pool-duplicate-port", "pool-port-range", "route-backend-port", "route-path-type"])
def test_the_server_rejects_invalid_objects_with_its_message(control_plane, obj, mutate, message):
    cp = control_plane
    cp.ensure_namespace(NS)
    try:
        cp.apply(obj)  # the valid object is accepted, so what follows is the mutation's doing
        bad = copy.deepcopy(obj)
        bad["metadata"]["name"] += "-bad"
        mutate(bad)
        with pytest.raises(ApiError) as e:
            cp.apply(bad)
        assert e.value.status == 422 and e.value.reason == "Invalid", e.value
        assert message in e.value.message, e.value.message
        assert cp.get(bad["apiVersion"], bad["kind"], bad["metadata"]["name"], NS) is None
    finally:
        cp.delete(obj)


def test_a_deployment_becomes_ready_through_kwok(control_plane):
    cp = control_plane
    cp.ensure_namespace(NS)
    dep = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "model", "namespace": NS},
           "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "model"}},
                    "template": {"metadata": {"labels": {"app": "model"}},
                                 "spec": {"containers": [{"name": "m", "image": "example.invalid/model:1",
                                                          "ports": [{"containerPort": 8000}]}]}}}}
    try:
        cp.apply(dep)
        t0 = time.monotonic()
        got = cp.wait_for(lambda: (d := cp.get("apps/v1", "Deployment", "model", NS))
                          and (d.get("status") or {}).get("readyReplicas") == 2 and d, 60,
                          "the Deployment's 2 replicas Ready", "kwok")
        print(f"Deployment Ready after {time.monotonic() - t0:.1f} s")
        conds = {c["type"]: c["status"] for c in got["status"]["conditions"]}
        assert conds["Available"] == "True"
        pods = cp.list("v1", "Pod", NS, "app=model")
        assert len(pods) == 2 and all(pod_ready(p) for p in pods)
        for p in pods:  # scheduled onto a KWOK node, with an address from that node's loopback pod CIDR
            node = cp.get("v1", "Node", p["spec"]["nodeName"])
            assert node is not None and node["metadata"]["annotations"].get("kwok.x-k8s.io/node") == "fake"
            ip = ipaddress.ip_address(p["status"]["podIP"])
            assert ip.is_loopback and ip in ipaddress.ip_network(node["spec"]["podCIDR"])
    finally:
        cp.delete(dep)
    cp.wait_for(lambda: not cp.list("v1", "Pod", NS, "app=model"), 60, "the pods gone (garbage collection)")


def test_stop_leaves_no_processes_and_no_files(control_plane_binaries):
    cp = ControlPlane(control_plane_binaries, nodes=1, apply_crds=False)
    t0 = time.monotonic()
    try:
        cp.start()
        print(f"control plane (1 node, no CRDs) started in {time.monotonic() - t0:.1f} s")
        pgids = {c.p.pid for c in cp.components.values() if c.p is not None}
        assert len(pgids) == 5 and _group_pids(pgids) >= pgids
        root = cp.root
        assert root.is_dir()
    finally:
        cp.stop()
    assert _group_pids(pgids) == set()
    assert not root.exists()
