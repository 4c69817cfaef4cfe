"""Child-process supervision: each child in its own process group, its output in a log
file, readiness by polling, and a stop that leaves nothing running (TERM, then KILL)."""
from __future__ import annotations

import atexit
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from infershift import proc


class ProcessError(RuntimeError):
    """A child exited or did not become ready."""


@dataclass
class Child:
    name: str
    argv: list[str]
    log: Path
    popen: subprocess.Popen

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


_signal_group = proc.signal_group


class Supervisor:
    def __init__(self, log_dir: Path, *, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep):
        self.log_dir = log_dir
        self.children: list[Child] = []
        self.clock = clock
        self.sleep = sleep
        atexit.register(self.stop_all)  # safety net if the caller forgets

    def start(self, name: str, argv: list[str], *, env: dict[str, str] | None = None,
              cwd: str | Path | None = None) -> Child:
        log = self.log_dir / f"{name}.log"
        with open(log, "ab") as out:
            popen = proc.spawn(argv, out=out, env={**os.environ, **(env or {})}, cwd=cwd)
        child = Child(name, argv, log, popen)
        self.children.append(child)
        return child

    def wait_ready(self, child: Child, ready: Callable[[], bool], timeout: float = 60.0) -> None:
        deadline = self.clock() + timeout
        while True:
            if not child.alive():
                raise ProcessError(
                    f"{child.name} exited with status {child.popen.returncode} before it was ready; "
                    f"log {child.log}:\n{child.log_tail()}")
            if ready():
                return
            if self.clock() > deadline:
                raise ProcessError(f"{child.name} not ready after {timeout:g}s; log {child.log}:\n{child.log_tail()}")
            self.sleep(0.1)

    def stop(self, child: Child, grace: float = 5.0) -> None:
        if child.alive():
            _signal_group(child.pid, signal.SIGTERM)
        _reap(child, grace)

    def stop_all(self, grace: float = 5.0) -> None:
        # SIGTERM to all first, so they shut down in parallel within one grace period.
        children, self.children = self.children, []
        for child in reversed(children):
            if child.alive():
                _signal_group(child.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for child in reversed(children):
            _reap(child, max(0.0, deadline - time.monotonic()))


def _reap(child: Child, grace: float) -> None:
    """Wait up to `grace` for a SIGTERMed child, then SIGKILL its group."""
    proc.stop_group(child.popen, grace, signalled=True)


def http_ok(url: str, timeout: float = 1.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def log_says(child: Child, text: str) -> Callable[[], bool]:
    def check() -> bool:
        try:
            return text in child.log.read_text(errors="replace")
        except OSError:
            return False
    return check
