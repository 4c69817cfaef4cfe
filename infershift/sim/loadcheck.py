"""CPU budget check: N simulated servers in one process under a steady request rate.

    python -m infershift.sim.loadcheck [--servers 16] [--rate 200] [--seconds 20] [--stream-fraction 0.1]

Starts `python -m infershift.sim --servers N` as a child process, measures its CPU time
(/proc/<pid>/stat) first while idle and then under Poisson load sent round-robin
from this process, and prints CPU seconds per request and cores used.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import random
import socket
import subprocess
import sys
import time

import aiohttp

from infershift.proc import spawn, stop_group

_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK   # utime + stime


def free_base_port(n: int) -> int:
    for _ in range(200):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            base = s.getsockname()[1]
        if base + n < 65535 and all(_free(p) for p in range(base, base + n)):
            return base
    raise RuntimeError("no free port range")


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


async def _load(ports, rate, seconds, stream_fraction, rng, max_output=256):
    prefixes = ["You are a helpful assistant. " * rng.randint(5, 60) for _ in range(8)]
    stats = {"ok": 0, "err": 0, "sent": 0}
    conn = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=conn, timeout=aiohttp.ClientTimeout(total=120)) as sess:
        async def one(i):
            port = ports[i % len(ports)]
            body = {"model": "sim", "prompt": rng.choice(prefixes) + f"question {i}",
                    "max_tokens": rng.randint(min(32, max_output), max_output), "ignore_eos": True}
            stream = rng.random() < stream_fraction
            if stream:
                body["stream"] = True
            try:
                async with sess.post(f"http://127.0.0.1:{port}/v1/completions", json=body) as r:
                    if stream:
                        async for _ in r.content:
                            pass
                    else:
                        await r.read()
                    stats["ok" if r.status == 200 else "err"] += 1
            except aiohttp.ClientError:
                stats["err"] += 1

        tasks = []
        t_end = time.monotonic() + seconds
        i = 0
        next_t = time.monotonic()
        while next_t < t_end:
            await asyncio.sleep(max(0.0, next_t - time.monotonic()))
            tasks.append(asyncio.create_task(one(i)))
            i += 1
            next_t += rng.expovariate(rate)
        stats["sent"] = i
        stats["send_seconds"] = seconds
        await asyncio.gather(*tasks)
    return stats


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="python -m infershift.sim.loadcheck")
    ap.add_argument("--servers", type=int, default=16)
    ap.add_argument("--rate", type=float, default=200.0, help="requests per second in total")
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--stream-fraction", type=float, default=0.1)
    ap.add_argument("--profile", default="h100-8b")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--max-output", type=int, default=256, help="output tokens per request: 32..this")
    ap.add_argument("--stream-coalesce-ms", type=float, default=0.0, help="passed to the simulator")
    a = ap.parse_args(argv)
    base = free_base_port(a.servers)
    cmd = [sys.executable, "-m", "infershift.sim", "--profile", a.profile, "--model", "sim", "--port", str(base),
           "--servers", str(a.servers), "--stream-coalesce-ms", str(a.stream_coalesce_ms)]
    proc = spawn(cmd, out=subprocess.PIPE, text=True)
    try:
        for _ in range(a.servers):
            line = proc.stdout.readline()  # type: ignore[union-attr]
            if not line:
                raise SystemExit("sim exited before listening")
        ports = list(range(base, base + a.servers))
        time.sleep(0.5)
        c0 = cpu_seconds(proc.pid)
        time.sleep(min(a.seconds, 5.0))
        idle = (cpu_seconds(proc.pid) - c0) / min(a.seconds, 5.0)
        c1, t1 = cpu_seconds(proc.pid), time.monotonic()
        stats = asyncio.run(_load(ports, a.rate, a.seconds, a.stream_fraction, random.Random(a.seed),
                                  a.max_output))
        cpu = cpu_seconds(proc.pid) - c1
        wall = time.monotonic() - t1
    finally:
        stop_group(proc, 10)
    n = stats["ok"] + stats["err"]
    per_req = cpu / max(n, 1)
    print(f"servers={a.servers} profile={a.profile} target_rate={a.rate:g}/s "
          f"stream_fraction={a.stream_fraction:g} stream_coalesce_ms={a.stream_coalesce_ms:g}")
    print(f"requests: sent={stats['sent']} in {a.seconds:g}s ({stats['sent'] / a.seconds:.1f}/s) "
          f"ok={stats['ok']} errors={stats['err']}; all answered after {wall:.1f}s")
    print(f"sim process CPU: idle={idle:.4f} cores; {cpu:.2f} s CPU for the whole run")
    print(f"CPU per request: {1000 * per_req:.3f} ms  ->  {per_req * a.rate:.3f} cores at {a.rate:g} req/s "
          f"(budget: < 1 core)")


if __name__ == "__main__":
    main()
