"""Picker replicas elect a leader on a Lease against a real API server (issue 12 item 8).

Real picker processes (.venv-picker) run with kubeconfigs for their ServiceAccount, bound to
exactly the Role the components render for `replicas: 2` (components/endpoint_picker.py), with
the flag the rendered Deployment passes (`--leader-elect`) and short timings (lease 3 s, renew
deadline 2 s, retry 0.5 s) so failovers take seconds. A pod of the pool runs (KWOK) with a real
model server (the simulator) on its address, so every picker has a ready endpoint and readiness
is decided by the Lease alone. Readiness is read from the pickers' gRPC health port (the service
the Deployment's probe names), the Lease from the API server, leadership also from each picker's
/metrics (upstream's leader_election_master_status and infershift's transitions counter).
"""
from __future__ import annotations

import json
import signal
import sys
import threading
import time
import urllib.request
from pathlib import Path

import grpc
import pytest
import yaml
from controlplane import pod_ready, require_or_skip
from picker_process import PickerProcess

from infershift import contract, proc
from infershift.components.endpoint_picker import manifests as picker_manifests
from infershift.components.inference_pool import default_picker_config, pool_manifest
from infershift.devstack.ports import free_port

REPO = Path(__file__).resolve().parents[2]
PICKER_PY = REPO / ".venv-picker" / "bin" / "python"
NS = "picker-ha"
POOL = "pool"
SA = f"{POOL}-epp"
LEASE = contract.picker_lease_name(NS, POOL)
PORT = free_port()
LEASE_S, RENEW_S, RETRY_S = 3.0, 2.0, 0.5
TIMINGS = ["--leader-elect-lease-duration", f"{LEASE_S:g}s", "--leader-elect-renew-deadline", f"{RENEW_S:g}s",
           "--leader-elect-retry-period", f"{RETRY_S:g}s"]
# Worst case for a standby to take over a dead leader: it may see the last renewal up to one
# (jittered) retry after it was written, waits the lease duration from then, and tries on its next
# (jittered) retry; then readiness follows within 0.1 s.
TAKEOVER_BOUND_S = LEASE_S + 2 * 1.2 * RETRY_S + 0.5


def _health(channel: grpc.Channel, service: str) -> str:
    """grpc.health.v1.Health/Check by hand (the test venv has grpcio, not grpcio-health-checking):
    request field 1 = service name; response field 1 = status (1 SERVING, 2 NOT_SERVING)."""
    svc = service.encode()
    req = (b"\x0a" + bytes([len(svc)]) + svc) if svc else b""
    resp = channel.unary_unary("/grpc.health.v1.Health/Check")(req, timeout=2)
    code = resp[1] if resp[:1] == b"\x08" else 0
    return {0: "UNKNOWN", 1: "SERVING", 2: "NOT_SERVING"}.get(code, str(code))


class Picker(PickerProcess):
    def __init__(self, workdir: Path, kubeconfig: Path, config: dict, name: str, extra: list[str]):
        super().__init__(workdir, kubeconfig, config, name, extra, env={"POD_NAME": name})
        self.channel = grpc.insecure_channel(f"127.0.0.1:{self.ports['health']}")

    @property
    def identity(self) -> str | None:
        r = self.records("leader election on")
        return r[-1]["identity"] if r else None

    def health(self, service: str = "readiness") -> str:
        try:
            return _health(self.channel, service)
        except grpc.RpcError:
            return "DOWN"

    def ready(self) -> bool:
        return self.health() == "SERVING"

    def metric(self, metric: str, labels: dict[str, str]) -> float | None:
        """One sample from the picker's /metrics (None: no such series)."""
        from prometheus_client.parser import text_string_to_metric_families

        with urllib.request.urlopen(f"http://127.0.0.1:{self.ports['metrics']}/metrics", timeout=5) as r:
            text = r.read().decode()
        for fam in text_string_to_metric_families(text):
            for s in fam.samples:
                if s.name == metric and s.labels == labels:
                    return s.value
        return None

    def leader_gauge(self) -> float | None:
        return self.metric("leader_election_master_status", {"name": LEASE})

    def transitions(self, event: str) -> float | None:
        return self.metric("infershift_picker_leader_transitions_total", {"pool": POOL, "event": event})

    def kill(self) -> None:
        proc.signal_group(self.p.pid, signal.SIGKILL)
        self.p.wait(10)

    def wait(self, pred, timeout: float, what: str, interval: float = 0.05):
        return super().wait(pred, timeout, what, interval)

    def stop(self, grace: float = 10) -> None:
        self.channel.close()
        super().stop(grace)


def _render(replicas: int) -> dict[str, dict]:
    pool_args = {"selector": {"app": "model"}, "namespace": NS, "api_version": "v1", "target_ports": [PORT]}
    rendered = picker_manifests({"pool_name": POOL, "pool_api_version": "v1", "namespace": NS,  # type: ignore[typeddict-item]
                                 "image": "example.invalid/picker:1", "replicas": replicas,
                                 "config": default_picker_config(POOL, pool_args)})  # type: ignore[arg-type]
    return {m["kind"]: m for m in rendered}


def _lease(cp) -> dict | None:
    return cp.get("coordination.k8s.io/v1", "Lease", LEASE, NS)


@pytest.fixture(scope="module")
def cluster(control_plane, tmp_path_factory):
    """The pool, the rendered RBAC for two replicas, a ready pod with a real model server."""
    cp = control_plane
    if not PICKER_PY.exists():
        require_or_skip("no .venv-picker for the picker process: run `make setup`")
    cp.ensure_namespace(NS)
    by_kind = _render(2)
    cp.apply([by_kind[k] for k in ("ServiceAccount", "Role", "RoleBinding", "ConfigMap")])
    cp.apply(pool_manifest(POOL, {"selector": {"app": "model"}, "namespace": NS, "api_version": "v1",  # type: ignore[arg-type]
                                  "target_ports": [PORT]}))
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "m-0", "namespace": NS, "labels": {"app": "model"}},
           "spec": {"terminationGracePeriodSeconds": 0,
                    "containers": [{"name": "vllm", "image": "example.invalid/vllm:1", "ports": [{"containerPort": PORT}]}]}}
    cp.apply(pod)
    ip = cp.wait_for(lambda: (p := cp.get("v1", "Pod", "m-0", NS)) and pod_ready(p) and p["status"]["podIP"], 60,
                     "pod m-0 Ready", "kwok")
    work = tmp_path_factory.mktemp("picker-ha")
    with open(work / "sim.log", "ab") as out:
        sim = proc.spawn([sys.executable, "-m", "infershift.sim", "--model", "llama-8b", "--host", ip,
                          "--port", str(PORT)], out=out, cwd=str(REPO))
    creds = cp.service_account_kubeconfig(NS, SA, expiration_seconds=3600)
    args = by_kind["Deployment"]["spec"]["template"]["spec"]["containers"][0]["args"]
    flags = [a for a in args if a.startswith("--leader-elect")]  # what the rendered Deployment turns on
    config = yaml.safe_load(by_kind["ConfigMap"]["data"]["config.yaml"])
    try:
        yield cp, creds, config, flags, work
    finally:
        proc.stop_group(sim, 5)
        cp.delete(pod, grace_period_seconds=0)


@pytest.fixture
def pickers(cluster, request):
    """Start pickers by name (all at once, racing for the Lease); all stopped afterwards."""
    cp, creds, config, flags, work = cluster
    started: list[Picker] = []

    def start(*names: str, extra: list[str] | None = None, kubeconfig: Path | None = None) -> list[Picker]:
        new = [Picker(work, kubeconfig or creds.kubeconfig, config, f"{request.node.name[:20]}-{n}",
                      [*flags, *TIMINGS, *(extra or [])]) for n in names]
        started.extend(new)
        for p in new:
            p.wait(lambda p=p: p.records("picker started"), 30, f"{p.name} started")
        return new

    yield start
    for p in started:
        p.stop()
    # the next test starts from a free Lease (as a new Deployment would find it)
    cp.delete({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": LEASE, "namespace": NS}})


def _one_leader(ps: list[Picker]) -> Picker | None:
    ready = [p for p in ps if p.ready()]
    return ready[0] if len(ready) == 1 else None


def test_the_rendered_role_grants_the_lease_only_with_replicas():
    one, two = _render(1), _render(2)
    assert not [r for r in one["Role"]["rules"] if "coordination.k8s.io" in r["apiGroups"]]
    assert not [a for a in one["Deployment"]["spec"]["template"]["spec"]["containers"][0]["args"] if "leader" in a]
    assert [r for r in two["Role"]["rules"] if "coordination.k8s.io" in r["apiGroups"]] == [
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "resourceNames": [LEASE],
         "verbs": ["get", "update"]},
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]}]
    assert "--leader-elect" in two["Deployment"]["spec"]["template"]["spec"]["containers"][0]["args"]


def test_exactly_one_leader_and_failover(cluster, pickers):
    cp = cluster[0]
    a, b = pickers("a", "b")
    leader = a.wait(lambda: _one_leader([a, b]), 30, "exactly one ready picker")
    standby = b if leader is a else a
    lease = cp.wait_for(lambda: (le := _lease(cp)) and le["spec"].get("holderIdentity") == leader.identity and le,
                        10, "the Lease names the ready picker")
    assert lease["spec"]["leaseDurationSeconds"] == int(LEASE_S)
    assert leader.identity and leader.identity.startswith(leader.name + "_")  # POD_NAME + a unique suffix
    # the standby is live, not ready, and warm: it discovered the pod and scrapes its server
    assert standby.health("liveness") == "SERVING" and standby.health("readiness") == "NOT_SERVING"
    assert standby.health("envoy.service.ext_proc.v3.ExternalProcessor") == "NOT_SERVING"
    assert standby.health("") == "NOT_SERVING" and leader.health("") == "SERVING"  # "" is readiness, as upstream's
    standby.wait(lambda: any(r.get("endpoints") for r in standby.records("kubernetes endpoints")), 10,
                 "the standby's endpoints")
    rec = standby.wait(lambda: standby.records("leader election: following"), 5, "the standby following")
    assert rec[-1]["holder"] == leader.identity
    # leadership on /metrics: upstream's gauge (1 leader, 0 standby, named by the Lease), our transitions
    assert (leader.leader_gauge(), standby.leader_gauge()) == (1.0, 0.0)
    assert leader.transitions("acquired") == 1.0 and standby.transitions("acquired") == 0.0

    # SIGTERM: the leader releases the Lease, the standby takes over within a retry period
    t0 = time.monotonic()
    leader.stop()
    standby.wait(standby.ready, 5, "the standby ready after the leader's release")
    released_after = time.monotonic() - t0
    assert leader.records("leader election: released"), leader.tail()
    assert _lease(cp)["spec"]["holderIdentity"] == standby.identity
    print(f"takeover after a release: {released_after:.2f} s")
    assert standby.leader_gauge() == 1.0 and standby.transitions("acquired") == 1.0

    # SIGKILL: nothing is released; a new standby takes over once the lease ran out
    (c,) = pickers("c")
    c.wait(lambda: c.records("leader election: following"), 10, "c following")
    assert not c.ready()
    t0 = time.monotonic()
    standby.kill()
    c.wait(c.ready, TAKEOVER_BOUND_S + 2, "c ready after the leader was killed")
    took = time.monotonic() - t0
    assert LEASE_S - 1.2 * RETRY_S - 0.1 <= took <= TAKEOVER_BOUND_S, took  # never before the lease could expire
    assert _lease(cp)["spec"]["holderIdentity"] == c.identity
    assert _lease(cp)["spec"]["leaseTransitions"] >= 2
    assert c.leader_gauge() == 1.0 and c.transitions("acquired") == 1.0
    print(f"takeover after a kill: {took:.2f} s (bound {TAKEOVER_BOUND_S:.1f} s)")


def _sample(ps: list[Picker], stop: threading.Event, out: list[tuple[float, tuple[bool, ...]]]) -> None:
    while not stop.is_set():
        out.append((time.monotonic(), tuple(p.ready() for p in ps)))
        time.sleep(0.05)


# A restart of this control plane's API server (stop, downtime, start, ready) takes 5-20 s on a
# loaded 2-core machine, longer than the default renew deadline (10 s); these leave room for it.
LONG = ["--leader-elect-lease-duration", "60s", "--leader-elect-renew-deadline", "45s",
        "--leader-elect-retry-period", "1s"]


@pytest.mark.parametrize("timings,downtime", [(LONG, 0.5), ([], 3.0)],
                         ids=["outage-within-the-renew-deadline", "outage-past-the-lease"])
def test_an_api_server_restart_never_makes_two_leaders(cluster, pickers, timings, downtime):
    """The API server stops (its process killed), stays down `downtime`, starts on the same etcd.
    With a renew deadline longer than the outage (stop, downtime, start) the leader renews after
    it and stays leader, ready, throughout. With the short timings it
    is longer than the lease: the leader steps down (not ready) and, once the server is back,
    one picker leads again. Both pickers' readiness is sampled every 50 ms meanwhile: never both."""
    cp = cluster[0]
    a, b = pickers("a", "b", extra=timings)
    leader = a.wait(lambda: _one_leader([a, b]), 30, "exactly one ready picker")
    samples: list[tuple[float, tuple[bool, ...]]] = []
    stop = threading.Event()
    t = threading.Thread(target=_sample, args=([a, b], stop, samples), daemon=True)
    t.start()
    try:
        t0 = time.monotonic()
        cp.restart_apiserver(downtime=downtime)
        outage = time.monotonic() - t0
        after = a.wait(lambda: _one_leader([a, b]), 40, "one leader after the restart")
        time.sleep(2 * LEASE_S)  # and it stays one
    finally:
        stop.set()
        t.join(5)
    both = [ts for ts, r in samples if all(r)]
    assert not both, f"two ready pickers at {len(both)} of {len(samples)} samples"
    assert _one_leader([a, b]) is after
    assert cp.wait_for(lambda: (le := _lease(cp)) and le["spec"]["holderIdentity"] == after.identity, 10,
                       "the Lease names the one ready picker")
    stepped = leader.records("leader election: stepped down (no renewal within the renew deadline)")
    if timings is LONG:
        assert outage < 45, outage
        assert after is leader and not stepped, leader.tail()
        assert leader.transitions("lost") == 0.0 and leader.leader_gauge() == 1.0
        assert all(r == samples[0][1] for _, r in samples), "readiness changed during a short outage"
    else:
        assert outage > LEASE_S, outage
        assert stepped, leader.tail()  # it could not renew: it stepped down, not ready, during the outage
        assert leader.transitions("lost") == len(stepped)  # each step-down counted
        assert any(not any(r) for _, r in samples)
    print(f"outage {outage:.1f} s: {len(samples)} samples, never two ready; leader "
          f"{'kept' if after is leader else 'changed'}")


def test_without_the_lease_permission_it_is_refused(cluster, pickers):
    """A Role without the lease rules (what `replicas: 1` renders) and --leader-elect: the server
    refuses, the picker logs its 403 message and never becomes ready."""
    cp, _, _, _, _ = cluster
    one = _render(1)
    name = "nolease-epp"
    objs = []
    for k in ("ServiceAccount", "Role", "RoleBinding"):
        o = json.loads(json.dumps(one[k]))
        o["metadata"]["name"] = name
        objs.append(o)
    objs[2]["roleRef"]["name"] = name
    objs[2]["subjects"][0]["name"] = name
    cp.apply(objs)
    creds = cp.service_account_kubeconfig(NS, name, expiration_seconds=3600)
    try:
        (p,) = pickers("x", kubeconfig=creds.kubeconfig)
        rec = p.wait(lambda: next((r for r in p.records("leader election failed; retrying")
                                   if r.get("status") == 403), None), 30, "a 403 for the Lease")
        assert rec["level"] == "error"
        assert 'cannot get resource "leases" in API group "coordination.k8s.io"' in rec["error"], rec
        assert f"system:serviceaccount:{NS}:{name}" in rec["error"], rec
        p.wait(lambda: any(r.get("endpoints") for r in p.records("kubernetes endpoints")), 10, "its endpoints")
        time.sleep(1.0)
        assert p.health("readiness") == "NOT_SERVING" and p.health("liveness") == "SERVING"
        assert _lease(cp) is None
        assert p.leader_gauge() == 0.0 and p.transitions("acquired") == 0.0
    finally:
        cp.delete(objs)
