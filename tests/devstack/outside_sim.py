"""A simulator started outside devstack (a model server already running, as `services.<s>.endpoints`
points at): its process, waited for until /health answers, always stopped."""
from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx

from infershift.devstack.ports import free_port


@contextlib.contextmanager
def outside_simulator(*args: str, cwd: str | None = None, timeout: float = 60) -> Iterator[int]:
    """`python -m infershift.sim ARGS --host 127.0.0.1 --port P`; yields P once it is healthy."""
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "infershift.sim", *args, "--host", "127.0.0.1", "--port", str(port)],
                              cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline and server.poll() is None, "the outside simulator did not start"
            time.sleep(0.1)
        yield port
    finally:
        server.terminate()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
