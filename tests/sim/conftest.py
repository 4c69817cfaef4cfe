import asyncio
import socket

import aiohttp
import pytest
import pytest_asyncio

from infershift.sim.lora import Adapter
from infershift.sim.profiles import get_profile
from infershift.sim.server import ServerConfig, SimServer


def make_config(profile="h100-8b", time_scale=1.0, **kw):
    kw.setdefault("model", "/models/llama-3.1-8b")
    kw.setdefault("served", ["base"])
    return ServerConfig(profile=get_profile(profile).scaled(time_scale=time_scale), **kw)


@pytest_asyncio.fixture
async def start_server():
    """start_server(**config) -> (server, base_url, session); all stopped at teardown."""
    servers, sessions = [], []

    async def start(name="sim-test-0", **kw):
        s = SimServer(make_config(**kw), name)
        port = await s.start("127.0.0.1", 0, admin_port=0)  # admin endpoints on a port of their own
        servers.append(s)
        sess = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60))
        sessions.append(sess)
        return s, f"http://127.0.0.1:{port}", sess

    yield start
    for sess in sessions:
        await sess.close()
    for s in servers:
        await s.stop()


def free_port_range(n: int) -> int:
    """A base port with n consecutive free loopback ports (probed)."""
    for _ in range(200):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            base = s.getsockname()[1]
        if base + n >= 65535:
            continue
        ok = True
        for p in range(base, base + n):
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", p))
                except OSError:
                    ok = False
                    break
        if ok:
            return base
    raise RuntimeError("no free port range")


def admin(server: SimServer) -> str:
    """Base URL of a server's admin port (/admin/faults, /admin/predict)."""
    return f"http://127.0.0.1:{server.admin_port}"


ADAPTERS = [Adapter("travel-helper-v1", "/models/lora-v1"), Adapter("travel-helper-v2", "/models/lora-v2")]
