"""Child processes for the bench: start in their own process group, wait ready, stop, account CPU."""
from __future__ import annotations

import re
import socket
import time
import urllib.request
from pathlib import Path
from typing import Callable

import psutil

from infershift import envoy, proc

REPO = Path(__file__).resolve().parent.parent
MAIN_PY = REPO / ".venv" / "bin" / "python"
PICKER_PY = REPO / ".venv-picker" / "bin" / "python"
ROUTERS_VENV = REPO / ".venv-routers"
ENVOY = REPO / ".venv" / "bin" / "envoy"


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


LIVE: set["Proc"] = set()   # every child not yet stopped, so a signal handler can stop them all


def stop_all() -> None:
    for p in list(LIVE):
        p.stop(grace=2.0)


class Proc:
    """One child process (and its group), with its output in a log file."""

    def __init__(self, name: str, argv: list[str], log: Path, env: dict | None = None, cwd: Path = REPO):
        self.name = name
        self.argv = argv
        self.log = log
        log.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(log, "wb")
        self.p = proc.spawn(argv, out=self._fh, cwd=cwd, env=env)
        LIVE.add(self)

    @property
    def pid(self) -> int:
        return self.p.pid

    def alive(self) -> bool:
        return self.p.poll() is None

    def output(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def wait_for(self, ready: Callable[[], bool], timeout: float = 60.0, what: str = "ready") -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise RuntimeError(f"{self.name} exited with {self.p.returncode} before {what}:\n"
                                   f"{self.output()[-2000:]}")
            try:
                if ready():
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"{self.name} not {what} after {timeout}s:\n{self.output()[-2000:]}")

    def wait_log(self, pattern: str, count: int = 1, timeout: float = 60.0) -> list[re.Match]:
        rx = re.compile(pattern)
        found: list[re.Match] = []

        def ready() -> bool:
            found[:] = list(rx.finditer(self.output()))
            return len(found) >= count

        self.wait_for(ready, timeout, f"printing {count}x {pattern!r}")
        return found

    def cpu_seconds(self) -> float:
        """CPU time of the process and its live descendants."""
        try:
            ps = psutil.Process(self.pid)
            procs = [ps] + ps.children(recursive=True)
        except psutil.NoSuchProcess:
            return 0.0
        total = 0.0
        for p in procs:
            try:
                t = p.cpu_times()
                total += t.user + t.system
            except psutil.NoSuchProcess:
                pass
        return total

    def stop(self, grace: float = 5.0) -> None:
        LIVE.discard(self)
        proc.stop_group(self.p, grace)  # nothing of its group may outlive it
        self._fh.close()


def http_ok(url: str, timeout: float = 1.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return 200 <= r.status < 300
    except OSError:
        return False


def validate_envoy(config_path: Path) -> None:
    """`envoy --mode validate`: every config the bench writes is checked before use."""
    envoy.validate_file(config_path, envoy=str(ENVOY))


def start_envoy(name: str, config_path: Path, admin_port: int, workdir: Path, concurrency: int = 1) -> Proc:
    validate_envoy(config_path)
    p = Proc(name, envoy.argv(config_path, envoy=str(ENVOY), concurrency=concurrency), workdir / f"{name}.log")
    p.wait_for(lambda: http_ok(f"http://127.0.0.1:{admin_port}/ready"), 60, "ready")
    return p
