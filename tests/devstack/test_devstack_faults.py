"""Failures under load, through the real Envoy, pickers and simulators (issue 13 item 3): a replica
that answers 500, one that is killed, one that stalls; a picker killed in a FailOpen and in a
FailClose pool; a crashed Envoy. Failing servers leave the candidate set within a second, a request
whose server failed before answering is retried once on the picker's fallback, and every process
that dies is restarted (with backoff) and reported. Each test faults another pool, so the stack
(its own: processes are killed here) is shared."""
from __future__ import annotations

import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import httpx
import pytest
import yaml
from devstack_helpers import FAST, copy_stack

from infershift.devstack.stack import LocalStack, Options
from infershift.devstack.traffic import chat_body


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    directory = tmp_path_factory.mktemp("faults")
    path = copy_stack("local", directory)
    doc = yaml.safe_load(path.read_text())
    # pool v1 asks no response back (its default is every one): what its picker learns of failures
    # comes through the response filter's report_failures matcher alone
    pools = doc["config"]["infershift:pools"]
    pools["mymodel-pool-v1"]["picker"] = {**pools["mymodel-pool-v1"].get("picker", {}), "responseSampleRate": 0}
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    s = LocalStack(path, Options(**FAST, workdir=directory / "work", watch=False),
                   log=lambda msg: print(f"devstack: {msg}"))
    s.start()
    yield s
    s.stop()


@dataclass
class Result:
    sent: float  # seconds since the load started
    status: int  # -1: no answer (connection error)
    pod: str | None
    target: str | None
    body: str
    retry_after: str | None


@dataclass
class Load:
    """Open-loop load at a fixed rate: a request every 1/rate s however long the others take (a
    stalled server must not slow the arrivals down)."""

    url: str
    body: dict
    headers: dict = field(default_factory=dict)
    rate: float = 25.0
    results: list[Result] = field(default_factory=list)

    def __post_init__(self):
        self._stop = threading.Event()
        self._pool = ThreadPoolExecutor(96)
        self._client = httpx.Client(timeout=60, limits=httpx.Limits(max_connections=128))
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.t0 = time.monotonic()

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._pool.shutdown(wait=True)
        self._client.close()

    def now(self) -> float:
        return time.monotonic() - self.t0

    def _run(self) -> None:
        i = 0
        while not self._stop.is_set():
            self._pool.submit(self._one, i)
            i += 1
            self._stop.wait(max(0.0, self.t0 + i / self.rate - time.monotonic()))

    def _one(self, i: int) -> None:
        sent = self.now()
        try:
            r = self._client.post(self.url, json=self.body, headers=self.headers)
            self.results.append(Result(sent, r.status_code, r.headers.get("x-inference-pod"),
                                       r.headers.get("x-infershift-target-model"), r.text[:300],
                                       r.headers.get("retry-after")))
        except httpx.HTTPError as e:
            self.results.append(Result(sent, -1, None, None, repr(e), None))

    def between(self, start: float, end: float = 1e9) -> list[Result]:
        return [r for r in self.results if start <= r.sent < end]


def failures(results: list[Result]) -> list[Result]:
    return [r for r in results if r.status != 200]


def wait_until(check, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def picker_log(stack: LocalStack, pool: str) -> str:
    return stack.pools[pool].child.log.read_text(errors="replace")


def test_a_replica_answering_500_is_ejected_and_its_requests_retried(stack):
    """qwen-0 fails every request: each failed attempt is retried on the picker's fallback (no
    client sees a 500), and within a second the picker stops sending it anything."""
    url = stack.url("llm-gw") + "/v1/chat/completions"
    with Load(url, chat_body("mymodel"), {"x-canary": "false"}, rate=30) as load:  # pool v1: qwen-0, qwen-1
        time.sleep(1.5)
        fault_at = load.now()
        stack.set_faults("qwen-0", error_rate=1.0, error_status=500)
        time.sleep(4)
        stack.set_faults("qwen-0", error_rate=0.0)
        time.sleep(0.5)
    assert not failures(load.results), failures(load.results)[:3]
    before = Counter(r.pod for r in load.between(0, fault_at))
    assert before["qwen-0"] > 0 and before["qwen-1"] > 0  # both in use before the fault
    after = Counter(r.pod for r in load.between(fault_at + 1.0, fault_at + 4))
    assert after["qwen-0"] == 0 and after["qwen-1"] > 40, after  # ejected within a second
    assert "endpoint ejected" in picker_log(stack, "mymodel-pool-v1")
    stats = envoy_stats(stack, "pool-mymodel-pool-v1-endpoints")
    assert stats["upstream_rq_retry"] >= 1 and stats["upstream_rq_retry_success"] == stats["upstream_rq_retry"]


def test_a_killed_replica_is_ejected_and_requests_in_flight_retried(stack):
    """llama2-0's server goes away (its port closed, every connection reset, as a killed pod): the
    requests it had are retried on the fallback, and it gets no new ones."""
    url = stack.url("lora-gw") + "/v1/chat/completions"
    body = chat_body("lora-request", max_tokens=40)  # long enough to be in flight when it dies
    with Load(url, body, rate=25) as load:  # llama2-pool (FailClose): llama2-0, llama2-1
        time.sleep(1.5)
        fault_at = load.now()
        stack.set_faults("llama2-0", down=True)
        time.sleep(3)
        stack.set_faults("llama2-0", down=False)
        time.sleep(0.5)
    assert not failures(load.results), failures(load.results)[:3]
    assert Counter(r.pod for r in load.between(0, fault_at))["llama2-0"] > 0
    after = Counter(r.pod for r in load.between(fault_at + 1.0, fault_at + 3))
    assert after["llama2-0"] == 0 and after["llama2-1"] > 20, after
    assert envoy_stats(stack, "pool-llama2-pool-endpoints")["upstream_rq_retry_success"] >= 1


def test_a_stalled_replica_gets_no_new_requests_and_loses_none(stack):
    """deepseek-r1-0 accepts connections and never answers (its metrics included): once its metrics
    are stale the picker sends it nothing new; what it holds completes when it answers again."""
    url = stack.url("llm-gw") + "/v1/chat/completions"
    with Load(url, chat_body("mymodel"), {"x-canary": "true"}, rate=20) as load:  # the pin: pool v2
        time.sleep(1.5)
        fault_at = load.now()
        stack.set_faults("deepseek-r1-0", stall=True)
        time.sleep(3.5)
        stack.set_faults("deepseek-r1-0", stall=False)
        time.sleep(1.0)
    assert not failures(load.results), failures(load.results)[:3]
    assert Counter(r.pod for r in load.between(0, fault_at))["deepseek-r1-0"] > 0
    # the picker's metrics go stale after 1 s (staleAfter) plus a scrape interval
    late = Counter(r.pod for r in load.between(fault_at + 1.5, fault_at + 3.5))
    assert late["deepseek-r1-0"] == 0 and late["deepseek-r1-1"] > 20, late


def test_a_crashed_fail_open_picker_is_bypassed_then_restarted(stack):
    url = stack.url("llm-gw") + "/v1/chat/completions"
    restarts = len(stack.supervisor.events)
    # a served name: without its picker the pool's share goes to the servers unrewritten (FailOpen)
    with Load(url, chat_body("mymodel"), {"x-canary": "false"}, rate=20) as load:
        time.sleep(1.0)
        crash_at = load.now()
        stack.crash("picker-mymodel-pool-v1")
        wait_until(lambda: "picker-mymodel-pool-v1 restarted" in " ".join(stack.supervisor.events[restarts:]), 15,
                   "the picker's restart")
        wait_until(lambda: picker_log(stack, "mymodel-pool-v1").count("picker ready") >= 2, 30, "the restarted picker")
        time.sleep(1.0)
        back_at = load.now()
        time.sleep(1.5)
    assert not failures(load.results), failures(load.results)[:3]  # FailOpen: served all along
    events = " ".join(stack.supervisor.events[restarts:])
    assert "picker-mymodel-pool-v1 exited (killed by SIGKILL); restarting in" in events
    # routed by the picker again (its target model header: every response comes back to it)
    assert {r.pod for r in load.between(crash_at, back_at)} & {"qwen-0", "qwen-1"}  # v1's share went on
    # routed by the picker again: the LoRA canary's name is rewritten (only the picker does that)
    for _ in range(10):
        r = httpx.post(url, json=chat_body("travelhelper"), headers={"x-canary": "false"}, timeout=30)
        assert r.status_code == 200 and r.headers["x-infershift-target-model"].startswith("travel-helper-v")


def test_a_crashed_fail_close_picker_answers_503_with_retry_after_then_restarts(stack):
    url = stack.url("lora-gw") + "/v1/chat/completions"
    restarts = len(stack.supervisor.events)
    with Load(url, chat_body("lora-request"), rate=20) as load:
        time.sleep(1.0)
        crash_at = load.now()
        stack.crash("picker-llama2-pool")
        wait_until(lambda: picker_log(stack, "llama2-pool").count("picker ready") >= 2, 30, "the restarted picker")
        time.sleep(1.0)
        back_at = load.now()
        time.sleep(1.5)
    # (a request sent just before the crash may be in the picker when it dies: FailClose answers it too)
    assert not failures(load.between(0, crash_at - 0.2)) and not failures(load.between(back_at))
    for r in failures(load.results):  # during the outage: the gateway's FailClose answer, nothing else
        assert r.status == 503 and '"picker_unavailable"' in r.body and r.retry_after == "1", r
    assert "picker-llama2-pool restarted" in " ".join(stack.supervisor.events[restarts:])


def test_a_crashed_envoy_and_simulator_are_restarted(stack):
    events = len(stack.supervisor.events)
    url = stack.url("lora-gw") + "/v1/chat/completions"
    stack.crash("envoy")
    stack.crash("sim-llama2-candidate")

    def serves() -> bool:
        try:
            return httpx.post(url, json=chat_body("lora-request"), timeout=10).status_code == 200
        except httpx.HTTPError:
            return False

    wait_until(serves, 30, "Envoy back")
    wait_until(lambda: "sim-llama2-candidate restarted" in " ".join(stack.supervisor.events[events:]), 15,
               "the simulator's restart")
    got = " ".join(stack.supervisor.events[events:])
    assert "envoy exited (killed by SIGKILL); restarting in 0.5s (restart 1)" in got and "envoy restarted" in got


def test_restart_backoff_doubles_and_is_capped(tmp_path):
    from infershift.devstack import procs

    clock = [0.0]
    sup = procs.Supervisor(tmp_path, clock=lambda: clock[0])
    child = sup.start("flaky", ["sh", "-c", "exit 3"])
    delays = []
    for _ in range(9):
        child.popen.wait()
        sup.check()  # notes the exit, schedules the restart
        delays.append(child.restart_at - clock[0])
        clock[0] = child.restart_at
        sup.check()  # restarts it
    assert delays == [0.5, 1, 2, 4, 8, 16, 30, 30, 30]
    assert "flaky exited (exit status 3); restarting in 0.5s (restart 1)" in sup.events[0]
    child.popen.wait()
    clock[0] += 61  # it "stayed up" a minute: the next crash starts over
    child.started_at = clock[0] - 61
    child.popen = __import__("subprocess").Popen(["sleep", "5"], start_new_session=True)
    sup.check()
    sup.stop_all(1)
    assert child.streak == 0


def envoy_stats(stack: LocalStack, cluster: str) -> dict[str, int]:
    import urllib.request

    with urllib.request.urlopen(f"{stack.admin_url}/stats?filter=^cluster\\.{cluster}\\.", timeout=5) as r:
        lines = r.read().decode().splitlines()
    prefix = f"cluster.{cluster}."
    return {k.removeprefix(prefix): int(v) for k, _, v in (line.partition(": ") for line in lines)
            if v.strip().isdigit()}
