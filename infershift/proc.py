"""One way to run and stop a child process: in its own process group (so its children go
with it), stopped with TERM, a grace period, then KILL of the whole group. Standard library
only; the local stack, the simulator's load check, the benchmarks and the tests use it."""
from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path
from typing import IO


def spawn(argv: list[str], *, out: IO | int | None = None, env: dict[str, str] | None = None,
          cwd: str | Path | None = None, **popen) -> subprocess.Popen:
    """Start `argv` as the leader of a new process group (output to `out`, stdin closed)."""
    popen.setdefault("stdin", subprocess.DEVNULL)
    # A log file gets stderr too; a pipe (a protocol on stdout) does not.
    popen.setdefault("stderr", subprocess.STDOUT if out not in (None, subprocess.PIPE) else None)
    return subprocess.Popen(argv, stdout=out, env=env, cwd=cwd, start_new_session=True, **popen)


def signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def wait(p: subprocess.Popen, seconds: float) -> bool:
    try:
        p.wait(max(0.0, seconds))
        return True
    except subprocess.TimeoutExpired:
        return False


def stop_group(p: subprocess.Popen, grace: float = 5.0, *, signalled: bool = False) -> None:
    """TERM the group (unless `signalled` already), wait up to `grace`, then KILL the group:
    it may hold grandchildren even after the leader exits."""
    if not signalled and p.poll() is None:
        signal_group(p.pid, signal.SIGTERM)
    wait(p, grace)
    signal_group(p.pid, signal.SIGKILL)
    wait(p, 5)
