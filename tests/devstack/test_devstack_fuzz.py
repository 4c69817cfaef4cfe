"""A bounded, seeded fuzz of the gateway through the real Envoy, pickers and simulators (issue 13):
malformed bodies, routing-namespace and oversized headers, odd paths and methods, HTTP/1.1
protocol abuse, with a valid request interleaved every few cases. Every answer must have a fitting
status; every error the gateway, a picker or a server produces is OpenAI-shaped JSON (429/503 with
Retry-After); no routing header a client sent reaches a model server; no process dies; every
interleaved valid request succeeds. FUZZ_SEED and FUZZ_CASES change the run (CI: the defaults)."""
from __future__ import annotations

import json
import os
import random
import socket
import threading
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass

import httpx
import pytest
from devstack_helpers import FAST, copy_stack

from infershift import contract
from infershift.devstack.stack import LocalStack, Options

SEED = int(os.environ.get("FUZZ_SEED", "13"))
CASES = int(os.environ.get("FUZZ_CASES", "1500"))
VALID_EVERY = 4  # a valid request after every this many fuzz cases


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    directory = tmp_path_factory.mktemp("fuzz")
    s = LocalStack(copy_stack("local", directory), Options(**FAST, workdir=directory / "work", watch=False),
                   log=lambda msg: print(f"devstack: {msg}"))
    s.start()
    for eps in s.endpoints.values():  # what reached each server, from here on
        for e in eps:
            urllib.request.urlopen(f"http://{e.admin}/admin/requests?clear=1", timeout=5).read()
    yield s
    s.stop()


@dataclass
class Case:
    kind: str
    what: str
    listener: str
    method: str = "POST"
    path: str = "/v1/chat/completions"
    headers: dict | None = None
    body: bytes | None = None
    raw: bytes | None = None  # sent as is over a socket instead
    expect: tuple[int, ...] = (200,)


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes


# --- case generators -----------------------------------------------------------------------

CHAT_MODELS = ["mymodel", "travelhelper"]


def _chat(model: str, text: str = "hello", **extra) -> dict:
    return {"model": model, "messages": [{"role": "user", "content": text}], "max_tokens": 3, **extra}


def _nest(rng: random.Random) -> str:
    depth = rng.randrange(1100, 20000)
    if rng.random() < 0.5:
        return "[" * depth + "]" * depth
    return '{"a":' * depth + "1" + "}" * depth


def _surrogate(rng: random.Random) -> str:
    return "\\u" + rng.choice(["d800", "dbff", "dc00", "DFFF", "d83d"])  # d83d alone: an unpaired high half


def _flip(rng: random.Random, data: bytes) -> bytes:
    out = bytearray(data)
    for _ in range(rng.randrange(1, 4)):
        out[rng.randrange(len(out))] = rng.randrange(256)
    return bytes(out)


def body_case(rng: random.Random) -> Case:
    listener, model = ("reasoning-gw", "qwq") if rng.random() < 0.2 else ("llm-gw", rng.choice(CHAT_MODELS))
    chat = rng.random() < 0.6
    path = "/v1/chat/completions" if chat else "/v1/completions"
    valid = _chat(model) if chat else {"model": model, "prompt": "San Francisco is", "max_tokens": 3}
    text = json.dumps(valid)
    ct = {"content-type": "application/json"}
    mutations = [
        ("deep nesting", lambda: text[:-1] + ', "x": ' + _nest(rng) + "}", (400,)),
        ("unpaired surrogate", lambda: text.replace("hello" if chat else "San Francisco", "a" + _surrogate(rng) + "b"),
         (400,)),
        ("unpaired surrogate in the model", lambda: text.replace(f'"{model}"', f'"{model}{_surrogate(rng)}"'), (400,)),
        ("non-string text part", lambda: json.dumps({**_chat(model), "messages": [{"role": "user", "content": [
            {"type": "text", "text": rng.choice([5, 1.5, True, None, [], {"a": 1}])}]}]}), (400,)),
        ("truncated", lambda: text[:rng.randrange(1, len(text) - 1)], (400,)),
        ("random bytes", lambda: bytes(rng.randrange(256) for _ in range(rng.randrange(1, 200))), (400,)),
        ("invalid UTF-8", lambda: text.encode().replace(b"hello" if chat else b"San", b"\xff\xfe\xc3"), (400,)),
        ("not an object", lambda: json.dumps(rng.choice([[valid], 3, "x", None, True])), (400,)),
        ("bad model", lambda: json.dumps({**valid, "model": rng.choice([3, None, [], {}, "", "  "])}), (400,)),
        ("unknown model", lambda: json.dumps({**valid, "model": f"nope-{rng.randrange(1000)}"}), (404,)),
        ("bad messages", lambda: json.dumps({**valid, "messages": rng.choice([{}, "hi", 3, [], [1], [{"role": 1}]])}),
         (400,) if chat else (200,)),
        ("bad prompt", lambda: json.dumps({**valid, "prompt": rng.choice([3, {}, [], [{"a": 1}], ["a", "b"], ""])}),
         (200,) if chat else (400,)),
        ("bad max_tokens", lambda: json.dumps({**valid, "max_tokens": rng.choice([-1, 0, "5", 10 ** 30, 1.5])}),
         (400,)),
        ("n > 1", lambda: json.dumps({**valid, "n": 2}), (400,)),
        ("stream_options without stream", lambda: json.dumps({**valid, "stream_options": {"include_usage": True}}),
         (400,)),
        ("a 5000-digit integer", lambda: text[:-1] + ', "seed": ' + "9" * 5000 + "}", (400,)),
        ("NaN and Infinity", lambda: text[:-1] + ', "temperature": NaN, "top_p": Infinity}', (200,)),
        ("duplicate keys", lambda: '{"model": "nope", ' + text[1:], (200,)),
        ("unknown fields", lambda: json.dumps({**valid, "frobnicate": {"deep": [1, 2, {"x": None}]}}), (200,)),
        ("empty", lambda: "", (400,)),
        ("streamed", lambda: json.dumps({**valid, "stream": True}), (200,)),
        ("byte flips", lambda: _flip(rng, text.encode()), (200, 400, 404)),
    ]
    what, make, expect = rng.choice(mutations)
    body = make()
    headers = dict(ct)
    if rng.random() < 0.08:
        headers = {"content-type": rng.choice(["text/plain", "application/x-www-form-urlencoded", ""])}
        expect = (400,)
        what += ", wrong content-type"
    return Case("body", what, listener, "POST", path, headers, body if isinstance(body, bytes) else body.encode(),
                expect=expect)


ROUTING_NAMES = [*contract.REWRITE_HEADERS, contract.DESTINATION_HEADER, contract.DESTINATION_SERVED_HEADER,
                 contract.SUBSET_KEY, *contract.OBJECTIVE_HEADERS, *contract.FAIRNESS_HEADERS, contract.RESTORE_HEADER,
                 contract.MIRROR_HEADER, contract.TARGET_HEADER, "x-envoy-upstream-rq-timeout-ms", "x-envoy-max-retries",
                 "x-envoy-retry-on", "x-envoy-original-path", "x-envoy-internal", "x-envoy-force-trace"]


def _routing_value(rng: random.Random, stack: LocalStack) -> str:
    addresses = [e.address for eps in stack.endpoints.values() for e in eps]
    return rng.choice(["travel-helper-v2", "1", "127.0.0.1:1", rng.choice(addresses), ",".join(addresses[:2]),
                       "nonexistent-objective", "", "x" * rng.randrange(1, 300), "retriable-4xx,5xx"])


def header_case(rng: random.Random, stack: LocalStack) -> Case:
    body = json.dumps(_chat("travelhelper")).encode()
    ct = {"content-type": "application/json"}
    roll = rng.random()
    if roll < 0.55:  # routing-namespace headers: stripped before the picker, never steering
        headers = dict(ct)
        for _ in range(rng.randrange(1, 6)):
            name = rng.choice(ROUTING_NAMES) if rng.random() < 0.7 else (
                rng.choice(contract.ROUTING_HEADER_PREFIXES) + "".join(rng.choice("abcxyz-") for _ in range(6)))
            headers[name] = _routing_value(rng, stack)
        return Case("headers", "routing-namespace headers", "llm-gw", "POST", "/v1/chat/completions", headers, body,
                    expect=(200,))
    if roll < 0.75:  # many headers: Envoy's limit is 100 at the gateway, more is 431 (JSON)
        n = rng.randrange(80, 120)
        headers = {**ct, **{f"x-h{i}": "v" for i in range(n)}}
        return Case("headers", f"{n} extra headers", "llm-gw", "POST", "/v1/chat/completions", headers, body,
                    expect=(431,) if n >= 100 else (200, 431))
    size = rng.randrange(1000, 40000)  # big headers: 12 KiB in all at the gateway
    headers = {**ct, "x-big": "a" * size}
    return Case("headers", f"a {size}-byte header", "llm-gw", "POST", "/v1/chat/completions", headers, body,
                expect=(431,) if size > 12 * 1024 else (200, 431))


MANAGEMENT = ["/v1/load_lora_adapter", "/v1/unload_lora_adapter", "/admin/faults", "/admin/predict",
              "/admin/requests", "/reset_prefix_cache", "/sleep", "/wake_up", "/collective_rpc", "/start_profile",
              "//admin/faults", "/x/../admin/faults", "/v1%2Fload_lora_adapter", "/v1/load%5Flora_adapter",
              "/admin/faults?stall=true"]


def path_case(rng: random.Random) -> Case:
    roll = rng.random()
    host = {"host": "test.com"}
    if roll < 0.3:  # the model servers' management API, through the catch-all route: never routed
        path = rng.choice(MANAGEMENT)
        body = json.dumps({"stall": True, "lora_name": "evil", "lora_path": "/etc"}).encode()
        return Case("path", f"management path {path}", "lora-gw", rng.choice(["POST", "GET"]), path,
                    {**host, "content-type": "application/json"}, body, expect=(404,))
    if roll < 0.55:  # other methods on completion paths: 405 (HEAD: no body)
        method = rng.choice(["GET", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"])
        path = rng.choice(["/v1/chat/completions", "/v1/completions"])
        return Case("path", f"{method} {path}", rng.choice(["llm-gw", "lora-gw"]), method, path, dict(host),
                    expect=(405,))
    if roll < 0.7:
        return Case("path", "GET /v1/models", rng.choice(["llm-gw", "lora-gw", "reasoning-gw"]), "GET", "/v1/models",
                    expect=(200,))
    path = "/" + "/".join("".join(rng.choice("abcdefghij%.-_~") for _ in range(rng.randrange(1, 9)))
                          for _ in range(rng.randrange(1, 4)))
    if rng.random() < 0.3:
        path += "?" + "&".join(f"q{i}=v{i}" for i in range(rng.randrange(1, 4)))
    listener = rng.choice(["llm-gw", "lora-gw"])
    # llm-gw routes only the completion paths (404 from the gateway); lora-gw has a catch-all (404 from
    # the server, 400 for a path it cannot parse)
    return Case("path", f"GET {path}", listener, "GET", path, dict(host), expect=(400, 404))


PROTOCOL = [
    ("bad method", b"FO(O / HTTP/1.1\r\nHost: x\r\n\r\n", (400,)),
    ("unknown method", b"BREW /v1/completions HTTP/1.1\r\nHost: x\r\n\r\n", (400,)),
    ("HTTP/1.0", b"POST /v1/completions HTTP/1.0\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}", (426,)),
    ("HTTP/3.7", b"GET / HTTP/3.7\r\nHost: x\r\n\r\n", (426,)),
    ("bad chunking", b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                     b"Content-Type: application/json\r\n\r\nzz\r\nabc\r\n0\r\n\r\n", (400,)),
    ("no Host", b"GET /v1/models HTTP/1.1\r\n\r\n", (400,)),
    ("upgrade", b"GET /v1/completions HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n", (400,)),
    ("CONNECT", b"CONNECT x:443 HTTP/1.1\r\nHost: x:443\r\n\r\n", (400, 405)),
    ("bad header name", b"GET / HTTP/1.1\r\nHost: x\r\nx y: z\r\n\r\n", (400,)),
    ("content-length and chunked", b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n"
                                   b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n", (400,)),
    ("two content-lengths", b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n"
                            b"Content-Length: 4\r\n\r\nabcd", (400,)),
    ("a TLS hello", b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03" + b"\x00" * 40 + b"\r\n\r\n", (400,)),
    ("a 70 KB header", b"GET / HTTP/1.1\r\nHost: x\r\nx-big: " + b"a" * 70000 + b"\r\n\r\n", (431,)),
    ("120 headers", b"GET /v1/models HTTP/1.1\r\nHost: x\r\n" + b"".join(b"x-h%d: v\r\n" % i for i in range(120))
     + b"\r\n", (431,)),
]


def protocol_case(rng: random.Random) -> Case:
    what, raw, expect = rng.choice(PROTOCOL)
    return Case("protocol", what, rng.choice(["llm-gw", "lora-gw"]), raw=raw, expect=expect)


def cases(stack: LocalStack, n: int, seed: int) -> list[Case]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        roll = rng.random()
        if roll < 0.45:
            out.append(body_case(rng))
        elif roll < 0.7:
            out.append(header_case(rng, stack))
        elif roll < 0.88:
            out.append(path_case(rng))
        else:
            out.append(protocol_case(rng))
    return out


# --- sending and checking ------------------------------------------------------------------

def send_raw(port: int, data: bytes, timeout: float = 10.0) -> Answer:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        got = b""
        while b"\r\n\r\n" not in got:
            chunk = s.recv(65536)
            if not chunk:
                break
            got += chunk
        head, _, body = got.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1]) if lines and len(lines[0].split()) > 1 else -1
        headers = {k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:])}
        want = int(headers.get("content-length", "0") or 0)
        while len(body) < want:
            chunk = s.recv(65536)
            if not chunk:
                break
            body += chunk
        return Answer(status, headers, body)


def send(stack: LocalStack, clients: dict[str, httpx.Client], c: Case) -> Answer:
    base = stack.url(c.listener)
    if c.raw is not None:
        return send_raw(int(base.rsplit(":", 1)[1]), c.raw)
    r = clients[c.listener].request(c.method, base + c.path, headers=c.headers or {}, content=c.body)
    return Answer(r.status_code, {k.lower(): v for k, v in r.headers.items()}, r.content)


def problems(c: Case, a: Answer) -> list[str]:
    out = []
    if a.status not in c.expect:
        out.append(f"status {a.status}, expected {c.expect}")
    if a.status >= 500 and 500 not in c.expect:
        out.append("a server error")
    if a.status >= 400 and c.method != "HEAD":
        try:
            err = json.loads(a.body)["error"]
            if not (isinstance(err, dict) and {"message", "type", "param", "code"} <= set(err)):
                out.append(f"error shape {err!r}")
        except (ValueError, KeyError, TypeError):
            out.append(f"not JSON: {a.body[:120]!r}")
        if "json" not in a.headers.get("content-type", ""):
            out.append(f"content-type {a.headers.get('content-type')!r}")
    if a.status in (429, 503) and "retry-after" not in a.headers:
        out.append("no Retry-After")
    return out


class Background(threading.Thread):
    """Valid requests on every listener while the fuzz runs (10 per second): all must succeed."""

    def __init__(self, stack: LocalStack):
        super().__init__(daemon=True)
        self.stack = stack
        self.halt = threading.Event()
        self.sent = 0
        self.failed: list[str] = []

    def run(self) -> None:
        bodies = [("llm-gw", "/v1/chat/completions", _chat("travelhelper"), {}),
                  ("lora-gw", "/v1/completions", {"model": "lora-request", "prompt": "x", "max_tokens": 3},
                   {"host": "test.com"}),
                  ("reasoning-gw", "/v1/chat/completions", _chat("qwq"), {})]
        with httpx.Client(timeout=60) as client:
            while not self.halt.wait(0.1):
                listener, path, body, headers = bodies[self.sent % len(bodies)]
                self.sent += 1
                try:
                    r = client.post(self.stack.url(listener) + path, json=body, headers=headers)
                    if r.status_code != 200:
                        self.failed.append(f"{listener}: {r.status_code} {r.text[:200]}")
                except httpx.HTTPError as e:
                    self.failed.append(f"{listener}: {e!r}")

    def stop(self) -> None:
        self.halt.set()
        self.join()


def collect(stack: LocalStack, into: list[dict]) -> None:
    """Move every simulated server's recorded requests (GET /admin/requests on its admin port) into `into`."""
    for eps in stack.endpoints.values():
        for e in eps:
            with urllib.request.urlopen(f"http://{e.admin}/admin/requests?clear=1", timeout=5) as r:
                into += [{**req, "server": e.name} for req in json.load(r)["requests"]]


VALID = Case("valid", "valid request", "llm-gw", "POST", "/v1/chat/completions",
             {"content-type": "application/json"}, json.dumps(_chat("travelhelper")).encode())


def test_fuzz_through_the_gateway(stack):
    started = time.monotonic()
    clients = {name: httpx.Client(timeout=60) for name in ("llm-gw", "lora-gw", "reasoning-gw")}
    background = Background(stack)  # valid traffic alongside, on its own connections
    background.start()
    bad: list[str] = []
    seen: Counter = Counter()
    steered: Counter = Counter()
    received: list[dict] = []  # what reached the servers (read every so often: they keep the last 256)
    try:
        for i, c in enumerate(cases(stack, CASES, SEED)):
            if i % 150 == 149:
                collect(stack, received)
            a = send(stack, clients, c)
            seen[(c.kind, a.status)] += 1
            for p in problems(c, a):
                bad.append(f"case {i} [{c.kind}] {c.what}: {p}")
            if c.kind == "headers" and c.what == "routing-namespace headers" and a.status == 200:
                steered[a.headers.get(contract.TARGET_HEADER)] += 1
            if i % VALID_EVERY == VALID_EVERY - 1:
                v = send(stack, clients, VALID)
                if v.status != 200:
                    bad.append(f"valid request after case {i} ({c.what}): {v.status} {v.body[:200]!r}")
    finally:
        for cl in clients.values():
            cl.close()
        background.stop()
    print(f"fuzz seed {SEED}: {CASES} cases in {time.monotonic() - started:.1f}s: {dict(sorted(seen.items()))}")
    assert not bad, "\n".join(bad[:40])
    assert background.sent >= 10 and not background.failed, background.failed[:5]

    # No client chose the target model: `travelhelper` keeps its configured 90/10 split (a client's
    # rewrite header asked for travel-helper-v2 on many of these).
    total = sum(steered.values())
    assert total >= 30 and steered["travel-helper-v2"] / total < 0.35, steered

    # What reached the model servers: of the routing namespaces only what the picker sets.
    collect(stack, received)
    addresses = {e.address for eps in stack.endpoints.values() for e in eps}
    leaked: Counter = Counter()
    for req in received:
        for name, value in req["headers"]:
            if not name.startswith(contract.ROUTING_HEADER_PREFIXES):
                continue
            if name == contract.DESTINATION_HEADER and set(value.split(",")) <= addresses:
                continue  # the picker's own answer
            leaked[(req["server"], name, value[:40])] += 1
        assert not req["path"].startswith(("/admin", "/v1/load_lora", "/v1/unload_lora")), req
    assert not leaked, leaked
    by_server = Counter(req["server"] for req in received)
    assert len(received) >= CASES // 4 and len(by_server) >= 5, by_server

    # Nothing died (and so nothing was restarted).
    assert all(c.alive() for c in stack.supervisor.children) and not stack.supervisor.events, \
        stack.supervisor.events


def test_a_body_over_the_buffer_limit_is_refused_at_the_gateway(stack):
    """bufferLimit (20 MiB in the local stack) is enforced at the gateway listener for any route,
    with the API's error JSON; the connection and the stack serve on."""
    limit = stack.gw.buffer_limit
    assert limit == 20 * 1024 * 1024
    for listener, path in (("llm-gw", "/v1/chat/completions"), ("lora-gw", "/v1/completions")):
        body = b'{"model": "mymodel", "prompt": "' + b"x" * (limit + 1024) + b'"}'
        r = httpx.post(stack.url(listener) + path, content=body, headers={"content-type": "application/json",
                                                                            "host": "test.com"}, timeout=60)
        assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large", r.text[:300]
        assert "bufferLimit" in r.json()["error"]["message"]
    r = httpx.post(stack.url("llm-gw") + "/v1/chat/completions", json=_chat("mymodel"), timeout=30)
    assert r.status_code == 200


def test_models_list_the_client_facing_names_and_their_targets(stack):
    """GET /v1/models through the gateway, in OpenAI's shape (what client.models.list() and
    inference-perf read): the names clients send on each listener, with the targets behind them."""
    def models(listener: str, **headers) -> dict:
        r = httpx.get(stack.url(listener) + "/v1/models", headers=headers, timeout=10)
        assert r.status_code == 200 and r.headers["content-type"] == "application/json"
        listing = r.json()
        assert listing["object"] == "list"
        for m in listing["data"]:
            assert m["object"] == "model" and isinstance(m["created"], int) and m["owned_by"] == "infershift"
        return {m["id"]: m for m in listing["data"]}

    llm = models("llm-gw")
    assert set(llm) == {"mymodel", "travelhelper"}
    targets = {(t["model"], t["pool"]): t["share"] for t in llm["travelhelper"]["targets"]}
    assert targets == {("travel-helper-v1", "mymodel-pool-v1"): 0.81, ("travel-helper-v2", "mymodel-pool-v1"): 0.09,
                       ("travel-helper-v1", "mymodel-pool-v2"): 0.09, ("travel-helper-v2", "mymodel-pool-v2"): 0.01}
    assert {t["route"] for t in llm["mymodel"]["targets"]} == {"inference-route"}
    lora = models("lora-gw", host="test.com")
    assert {(t["model"], t["share"]) for t in lora["lora-request"]["targets"]} == {("tweet-summary", 0.5),
                                                                                  ("sql-lora", 0.5)}
    reasoning = models("reasoning-gw")
    assert {k: sorted(t["model"] for t in v["targets"]) for k, v in reasoning.items()} == {
        "qwq": ["deepseek-r1", "qwq-32b"]}
