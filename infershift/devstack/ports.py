"""Loopback port handling: free ports for internal processes, and a check of every
port a stack needs before anything starts (so a busy port is a clear error, not a crash)."""
from __future__ import annotations

import errno
import random
import socket

HOST = "127.0.0.1"


class PortError(RuntimeError):
    """A port the stack needs cannot be used."""


def _ephemeral_range() -> tuple[int, int]:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low, high = (int(x) for x in f.read().split())
            return low, high
    except (OSError, ValueError):
        return 32768, 60999


_RNG = random.Random()


def free_port(host: str = HOST) -> int:
    """A free port below the kernel's ephemeral range: a port handed out by bind(0) is one an
    outgoing connection (of the many a busy machine opens) can take before the child listens."""
    low = _ephemeral_range()[0]
    if low > 11024:
        for _ in range(200):
            port = _RNG.randrange(10000, low)
            if port_problem(port, host) is None:
                return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def port_problem(port: int, host: str = HOST) -> str | None:
    """Why `port` cannot be listened on, or None. No SO_REUSEPORT here on purpose: a
    listener that uses it (as Envoy may) would otherwise share the port silently."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except PermissionError:
            return "needs privileges (a port below 1024)"
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                return "is already in use"
            return str(e)
    return None


def free_run(count: int, host: str = HOST, attempts: int = 200) -> int:
    """First of `count` consecutive free ports (the simulator's --servers takes a run)."""
    limit = _ephemeral_range()[0] - 1
    for _ in range(attempts):
        base = free_port(host)
        if base + count - 1 > (limit if base <= limit else 65535):
            continue
        if all(port_problem(base + i, host) is None for i in range(count)):
            return base
    raise PortError(f"found no {count} consecutive free ports on {host}")


class PortPlan:
    """Every port the stack will listen on, with who wants it; checked all at once."""

    def __init__(self, host: str = HOST):
        self.host = host
        self.wanted: dict[int, str] = {}

    def claim(self, port: int, owner: str) -> int:
        if port in self.wanted:
            raise PortError(f"port {port} is wanted by both {self.wanted[port]} and {owner}")
        self.wanted[port] = owner
        return port

    def fresh(self, owner: str) -> int:
        for _ in range(100):
            port = free_port(self.host)
            if port not in self.wanted:
                return self.claim(port, owner)
        raise PortError(f"no free port for {owner}")

    def fresh_run(self, count: int, owner: str) -> int:
        for _ in range(100):
            base = free_run(count, self.host)
            if not any(base + i in self.wanted for i in range(count)):
                for i in range(count):
                    self.claim(base + i, f"{owner} (replica {i})")
                return base
        raise PortError(f"no {count} consecutive free ports for {owner}")

    def check(self, hint: str = "") -> None:
        """Raise PortError naming every port that cannot be used and what wanted it."""
        bad = []
        for port, owner in sorted(self.wanted.items()):
            problem = port_problem(port, self.host)
            if problem:
                bad.append(f"port {port} ({owner}) {problem}")
        if bad:
            raise PortError("cannot start: " + "; ".join(bad) + (f". {hint}" if hint else ""))
