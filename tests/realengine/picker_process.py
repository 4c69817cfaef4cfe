"""One infershift picker process for the real-engine tests: started from .venv-picker with a
kubeconfig (its own ServiceAccount's), on free loopback ports, in its own process group, with its
JSON log lines readable while it runs."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import yaml

from infershift import proc
from infershift.devstack.ports import free_port

REPO = Path(__file__).resolve().parents[2]
PICKER_PY = REPO / ".venv-picker" / "bin" / "python"


class PickerProcess:
    def __init__(self, workdir: Path, kubeconfig: Path, config: dict, name: str = "picker",
                 extra: list[str] | None = None, env: dict[str, str] | None = None):
        self.name = name
        self.log_path = workdir / f"{name}.log"
        cfg_path = workdir / f"{name}.yaml"
        cfg_path.write_text(yaml.safe_dump(config))
        self.ports = {k: free_port() for k in ("grpc", "health", "metrics")}
        argv = [str(PICKER_PY), "-m", "infershift.picker", "--config", str(cfg_path), "--kubeconfig", str(kubeconfig),
                "--host", "127.0.0.1", "--grpc-port", str(self.ports["grpc"]),
                "--health-port", str(self.ports["health"]), "--metrics-port", str(self.ports["metrics"]),
                "--secure-serving=false", *(extra or [])]
        self._log = open(self.log_path, "ab")  # noqa: SIM115 (open while the process runs)
        self.p = proc.spawn(argv, out=self._log, cwd=str(REPO),
                            env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})})

    def records(self, msg: str | None = None) -> list[dict]:
        out = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            try:
                r = json.loads(line)
            except ValueError:
                continue
            if msg is None or r.get("msg") == msg:
                out.append(r)
        return out

    def find(self, msg: str) -> dict | None:
        recs = self.records(msg)
        return recs[-1] if recs else None

    def wait(self, pred, timeout: float, what: str, interval: float = 0.1):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.p.poll() is not None:
                raise AssertionError(f"{self.name} exited ({self.p.returncode}) waiting for {what}:\n{self.tail()}")
            v = pred()
            if v:
                return v
            time.sleep(interval)
        raise AssertionError(f"timed out after {timeout} s waiting for {what}:\n{self.tail()}")

    def tail(self) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-30:])

    def stop(self, grace: float = 5) -> None:
        proc.stop_group(self.p, grace)
        self._log.close()
