"""Child-process supervision: each child in its own process group, its output in a log
file, readiness by polling, a stop that leaves nothing running (TERM, then KILL), and, once
`supervise()` is on, a restart with backoff of any child that exits unasked, as a Deployment's
pods are restarted (0.5 s, doubling to 30 s; back to 0.5 s after a minute up), each reported."""
from __future__ import annotations

import atexit
import os
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from infershift import proc


class ProcessError(RuntimeError):
    """A child exited or did not become ready."""


RESTART_BACKOFF = (0.5, 30.0)  # first delay, cap (doubling in between)
RESTART_RESET_AFTER = 60.0  # up this long: the next crash starts the backoff again


@dataclass
class Child:
    name: str
    argv: list[str]
    log: Path
    popen: subprocess.Popen
    env: dict[str, str] | None = None
    cwd: str | Path | None = None
    stopped: bool = False  # stopped on purpose: never restarted
    restarts: int = 0
    started_at: float = 0.0
    restart_at: float | None = None  # a restart is due at this time (monotonic)
    streak: int = 0  # crashes since it last stayed up RESTART_RESET_AFTER

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
                 sleep: Callable[[float], None] = time.sleep,
                 report: Callable[[str], None] = lambda msg: None):
        self.log_dir = log_dir
        self.children: list[Child] = []
        self.clock = clock
        self.sleep = sleep
        self.report = report
        self.events: list[str] = []  # what supervision did, in order (also given to `report`)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._monitor: threading.Thread | None = None
        atexit.register(self.stop_all)  # safety net if the caller forgets

    def start(self, name: str, argv: list[str], *, env: dict[str, str] | None = None,
              cwd: str | Path | None = None) -> Child:
        log = self.log_dir / f"{name}.log"
        child = Child(name, argv, log, self._spawn(argv, log, env, cwd), env=env, cwd=cwd,
                      started_at=self.clock())
        with self._lock:
            self.children.append(child)
        return child

    @staticmethod
    def _spawn(argv: list[str], log: Path, env: dict[str, str] | None, cwd: str | Path | None) -> subprocess.Popen:
        with open(log, "ab") as out:
            return proc.spawn(argv, out=out, env={**os.environ, **(env or {})}, cwd=cwd)

    # --- restarts -----------------------------------------------------------------------

    def supervise(self, interval: float = 0.2) -> None:
        """From now on, restart every child that exits without being stopped (a thread)."""
        if self._monitor is None:
            self._stop.clear()
            self._monitor = threading.Thread(target=self._watch, args=(interval,), name="devstack-supervisor",
                                             daemon=True)
            self._monitor.start()

    def _watch(self, interval: float) -> None:
        while not self._stop.wait(interval):
            try:
                self.check()
            except Exception as e:  # supervision must outlive any one failed restart
                self._event(f"supervisor: {e}")

    def check(self) -> None:
        """One supervision round: note exits, start the restarts that are due."""
        now = self.clock()
        with self._lock:
            children = list(self.children)
        for child in children:
            if child.stopped or self._stop.is_set():
                continue
            if child.alive():
                if child.streak and now - child.started_at >= RESTART_RESET_AFTER:
                    child.streak = 0
                continue
            if child.restart_at is None:
                child.streak += 1
                delay = min(RESTART_BACKOFF[1], RESTART_BACKOFF[0] * 2 ** (child.streak - 1))
                child.restart_at = now + delay
                self._event(f"{child.name} exited ({_status(child.popen.returncode)}); restarting in {delay:g}s "
                            f"(restart {child.restarts + 1}); log {child.log}")
            elif now >= child.restart_at:
                proc.stop_group(child.popen, 0.0, signalled=True)  # anything the group left behind
                child.popen = self._spawn(child.argv, child.log, child.env, child.cwd)
                child.restarts += 1
                child.started_at, child.restart_at = self.clock(), None
                self._event(f"{child.name} restarted (pid {child.pid}, restart {child.restarts})")

    def _event(self, msg: str) -> None:
        self.events.append(msg)
        self.report(msg)

    def crash(self, child: Child) -> None:
        """Kill a child as a crash would (SIGKILL to its group); supervision restarts it."""
        _signal_group(child.pid, signal.SIGKILL)

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
        """Stop a child for good (no restart)."""
        child.stopped = True
        if child.alive():
            _signal_group(child.pid, signal.SIGTERM)
        _reap(child, grace)

    def stop_all(self, grace: float = 5.0) -> None:
        self._stop.set()
        if self._monitor is not None and self._monitor is not threading.current_thread():
            self._monitor.join(5)
        self._monitor = None
        # SIGTERM to all first, so they shut down in parallel within one grace period.
        with self._lock:
            children, self.children = self.children, []
        for child in children:
            child.stopped = True
        for child in reversed(children):
            if child.alive():
                _signal_group(child.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for child in reversed(children):
            _reap(child, max(0.0, deadline - time.monotonic()))


def _status(code: int | None) -> str:
    if code is None:
        return "status unknown"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit status {code}"


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
