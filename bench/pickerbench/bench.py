"""Benchmark: `python -m bench.pickerbench.bench` prints the picker's figures, each against a baseline measured
in the same run (see picker/BENCH.md for the targets and the last recorded results).

1. Scheduler decision time at 8, 64 and 256 endpoints (in process, default profile).
2. Envoy straight to a model server vs Envoy + picker at a fixed request rate: added latency p50/p99
   and the picker's CPU time per request. Envoy talks TLS to the picker (its default, as a
   cluster's gateway); the same picker in plaintext (`--secure-serving=false`) is a same-run baseline.
3. The highest request rate one picker process sustains (closed loop, all cores busy).
4. 220 KB prompts at concurrency 20: added latency p50.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import time

import yaml

from . import loadgen
from infershift.picker.config import parse_config
from infershift.picker.decide import decide
from infershift.picker.metrics_parse import ServerMetrics
from infershift.picker.pool import Pool
import sys

from .procs import REPO, Proc, free_port, start_envoy, start_modelservers, start_picker, tempdir, wait_until
from infershift.picker.envoy_config import direct_config, gateway_config


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p / 100 * len(xs)))]


# --- 1. decision time ------------------------------------------------------------------------


def decision_bench(n_endpoints: int, iters: int, prompt_chars: int = 2000) -> dict:
    rng = random.Random(1)
    cfg = parse_config({"endpoints": [{"address": f"10.0.{i // 250}.{i % 250}:8000"} for i in range(n_endpoints)],
                        "models": {"travel": {"targets": [{"model": "t-v1", "weight": 90},
                                                          {"model": "t-v2", "weight": 10}]}}})
    clock = [0.0]
    pool = Pool(cfg, clock=lambda: clock[0], rng=rng)
    for e in pool.endpoints.values():
        e.last_ok = 0.0
        e.served_models = frozenset({"llama", "t-v1", "t-v2"})
        e.base_models = frozenset({"llama"})
        e.metrics = ServerMetrics(waiting=rng.randint(0, 4), running=rng.randint(0, 20), kv_usage=rng.random() * 0.7,
                                  running_loras=frozenset({"t-v1"}) if rng.random() < 0.3 else frozenset(), max_lora=4)
    systems = ["You are a helpful travel agent. " * 20, "You answer SQL questions. " * 25, "Summarise. " * 60]
    bodies = []
    for i in range(200):
        prompt = rng.choice(systems) + f"user {i}: " + "question text " * ((prompt_chars - 800) // 14)
        bodies.append(json.dumps({"model": "travel" if i % 2 else "llama", "prompt": prompt, "max_tokens": 64}).encode())
    headers = {":path": "/v1/completions", "content-type": "application/json"}
    gen = pool.gen
    sched_times, full_times = [], []
    from infershift.picker.request_body import parse_body
    from infershift.picker.routing import resolve
    from infershift.picker.scheduling import SchedRequest
    eps = pool.ready()
    for i in range(iters):  # the whole decision, as the ext_proc handler runs it
        clock[0] += 0.002  # 500 req/s of simulated time: the 10 ms snapshot is rebuilt every 5 requests
        if i % 25 == 0:
            for e in eps:
                e.last_ok = clock[0]
        body = bodies[i % len(bodies)]
        t0 = time.perf_counter()
        decide(pool, gen, headers, body, None)
        full_times.append(time.perf_counter() - t0)
    reqs = []
    for i in range(len(bodies)):
        parsed = parse_body(bodies[i], "application/json", 1 << 30)
        reqs.append((parsed, resolve(parsed.model, headers, cfg.models, {}, None, eps, rng).target_model))
    for i in range(iters):  # the scheduler alone, on already-parsed requests
        parsed, target = reqs[i % len(reqs)]
        req = SchedRequest(target, parsed.prompt)
        t0 = time.perf_counter()
        gen.scheduler.schedule(req, eps, cache_key=(i // 5,))
        sched_times.append(time.perf_counter() - t0)
    us = lambda xs, p: pct(xs, p) * 1e6  # noqa: E731
    return {"endpoints": n_endpoints, "schedule_p50_us": us(sched_times, 50), "schedule_p99_us": us(sched_times, 99),
            "decide_p50_us": us(full_times, 50), "decide_p99_us": us(full_times, 99),
            "decide_mean_us": statistics.mean(full_times) * 1e6}


# --- 1b. the servicer's own work per request, without the gRPC transport -----------------------


def servicer_bench(iters: int) -> dict:
    """Feed the ext_proc servicer the 4 messages Envoy sends for one request (serialized bytes in,
    serialized bytes out), in process: the picker's Python cost per request minus grpc.aio."""
    from envoy.config.core.v3 import base_pb2
    from envoy.service.ext_proc.v3 import external_processor_pb2 as pb

    from infershift.picker.extproc import ExtProc
    from infershift.picker.telemetry import Telemetry

    cfg = parse_config({"endpoints": [{"address": f"10.0.0.{i}:8000", "models": ["llama"]} for i in range(8)],
                        "models": {"travel": {"targets": [{"model": "llama", "weight": 1}]}}})
    pool = Pool(cfg, clock=time.monotonic, rng=random.Random(1))
    for e in pool.endpoints.values():
        e.last_ok = float("inf")
    svc = ExtProc(pool, Telemetry())

    def hm(pairs):
        return base_pb2.HeaderMap(headers=[base_pb2.HeaderValue(key=k, raw_value=v.encode()) for k, v in pairs])

    body = json.dumps({"model": "travel", "prompt": "Hello, how are you? " * 20, "max_tokens": 16}).encode()
    from envoy.extensions.filters.http.ext_proc.v3 import processing_mode_pb2 as pm

    one_rt = pb.ProtocolConfiguration(request_body_mode=pm.ProcessingMode.STREAMED,
                                      send_body_without_waiting_for_header_response=True)
    plain = json.dumps({"model": "llama", "prompt": "Hello, how are you? " * 20, "max_tokens": 16}).encode()
    wire_one = [m.SerializeToString() for m in (  # the recommended setup, model passed through: 2 messages
        pb.ProcessingRequest(request_headers=pb.HttpHeaders(headers=hm([
            (":method", "POST"), (":path", "/v1/completions"), (":authority", "gw"), ("content-type", "application/json"),
            ("x-request-id", "r1"), ("user-agent", "bench"), ("content-length", str(len(plain)))])), protocol_config=one_rt),
        pb.ProcessingRequest(request_body=pb.HttpBody(body=plain, end_of_stream=True)))]
    wire = [m.SerializeToString() for m in (
        pb.ProcessingRequest(request_headers=pb.HttpHeaders(headers=hm([
            (":method", "POST"), (":path", "/v1/completions"), (":authority", "gw"), ("content-type", "application/json"),
            ("x-request-id", "r1"), ("user-agent", "bench"), ("content-length", str(len(body)))]))),
        pb.ProcessingRequest(request_body=pb.HttpBody(body=body, end_of_stream=True)),
        pb.ProcessingRequest(response_headers=pb.HttpHeaders(headers=hm([(":status", "200"),
                                                                         ("content-type", "application/json")]))),
        pb.ProcessingRequest(response_body=pb.HttpBody(body=b'{"id":"1","model":"llama","choices":[]}',
                                                       end_of_stream=True)))]

    async def stream(msgs):
        for w in msgs:
            yield pb.ProcessingRequest.FromString(w)

    async def run(n, msgs):
        for _ in range(n):
            async for r in svc.Process(stream(msgs), None):
                r.SerializeToString()

    out = {}
    for key, msgs in (("servicer_us_per_req", wire), ("servicer_one_rt_us_per_req", wire_one)):
        asyncio.run(run(200, msgs))
        t0 = time.perf_counter()
        asyncio.run(run(iters, msgs))
        out[key] = (time.perf_counter() - t0) / iters * 1e6
    return out


# --- 2-4. data plane -------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def fixed_rate(port: int, rate: float, seconds: float, body: bytes) -> list[float]:
    """Open loop at a fixed rate (picker/loadgen.py: an aiohttp client cost the 2-core box more than
    the picker did); latencies of a clean run, or RuntimeError."""
    r = await loadgen.fixed_rate(port, rate, seconds, body)
    r.raise_for_errors()
    return r.latencies


async def closed_loop(port: int, concurrency: int, seconds: float, body: bytes) -> tuple[int, list[float]]:
    r = await loadgen.closed_loop(port, concurrency, seconds, body)
    r.raise_for_errors()
    return len(r.latencies), r.latencies


async def _aiohttp_fixed_rate(port: int, rate: float, seconds: float, body: bytes) -> int:
    """The load generator this benchmark used before picker/loadgen.py, kept as the client baseline."""
    import aiohttp

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as s:
        async def one() -> None:
            async with s.post(f"http://127.0.0.1:{port}/v1/completions", data=body,
                              headers={"content-type": "application/json"}) as r:
                await r.read()
                if r.status != 200:
                    raise RuntimeError(f"HTTP {r.status}")

        tasks, start = [], time.perf_counter()
        for i in range(int(rate * seconds)):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.ensure_future(one()))
        await asyncio.gather(*tasks)
    return len(tasks)


def client_bench(rate: float, seconds: float) -> dict:
    """CPU per request of the load generator itself against a model server in another process:
    picker/loadgen.py on uvloop and on asyncio vs an aiohttp client."""
    import uvloop

    wd = tempdir("picker-bench-client-")
    port = free_port()
    server = start_modelservers([{"port": port, "name": "client-0", "models": ["llama"]}], wd)
    body = json.dumps({"model": "llama", "prompt": "Hello, how are you? " * 20, "max_tokens": 16}).encode()
    out = {}
    try:
        for name, runner, coro in (
                ("loadgen, uvloop", uvloop.run, lambda: fixed_rate(port, rate, seconds, body)),
                ("loadgen, asyncio", asyncio.run, lambda: fixed_rate(port, rate, seconds, body)),
                ("aiohttp client, asyncio", asyncio.run, lambda: _aiohttp_fixed_rate(port, rate, seconds, body))):
            c0 = time.process_time()
            res = runner(coro())
            n = res if isinstance(res, int) else len(res)
            out[name] = (time.process_time() - c0) / n * 1e3
    finally:
        server.stop()
    return out


def dataplane_bench(rate: float, seconds: float, big_kb: int, big_conc: int, big_seconds: float,
                    parts: set[str] = frozenset({"rate", "max", "big"}), loop: str = "asyncio",
                    model: str = "llama", sample: float = 0.1, classic: bool = True, alt: str | None = "grpcio",
                    plain: bool = True) -> dict:
    """Envoy set up the recommended way (one round trip, responses only when asked) vs direct, with
    the classic GIE setup (headers, body, response headers) and the no-op servicer as same-run baselines."""
    wd = tempdir("picker-bench-")
    sport = free_port()
    procs = []
    try:
        procs.append(start_modelservers([{"port": sport, "name": "bench-0", "models": ["llama"]}], wd))
        upstream = f"127.0.0.1:{sport}"
        cfg_path = os.path.join(wd, "picker.yaml")
        with open(cfg_path, "w") as f:
            yaml.safe_dump({"pool": {"name": "bench"}, "endpoints": [{"address": upstream, "models": ["llama"]}],
                            "models": {"travel": {"targets": [{"model": "llama", "weight": 1}]}},
                            "limits": {"maxBodyBytes": 8 * 1024 * 1024},
                            "telemetry": {"responseSampleRate": sample}}, f)
        gp = free_port()
        picker = start_picker(cfg_path, wd, grpc_port=gp, health_port=free_port(), metrics_port=free_port(),
                              extra=["--log-level", "warning", "--loop", loop])
        procs.append(picker)
        dl, da = free_port(), free_port()
        procs.append(start_envoy(direct_config(listen_port=dl, admin_port=da, upstream=upstream), wd, da))
        gl, ga = free_port(), free_port()
        procs.append(start_envoy(gateway_config(listen_port=gl, admin_port=ga, picker_port=gp, pool=[upstream]), wd, ga))
        # floors: the same Envoy setup in front of a no-op servicer, on grpc.aio and on the picker's h2 server
        floors = {}
        for transport in ("grpcio", "h2"):
            np_ = free_port()
            noop = Proc([sys.executable, "-m", "bench.pickerbench.noop_extproc", str(np_), upstream, "--transport", transport],
                        os.path.join(wd, f"noop-{transport}.log"), env=dict(os.environ, PYTHONPATH=str(REPO)))
            procs.append(noop)
            wait_until(lambda: "ready" in noop.output(), 30, "noop ext_proc", noop)
            nl, na = free_port(), free_port()
            procs.append(start_envoy(gateway_config(listen_port=nl, admin_port=na, picker_port=np_, pool=[upstream]),
                                     wd, na))
            floors[transport] = (noop, nl, np_)
        noop, nl, np_ = floors["grpcio"]
        ll = lib_picker = None
        lib = alt is not None
        if lib:  # the same picker on another transport (grpc.aio by default), recommended setup
            lgp = free_port()
            lib_picker = start_picker(cfg_path, wd, grpc_port=lgp, health_port=free_port(), metrics_port=free_port(),
                                      extra=["--log-level", "warning", "--loop", loop, "--grpc-server", alt])
            procs.append(lib_picker)
            ll, la = free_port(), free_port()
            procs.append(start_envoy(gateway_config(listen_port=ll, admin_port=la, picker_port=lgp, pool=[upstream]),
                                     wd, la))
        pl = plain_picker = None
        if plain:  # the same picker and setup without TLS between Envoy and the picker
            pgp = free_port()
            plain_picker = start_picker(cfg_path, wd, grpc_port=pgp, health_port=free_port(), metrics_port=free_port(),
                                        extra=["--log-level", "warning", "--loop", loop, "--secure-serving=false"])
            procs.append(plain_picker)
            pl, pla = free_port(), free_port()
            procs.append(start_envoy(gateway_config(listen_port=pl, admin_port=pla, picker_port=pgp, pool=[upstream],
                                                    picker_tls=False), wd, pla))
        cl = ncl = None
        if classic:  # the same picker and no-op servicer behind the classic three-message setup
            cl, ca = free_port(), free_port()
            procs.append(start_envoy(gateway_config(listen_port=cl, admin_port=ca, picker_port=gp, pool=[upstream],
                                                    classic=True), wd, ca))
            ncl, nca = free_port(), free_port()
            procs.append(start_envoy(gateway_config(listen_port=ncl, admin_port=nca, picker_port=np_, pool=[upstream],
                                                    classic=True), wd, nca))

        small = json.dumps({"model": model, "prompt": "Hello, how are you? " * 20, "max_tokens": 16}).encode()
        big = json.dumps({"model": model, "prompt": ("lorem ipsum dolor sit amet " * (big_kb * 40))[:big_kb * 1024],
                          "max_tokens": 16}).encode()
        import uvloop

        run = uvloop.run  # the load generator's own loop: the cheaper one leaves more CPU to what is measured
        run(fixed_rate(dl, 100, 1, small))  # warm up both paths
        run(fixed_rate(gl, 100, 1, small))
        if ll:
            run(fixed_rate(ll, 100, 1, small))
        if pl:
            run(fixed_rate(pl, 100, 1, small))
        out: dict = {"rate": rate, "seconds": seconds}
        if "rate" in parts:
            out.update(_rate_part(run, dl, gl, picker, rate, seconds, small))
            for transport, key in (("grpcio", "noop"), ("h2", "noop_h2")):
                fp, fl, _ = floors[transport]
                c0 = cpu_seconds(fp.p.pid)
                floor = run(fixed_rate(fl, rate, seconds, small))
                out[f"{key}_cpu_ms_per_req"] = (cpu_seconds(fp.p.pid) - c0) / len(floor) * 1e3
                out[f"{key}_p50_ms"], out[f"{key}_p99_ms"] = pct(floor, 50) * 1e3, pct(floor, 99) * 1e3
            if lib:
                c0 = cpu_seconds(lib_picker.p.pid)
                via = run(fixed_rate(ll, rate, seconds, small))
                out["lib_cpu_ms_per_req"] = (cpu_seconds(lib_picker.p.pid) - c0) / len(via) * 1e3
                out["lib_p50_ms"], out["lib_p99_ms"] = pct(via, 50) * 1e3, pct(via, 99) * 1e3
            if plain:
                c0 = cpu_seconds(plain_picker.p.pid)
                via = run(fixed_rate(pl, rate, seconds, small))
                out["plain_cpu_ms_per_req"] = (cpu_seconds(plain_picker.p.pid) - c0) / len(via) * 1e3
                out["plain_p50_ms"], out["plain_p99_ms"] = pct(via, 50) * 1e3, pct(via, 99) * 1e3
            if classic:
                c0 = cpu_seconds(picker.p.pid)
                via = run(fixed_rate(cl, rate, seconds, small))
                out["classic_cpu_ms_per_req"] = (cpu_seconds(picker.p.pid) - c0) / len(via) * 1e3
                out["classic_p50_ms"], out["classic_p99_ms"] = pct(via, 50) * 1e3, pct(via, 99) * 1e3
                c0 = cpu_seconds(noop.p.pid)
                floor = run(fixed_rate(ncl, rate, seconds, small))
                out["noop_classic_cpu_ms_per_req"] = (cpu_seconds(noop.p.pid) - c0) / len(floor) * 1e3
                out["noop_classic_p50_ms"], out["noop_classic_p99_ms"] = pct(floor, 50) * 1e3, pct(floor, 99) * 1e3
        if "max" in parts:
            out.update(_max_part(run, dl, gl, picker, small))
        if "big" in parts:
            out.update(_big_part(run, dl, gl, picker, big, big_kb, big_conc, big_seconds))
            if classic:
                c = _big_part(run, dl, cl, picker, big, big_kb, big_conc, big_seconds)
                out.update({f"classic_{k}": v for k, v in c.items()})
            if lib:
                c = _big_part(run, dl, ll, lib_picker, big, big_kb, big_conc, big_seconds)
                out.update({f"lib_{k}": v for k, v in c.items()})
            if plain:
                c = _big_part(run, dl, pl, plain_picker, big, big_kb, big_conc, big_seconds)
                out.update({f"plain_{k}": v for k, v in c.items()})
        return out
    finally:
        for p in reversed(procs):
            p.stop()


def _rate_part(run, dl, gl, picker, rate, seconds, small) -> dict:
        out = {}
        direct = run(fixed_rate(dl, rate, seconds, small))
        c0 = cpu_seconds(picker.p.pid)
        via = run(fixed_rate(gl, rate, seconds, small))
        c1 = cpu_seconds(picker.p.pid)
        out["direct_p50_ms"], out["direct_p99_ms"] = pct(direct, 50) * 1e3, pct(direct, 99) * 1e3
        out["picker_p50_ms"], out["picker_p99_ms"] = pct(via, 50) * 1e3, pct(via, 99) * 1e3
        out["added_p50_ms"] = out["picker_p50_ms"] - out["direct_p50_ms"]
        out["added_p99_ms"] = out["picker_p99_ms"] - out["direct_p99_ms"]
        out["picker_cpu_ms_per_req"] = (c1 - c0) / len(via) * 1e3
        return out


def _max_part(run, dl, gl, picker, small) -> dict:
        out = {}
        c0, t0 = cpu_seconds(picker.p.pid), time.perf_counter()
        n, _ = run(closed_loop(gl, 64, 5, small))
        c1, t1 = cpu_seconds(picker.p.pid), time.perf_counter()
        out["max_rps_closed_loop"] = n / (t1 - t0)
        out["picker_cpu_util_at_max"] = (c1 - c0) / (t1 - t0)
        out["max_rps_picker_cpu_bound"] = n / (c1 - c0) if c1 > c0 else float("inf")
        n_direct, _ = run(closed_loop(dl, 64, 3, small))
        out["max_rps_direct"] = n_direct / 3
        return out


def _big_part(run, dl, gl, picker, big, big_kb, big_conc, big_seconds) -> dict:
        out = {}
        run(closed_loop(dl, big_conc, 1, big))
        run(closed_loop(gl, big_conc, 1, big))
        _, big_direct = run(closed_loop(dl, big_conc, big_seconds, big))
        c0 = cpu_seconds(picker.p.pid)
        _, big_via = run(closed_loop(gl, big_conc, big_seconds, big))
        out["big_picker_cpu_ms_per_req"] = (cpu_seconds(picker.p.pid) - c0) / len(big_via) * 1e3
        out["big_rps_direct"], out["big_rps_picker"] = len(big_direct) / big_seconds, len(big_via) / big_seconds
        out["big_kb"] = big_kb
        out["big_direct_p50_ms"] = pct(big_direct, 50) * 1e3
        out["big_picker_p50_ms"] = pct(big_via, 50) * 1e3
        out["big_added_p50_ms"] = out["big_picker_p50_ms"] - out["big_direct_p50_ms"]
        out["big_direct_p99_ms"] = pct(big_direct, 99) * 1e3
        out["big_picker_p99_ms"] = pct(big_via, 99) * 1e3
        return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.pickerbench.bench")
    ap.add_argument("--rate", type=float, default=500)
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--decision-iters", type=int, default=5000)
    ap.add_argument("--big-kb", type=int, default=220)
    ap.add_argument("--big-concurrency", type=int, default=20)
    ap.add_argument("--big-seconds", type=float, default=5)
    ap.add_argument("--loop", choices=["asyncio", "uvloop"], default="asyncio", help="the picker's event loop")
    ap.add_argument("--model", default="llama",
                    help="model the load asks for: llama (passed through) or travel (rewritten to llama, so every "
                         "response comes back to the picker to restore the name)")
    ap.add_argument("--sample", type=float, default=0.1, help="the picker's telemetry.responseSampleRate")
    ap.add_argument("--no-classic", action="store_true", help="skip the classic-setup baselines (faster)")
    ap.add_argument("--no-plaintext", action="store_true",
                    help="skip the same picker without TLS (--secure-serving=false) as a baseline")
    ap.add_argument("--alt-transport", choices=["grpcio", "grpclib", "none"], default="grpcio",
                    help="also measure the same picker on this ext_proc transport (default grpcio: grpc.aio)")
    ap.add_argument("--parts", default="decision,rate,max,big",
                    help="comma list of: decision, rate (fixed-rate added latency), max (closed loop), big (220 KB), "
                         "client (the load generator's own CPU; not in the default)")
    a = ap.parse_args(argv)
    alt = None if a.alt_transport == "none" else a.alt_transport
    parts = set(a.parts.split(","))
    print("== scheduler decision time (default profile: 2 filters, 4 scorers incl. prefix; ~2 KB prompts;\n"
          "   500 req/s of simulated time, so the 10 ms endpoint snapshot is rebuilt every 5th request)")
    print(f"{'endpoints':>9} {'schedule p50':>13} {'p99':>9} {'parse+route+schedule p50':>25} {'p99':>9}")
    for n in ((8, 64, 256) if "decision" in parts else ()):
        r = decision_bench(n, a.decision_iters)
        print(f"{n:>9} {r['schedule_p50_us']:>10.1f} µs {r['schedule_p99_us']:>6.1f} µs "
              f"{r['decide_p50_us']:>22.1f} µs {r['decide_p99_us']:>6.1f} µs")
    if "decision" in parts:
        r = servicer_bench(a.decision_iters)
        print(f"\nservicer work per request in process, no gRPC transport: classic setup with a rewritten model "
              f"(4 messages parsed and answered) {r['servicer_us_per_req']:.0f} µs; recommended setup, model passed "
              f"through (2 messages) {r['servicer_one_rt_us_per_req']:.0f} µs")
    if "client" in parts:
        print(f"\n== the load generator's own CPU per request, {a.rate:.0f} req/s for {a.seconds:.0f} s")
        for name, ms in client_bench(a.rate, a.seconds).items():
            print(f"{name}: {ms:.3f} ms")
    if not parts & {"rate", "max", "big"}:
        return
    r = dataplane_bench(a.rate, a.seconds, a.big_kb, a.big_concurrency, a.big_seconds, parts, a.loop,
                        a.model, a.sample, not a.no_classic, alt, not a.no_plaintext)
    print(f"\n(model {a.model!r}, responseSampleRate {a.sample}, picker loop {a.loop})")
    if "rate" in parts:
        print(f"\n(load average when starting: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores)")
        print(f"\n== Envoy direct vs Envoy + picker, {r['rate']:.0f} req/s for {r['seconds']:.0f} s (small prompts)")
        print(f"direct:        p50 {r['direct_p50_ms']:.2f} ms   p99 {r['direct_p99_ms']:.2f} ms")
        print(f"with picker:   p50 {r['picker_p50_ms']:.2f} ms   p99 {r['picker_p99_ms']:.2f} ms")
        print(f"added:         p50 {r['added_p50_ms']:.2f} ms   p99 {r['added_p99_ms']:.2f} ms")
        print(f"picker CPU:    {r['picker_cpu_ms_per_req']:.3f} ms per request (TLS between Envoy and the picker)")
        if "plain_p50_ms" in r:
            print(f"same picker, plaintext (--secure-serving=false): p50 {r['plain_p50_ms']:.2f} ms   "
                  f"p99 {r['plain_p99_ms']:.2f} ms   CPU {r['plain_cpu_ms_per_req']:.3f} ms per request")
        for key, name in (("noop_h2", "the picker's h2 server"), ("noop", "grpc.aio")):
            print(f"floor: no-op servicer on {name}, same Envoy setup: p50 {r[key + '_p50_ms']:.2f} ms   "
                  f"p99 {r[key + '_p99_ms']:.2f} ms   CPU {r[key + '_cpu_ms_per_req']:.3f} ms per request")
        if "lib_p50_ms" in r:
            print(f"picker on {alt} (--grpc-server {alt}), same setup: p50 {r['lib_p50_ms']:.2f} ms   "
                  f"p99 {r['lib_p99_ms']:.2f} ms   CPU {r['lib_cpu_ms_per_req']:.3f} ms per request")
        if "classic_p50_ms" in r:
            print(f"classic setup (headers, BUFFERED body, response headers): picker p50 {r['classic_p50_ms']:.2f} ms   "
                  f"p99 {r['classic_p99_ms']:.2f} ms   CPU {r['classic_cpu_ms_per_req']:.3f} ms per request; "
                  f"no-op p50 {r['noop_classic_p50_ms']:.2f} ms   CPU {r['noop_classic_cpu_ms_per_req']:.3f} ms per request")
    if "max" in parts:
        print("\n== highest rate, closed loop (64 concurrent, everything on this machine's cores)")
        print(f"Envoy direct: {r['max_rps_direct']:.0f} req/s; Envoy + picker: {r['max_rps_closed_loop']:.0f} req/s "
          f"(picker at {r['picker_cpu_util_at_max'] * 100:.0f}% of one core; "
          f"one picker core would sustain ~{r['max_rps_picker_cpu_bound']:.0f} req/s)")
    if "big" in parts:
        print(f"\n== {r['big_kb']} KB prompts, concurrency {a.big_concurrency}")
        print(f"direct p50 {r['big_direct_p50_ms']:.2f} ms, with picker p50 {r['big_picker_p50_ms']:.2f} ms, "
          f"added p50 {r['big_added_p50_ms']:.2f} ms (p99 {r['big_direct_p99_ms']:.1f} -> {r['big_picker_p99_ms']:.1f} ms)")
        print(f"throughput {r['big_rps_direct']:.0f} -> {r['big_rps_picker']:.0f} req/s; "
              f"picker CPU {r['big_picker_cpu_ms_per_req']:.2f} ms per request")
        if "plain_big_picker_p50_ms" in r:
            print(f"same picker, plaintext: direct p50 {r['plain_big_direct_p50_ms']:.2f} ms, with picker p50 "
                  f"{r['plain_big_picker_p50_ms']:.2f} ms, added p50 {r['plain_big_added_p50_ms']:.2f} ms; "
                  f"picker CPU {r['plain_big_picker_cpu_ms_per_req']:.2f} ms per request")
        if "lib_big_picker_p50_ms" in r:
            print(f"picker on {alt}: direct p50 {r['lib_big_direct_p50_ms']:.2f} ms, with picker p50 "
                  f"{r['lib_big_picker_p50_ms']:.2f} ms, added p50 {r['lib_big_added_p50_ms']:.2f} ms; "
                  f"picker CPU {r['lib_big_picker_cpu_ms_per_req']:.2f} ms per request")
        if "classic_big_picker_p50_ms" in r:
            print(f"classic setup: direct p50 {r['classic_big_direct_p50_ms']:.2f} ms, with picker p50 "
                  f"{r['classic_big_picker_p50_ms']:.2f} ms, added p50 {r['classic_big_added_p50_ms']:.2f} ms; "
                  f"picker CPU {r['classic_big_picker_cpu_ms_per_req']:.2f} ms per request")


if __name__ == "__main__":
    main()
