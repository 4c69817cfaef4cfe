"""Leader election's flags and config (picker/leader.py, app.election_for), readiness gated on the
Lease (health.follow), and the election's clock rules on a controlled clock. Against the real API
server: tests/realengine/test_picker_leader_election.py."""
from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import pytest
import yaml

from bench.pickerbench.procs import REPO
from infershift.picker.__main__ import parse_args
from infershift.picker.app import election_for, load
from infershift.picker.errors import ConfigError
from infershift.picker.health import NOT_SERVING, SERVING, Health
from infershift.picker.k8s import _ApiStatus
from infershift.picker.leader import ElectionConfig, LeaderElector, default_identity, micro_time


def _files(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("pool: {name: chat, namespace: prod}\nkubernetes: {poolApiVersion: inference.networking.k8s.io/v1}\n")
    kc = tmp_path / "kubeconfig"
    kc.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:6443", "insecure-skip-tls-verify": True}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
        "users": [{"name": "u", "user": {"token": "t"}}]}))
    return str(cfg), str(kc)


def test_off_by_default(tmp_path):
    cfg, _ = _files(tmp_path)
    opts = parse_args(["--config", cfg])
    assert opts.leader_elect is False
    assert (opts.leader_elect_lease_duration, opts.leader_elect_renew_deadline, opts.leader_elect_retry_period) \
        == (15.0, 10.0, 2.0)  # client-go's defaults
    assert election_for(opts, load(opts), None) is None


@pytest.mark.parametrize("flag,on", [(["--leader-elect"], True), (["--ha-enable-leader-election"], True),
                                     (["--ha-enable-leader-election=true"], True),
                                     (["--ha-enable-leader-election=false"], False), (["--leader-elect=false"], False)])
def test_flag_and_upstream_alias(tmp_path, flag, on):
    cfg, _ = _files(tmp_path)
    assert parse_args(["--config", cfg, *flag]).leader_elect is on


def test_election_names_upstreams_lease_in_the_pools_namespace(tmp_path, monkeypatch):
    cfg, kc = _files(tmp_path)
    monkeypatch.setenv("POD_NAME", "chat-epp-7d9f-abcde")
    opts = parse_args(["--config", cfg, "--kubeconfig", kc, "--leader-elect", "--leader-elect-lease-duration", "30s",
                       "--leader-elect-renew-deadline", "20s", "--leader-elect-retry-period", "500ms"])
    from infershift.picker.kube_auth import from_kubeconfig

    e = election_for(opts, load(opts), from_kubeconfig(kc))
    assert e is not None
    c = e.cfg
    assert (c.namespace, c.name) == ("prod", "epp-prod-chat.llm-d.ai")
    assert (c.lease_duration, c.renew_deadline, c.retry_period) == (30.0, 20.0, 0.5)
    assert c.identity.startswith("chat-epp-7d9f-abcde_") and len(c.identity) > len("chat-epp-7d9f-abcde_") + 30
    opts2 = parse_args(["--config", cfg, "--kubeconfig", kc, "--leader-elect", "--leader-elect-resource-name", "mine"])
    e2 = election_for(opts2, load(opts2), from_kubeconfig(kc))
    assert e2 is not None and e2.cfg.name == "mine"


def test_identities_are_unique_per_process():
    assert default_identity({"POD_NAME": "p"}) != default_identity({"POD_NAME": "p"})
    assert default_identity({}).split("_")[0]  # the hostname without POD_NAME


@pytest.mark.parametrize("lease,renew,retry,msg", [
    (10, 10, 2, "lease duration (10s) must be greater than the renew deadline (10s)"),
    (15, 2, 2, "renew deadline (2s) must be greater than 1.2 x the retry period (2s)"),
    (0.5, 0.4, 0.1, "at least 1s")])
def test_timings_that_could_overlap_two_leaders_are_refused(tmp_path, lease, renew, retry, msg):
    cfg, kc = _files(tmp_path)
    opts = parse_args(["--config", cfg, "--kubeconfig", kc, "--leader-elect",
                       "--leader-elect-lease-duration", f"{lease}s", "--leader-elect-renew-deadline", f"{renew}s",
                       "--leader-elect-retry-period", f"{retry}s"])
    with pytest.raises(ConfigError, match=msg.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")):
        election_for(opts, load(opts), None)


def test_without_a_cluster_or_kubeconfig_it_exits_2(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("endpoints: [{address: '127.0.0.1:1'}]\n")
    env = {k: v for k, v in os.environ.items() if k != "KUBERNETES_SERVICE_HOST"}
    r = subprocess.run([sys.executable, "-m", "infershift.picker", "--config", str(cfg), "--leader-elect"],
                       capture_output=True, text=True, timeout=60, cwd=str(REPO), env=dict(env, PYTHONPATH=str(REPO)))
    assert r.returncode == 2 and "--leader-elect needs the Kubernetes API" in r.stderr, r.stderr


def test_micro_time():
    assert micro_time(1_700_000_000.25) == "2023-11-14T22:13:20.250000Z"


def test_readiness_needs_the_lease():
    async def main():
        h = Health()
        await h.set(live=True, ready=False)
        leading = {"v": False}
        task = asyncio.create_task(h.follow(lambda: True, interval=0.01, leader=lambda: leading["v"],
                                            leader_status=lambda: "not the leader"))
        await asyncio.sleep(0.05)
        states = [(await h.servicer.Check(_req("readiness"), None)).status,
                  (await h.servicer.Check(_req("liveness"), None)).status]
        leading["v"] = True
        await asyncio.sleep(0.05)
        states.append((await h.servicer.Check(_req("readiness"), None)).status)
        task.cancel()
        return states

    assert asyncio.run(main()) == [NOT_SERVING, SERVING, SERVING]


@pytest.mark.parametrize("elect", [True, False], ids=["leader-election", "no-election"])
def test_health_names_answer_as_upstreams(elect):
    """upstream's cmd/epp/runner/health.go: with leader election "", `readiness` and the ext_proc
    name are SERVING only on the leader (with a ready endpoint), `liveness` on every replica;
    without it "" answers as `readiness` too."""
    names = ("", "readiness", "envoy.service.ext_proc.v3.ExternalProcessor", "liveness")

    async def main():
        h = Health()
        await h.set(live=True, ready=False)
        state = {"leading": False, "endpoint": True}
        task = asyncio.create_task(h.follow(lambda: state["endpoint"], interval=0.01,
                                            leader=(lambda: state["leading"]) if elect else None))

        async def answers():
            await asyncio.sleep(0.05)
            return tuple([(await h.servicer.Check(_req(n), None)).status for n in names])

        seen = {"standby": await answers()}
        state["leading"] = True
        seen["leader"] = await answers()
        state["endpoint"] = False
        seen["leader, no endpoint"] = await answers()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await h.set(live=True, ready=False)  # the drain
        seen["draining"] = await answers()
        return seen

    seen = asyncio.run(main())
    not_ready = (NOT_SERVING, NOT_SERVING, NOT_SERVING, SERVING)
    assert seen["standby"] == (not_ready if elect else (SERVING,) * 4)
    assert seen["leader"] == (SERVING,) * 4
    assert seen["leader, no endpoint"] == not_ready
    assert seen["draining"] == not_ready


def _req(service):
    from grpc_health.v1 import health_pb2

    return health_pb2.HealthCheckRequest(service=service)


class FakeLeases:
    """One Lease with resourceVersions: a PUT on a stale version is a 409, as the API server's."""

    def __init__(self):
        self.obj = None
        self.rv = 0
        self.down = False

    def _check(self):
        if self.down:
            raise ConnectionError("connection refused")

    async def get(self):
        self._check()
        return None if self.obj is None else {**self.obj, "metadata": dict(self.obj["metadata"])}

    async def create(self, lease):
        self._check()
        if self.obj is not None:
            raise _ApiStatus(409, "already exists")
        self.rv += 1
        self.obj = {**lease, "metadata": {**lease["metadata"], "resourceVersion": str(self.rv)}}
        return await self.get()

    async def update(self, lease):
        self._check()
        if lease["metadata"].get("resourceVersion") != self.obj["metadata"]["resourceVersion"]:
            raise _ApiStatus(409, "the object has been modified")
        self.rv += 1
        self.obj = {**lease, "metadata": {**lease["metadata"], "resourceVersion": str(self.rv)}}
        return await self.get()


def test_takeover_waits_the_lease_out_on_the_candidates_own_clock():
    now = {"t": 1000.0}
    store = FakeLeases()

    def elector(name):
        return LeaderElector(store, ElectionConfig("ns", "l", name, 15, 10, 2), clock=lambda: now["t"],
                             wall=lambda: 5.0)  # a wall clock stuck in 1970: never consulted for expiry

    a, b = elector("a"), elector("b")

    async def main():
        assert await a.attempt() and a.leading
        assert not await b.attempt() and b.holder == "a"
        store.down = True  # a cannot renew: after its renew deadline it is no longer leader
        now["t"] += 9.9
        assert not await a.attempt() and a.leading
        now["t"] += 0.2
        assert not await a.attempt() and not a.leading
        store.down = False
        assert not await b.attempt()  # 10.1 s since b saw a change: not yet 15
        now["t"] += 5.0
        assert await b.attempt() and b.leading  # unchanged for 15 s by b's clock: taken over
        assert store.obj["spec"]["holderIdentity"] == "b" and store.obj["spec"]["leaseTransitions"] == 1
        assert not await a.attempt() and not a.leading and a.holder == "b"
        assert await b.release() and not b.leading
        assert await a.attempt() and a.leading  # released: taken at once

    asyncio.run(main())


def test_a_conflict_loses_the_race():
    store = FakeLeases()
    a = LeaderElector(store, ElectionConfig("ns", "l", "a", 15, 10, 2))
    b = LeaderElector(store, ElectionConfig("ns", "l", "b", 15, 10, 2))

    async def main():
        assert await a.attempt()
        await a.release()
        stale = await store.get()  # b read the released Lease ...
        assert await a.attempt()  # ... a re-acquired it meanwhile ...
        orig_get = store.get

        async def stale_get():
            return stale
        store.get = stale_get  # type: ignore[method-assign]
        assert not await b.attempt() and not b.leading  # ... so b's PUT on the old version gets 409
        store.get = orig_get  # type: ignore[method-assign]
        assert a.leading

    asyncio.run(main())


def _samples(tm) -> dict:
    from prometheus_client import generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    out = {}
    for fam in text_string_to_metric_families(generate_latest(tm.registry).decode()):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_leader_metric_is_upstreams_gauge_and_transitions_count():
    """leader_election_master_status{name=<lease>} (controller-runtime's, as upstream's EPP serves
    it): 0 on a standby, 1 on the leader, 0 again the moment leadership runs out (read from the
    elector at the scrape); infershift_picker_leader_transitions_total counts each change."""
    from prometheus_client.parser import text_string_to_metric_families

    from infershift.picker.leader import Election
    from infershift.picker.telemetry import LEADER, Telemetry

    now = {"t": 1000.0}
    store = FakeLeases()
    cfg_a, cfg_b = ElectionConfig("ns", "epp-ns-chat.llm-d.ai", "a", 15, 10, 2), ElectionConfig(
        "ns", "epp-ns-chat.llm-d.ai", "b", 15, 10, 2)
    ea, eb = Election(None, None, cfg_a), Election(None, None, cfg_b)  # type: ignore[arg-type]
    ta, tb = Telemetry(), Telemetry()
    assert not [k for k in _samples(ta) if k[0].startswith("leader_election")]  # no series without an election
    ta.attach_election(ea, "chat")
    tb.attach_election(eb, "chat")
    for e in (ea, eb):  # as Election.start() makes it, with the hook attach_election set
        e.elector = LeaderElector(store, e.cfg, clock=lambda: now["t"], on_change=e.on_change)

    def gauge(tm):
        return _samples(tm)[(LEADER.name, (("name", "epp-ns-chat.llm-d.ai"),))]

    def transitions(tm, event):
        return _samples(tm)[("infershift_picker_leader_transitions_total", (("event", event), ("pool", "chat")))]

    async def main():
        assert gauge(ta) == 0 and gauge(tb) == 0  # before any attempt: standby, as client-go's NewLeaderElector
        assert transitions(ta, "acquired") == 0 and transitions(ta, "lost") == 0 and transitions(ta, "released") == 0
        assert await ea.elector.attempt()
        assert not await eb.elector.attempt()
        assert (gauge(ta), gauge(tb)) == (1, 0)
        assert await ea.elector.attempt()  # a renewal is no transition
        assert transitions(ta, "acquired") == 1
        assert not await eb.elector.attempt()  # b sees the renewal: its 15 s run from here
        store.down = True
        now["t"] += 10.1  # past the renew deadline: the gauge is 0 at once, before the next attempt
        assert gauge(ta) == 0
        assert not await ea.elector.attempt()
        assert transitions(ta, "lost") == 1
        store.down = False
        now["t"] += 5.0
        assert await eb.elector.attempt()
        assert (gauge(ta), gauge(tb)) == (0, 1) and transitions(tb, "acquired") == 1
        assert await eb.elector.release()
        assert gauge(tb) == 0 and transitions(tb, "released") == 1
        assert not await eb.elector.release()  # not leading any more: nothing to count
        assert transitions(tb, "released") == 1

    asyncio.run(main())
    from prometheus_client import generate_latest

    fam = {f.name: f for f in text_string_to_metric_families(generate_latest(ta.registry).decode())}[LEADER.name]
    assert fam.type == "gauge" and fam.documentation == LEADER.help
    assert LEADER.help.startswith("Gauge of if the reporting system is master of the relevant lease")
