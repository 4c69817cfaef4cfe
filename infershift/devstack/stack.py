"""Run one stack's data plane locally: simulators (or real servers), a picker per pool,
and Envoy; apply edits of the stack file live. `run()` is the API tests and the demo use."""
from __future__ import annotations

import contextlib
import json
import shutil
import socket
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from infershift import spec as stackspec
from infershift.spec import StackSpec

from . import dataplane, envoy_check, envoy_config, sims
from .dataplane import DataPlane, Endpoint, Ports
from .files import write_atomic, write_yaml
from .ports import HOST, PortPlan
from .procs import Child, ProcessError, Supervisor, http_ok, log_says

REPO = Path(__file__).resolve().parents[2]
PICKER_PYTHON = REPO / ".venv-picker" / "bin" / "python"


class StackError(RuntimeError):
    """The local stack cannot start (bad config, busy port, missing tool)."""


@dataclass
class Options:
    listener_ports: dict[str, int] = field(default_factory=dict)
    """Gateway listener name -> port, overriding the stack's port."""
    port_offset: int = 0
    """Added to every stack listener port without an override (e.g. 8000: 80 -> 8080)."""
    auto_ports: bool = False
    """Free ports for every gateway listener (tests)."""
    time_scale: float = 1.0
    """Simulator speed-up (10 = ten times faster than the modelled GPU)."""
    seed: int = 0
    poll_interval: str | None = None
    """Picker metrics-scrape interval override (slower saves CPU on small machines)."""
    workdir: Path | None = None
    """Where configs and logs go; a temp dir (removed on stop) when omitted."""
    watch: bool = True
    """Apply edits of the stack file live."""
    watch_interval: float = 0.2
    envoy_concurrency: int = 1
    sim_python: str = sys.executable
    picker_python: str = str(PICKER_PYTHON)
    envoy: str | None = None
    ready_timeout: float = 60.0


@dataclass
class PoolProcess:
    name: str
    port: int  # the pool's own listener (second tier)
    grpc_port: int
    health_port: int
    metrics_port: int
    config_file: Path
    child: Child | None = None


@dataclass
class Applied:
    ok: bool
    message: str
    seconds: float = 0.0


def resolve_stack(stack: str | Path) -> Path:
    """A stack name (stacks/Pulumi.NAME.yaml) or a path to a stack file."""
    path = Path(stack)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.exists():
            raise StackError(f"stack file {path} does not exist")
        return path.resolve()
    named = stackspec.stack_path(str(stack))
    if not named.exists():
        known = ", ".join(stackspec.stack_names()) or "none"
        raise StackError(f"no stack named {stack!r} (stacks: {known})")
    return named


def _endpoint_from_url(url: str, service: str, models: tuple[str, ...]) -> Endpoint:
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme != "http" or not parsed.hostname:
        raise StackError(f"services.{service}.endpoints: {url!r} is not an http://host:port URL")
    port = parsed.port or 80
    try:
        ip = socket.gethostbyname(parsed.hostname)
    except OSError as e:
        raise StackError(f"services.{service}.endpoints: cannot resolve {parsed.hostname!r}: {e}") from None
    return Endpoint(f"{ip}:{port}", f"{parsed.hostname}:{port}", service, models)


class LocalStack:
    """A running local stack. Attributes say where everything listens."""

    def __init__(self, stack: str | Path, options: Options | None = None,
                 log: Callable[[str], None] = lambda msg: print(msg, flush=True)):
        self.options = options or Options()
        self.log = log
        self.stack_file = resolve_stack(stack)
        self.spec: StackSpec = stackspec.load_file(self.stack_file)
        self._own_workdir = self.options.workdir is None
        self.workdir = Path(self.options.workdir or tempfile.mkdtemp(prefix="devstack-"))
        self.xds_dir = self.workdir / "xds"
        self.log_dir = self.workdir / "logs"
        self.supervisor = Supervisor(self.log_dir)
        self.endpoints: dict[str, list[Endpoint]] = {}
        self.sim_ports: dict[str, int] = {}
        self.pools: dict[str, PoolProcess] = {}
        self.gateway: dict[str, str] = {}
        self.admin_port = 0
        self.envoy: Child | None = None
        self.plane: DataPlane | None = None
        self.version = 0
        self.notes: list[str] = []
        self._lock = threading.Lock()
        self._stop_watch = threading.Event()
        self._watcher: threading.Thread | None = None
        self._file_state: bytes = b""
        self.applied: list[Applied] = []
        self._routes_written: dict[str, dict] = {}

    # --- plan --------------------------------------------------------------------------

    def _listener_port(self, name: str, port: int, plan: PortPlan) -> int:
        o = self.options
        if name in o.listener_ports:
            return plan.claim(o.listener_ports[name], f"gateway listener {name}")
        if o.auto_ports:
            return plan.fresh(f"gateway listener {name}")
        return plan.claim(port + o.port_offset, f"gateway listener {name}")

    def _plan(self) -> PortPlan:
        spec = self.spec
        unknown = set(self.options.listener_ports) - {lst.name for lst in spec.gateway.listeners}
        if unknown:
            names = ", ".join(lst.name for lst in spec.gateway.listeners)
            raise StackError(f"--listener-port names unknown listener(s) {', '.join(sorted(unknown))} (listeners: {names})")
        plan = PortPlan()
        listener_ports = {lst.name: self._listener_port(lst.name, lst.port, plan) for lst in spec.gateway.listeners}
        for name, svc in spec.services.items():
            models = tuple(sorted(svc.serves))
            if svc.endpoints:
                self.endpoints[name] = [_endpoint_from_url(u, name, models) for u in svc.endpoints]
            elif svc.replicas:
                base = plan.fresh_run(svc.replicas, f"simulator of service {name}")
                self.sim_ports[name] = base
                self.endpoints[name] = [
                    Endpoint(f"{HOST}:{base + i}", sims.pod_name(name, i), name, models) for i in range(svc.replicas)
                ]
            else:
                self.endpoints[name] = []
        for name in spec.pools:
            self.pools[name] = PoolProcess(
                name=name,
                port=plan.fresh(f"listener of pool {name}"),
                grpc_port=plan.fresh(f"picker of pool {name} (ext_proc)"),
                health_port=plan.fresh(f"picker of pool {name} (health)"),
                metrics_port=plan.fresh(f"picker of pool {name} (metrics)"),
                config_file=self.workdir / f"picker-{name}.yaml",
            )
        self.admin_port = plan.fresh("Envoy admin")
        self.ports = Ports(
            listeners=listener_ports,
            pools={n: p.port for n, p in self.pools.items()},
            pickers={n: p.grpc_port for n, p in self.pools.items()},
        )
        self.gateway = {n: f"http://{HOST}:{p}" for n, p in listener_ports.items()}
        return plan

    def picker_config(self, spec: StackSpec, pool: str) -> dict:
        eps = [
            {"address": e.address, "name": e.name, "models": list(e.models)}
            for svc in spec.pool_services(pool) for e in self.endpoints.get(svc, [])
        ]
        return stackspec.picker_config(spec, pool, endpoints=eps)

    # --- start / stop ------------------------------------------------------------------

    def start(self) -> "LocalStack":
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        for d in (self.xds_dir, self.log_dir):
            d.mkdir(parents=True, exist_ok=True)
        plan = self._plan()
        hint = ("Use --port-offset N or --listener-port NAME=PORT for the gateway listeners."
                if any("gateway listener" in o for o in plan.wanted.values()) else "")
        plan.check(hint)
        picker_python = Path(self.options.picker_python)
        if self.spec.pools and not picker_python.exists():
            raise StackError(
                f"the picker's virtualenv is missing ({picker_python}); create it with "
                "`python3.11 -m venv .venv-picker && .venv-picker/bin/pip install -r infershift/picker/requirements.txt`")
        self.plane = dataplane.build(self.spec, self.endpoints, self.ports)
        envoy_check.validate(envoy_config.bootstrap(self.plane, self.admin_port, None), envoy=self.options.envoy)
        for name in self.spec.pools:
            write_yaml(self.pools[name].config_file, self.picker_config(self.spec, name))
        first_routes = self._write_routes(self.plane)
        bootstrap = envoy_config.bootstrap(self.plane, self.admin_port, self.xds_dir)
        bootstrap_file = self.workdir / "envoy.yaml"
        write_atomic(bootstrap_file, envoy_check.dump(bootstrap))
        envoy_check.validate(bootstrap, envoy=self.options.envoy)
        self._file_state = self.stack_file.read_bytes()

        env = {"PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}
        sim_children = []
        for name, base in self.sim_ports.items():
            svc = self.spec.services[name]
            argv = sims.sim_argv(self.options.sim_python, name, svc, port=base,
                                 time_scale=self.options.time_scale, seed=self.options.seed)
            sim_children.append((name, self.supervisor.start(f"sim-{name}", argv, env=env, cwd=REPO)))
        for name, child in sim_children:
            for ep in self.endpoints[name]:
                self.supervisor.wait_ready(child, lambda ep=ep: http_ok(f"http://{ep.address}/health"),
                                           self.options.ready_timeout)
        for name, pool in self.pools.items():
            argv = [
                str(picker_python), "-m", "infershift.picker", "--config", str(pool.config_file), "--host", HOST,
                "--grpc-port", str(pool.grpc_port), "--health-port", str(pool.health_port),
                "--metrics-port", str(pool.metrics_port), "--seed", str(self.options.seed),
            ]
            if self.options.poll_interval:
                argv += ["--poll-interval", self.options.poll_interval]
            pool.child = self.supervisor.start(f"picker-{name}", argv, env=env, cwd=REPO)
        for pool in self.pools.values():
            self.supervisor.wait_ready(pool.child, log_says(pool.child, "picker ready"), self.options.ready_timeout)
        self.envoy = self.supervisor.start("envoy", [
            self.options.envoy or envoy_check.envoy_binary(), "-c", str(bootstrap_file),
            "--concurrency", str(self.options.envoy_concurrency), "--disable-hot-restart",
            "--log-level", "warning",
        ])
        self.supervisor.wait_ready(self.envoy, lambda: http_ok(f"{self.admin_url}/ready"), self.options.ready_timeout)
        if not self._wait_routes(first_routes, self.version, self.options.ready_timeout):
            raise ProcessError(f"Envoy did not load its route files; log {self.envoy.log}:\n{self.envoy.log_tail()}")
        if self.options.watch:
            self._watcher = threading.Thread(target=self._watch, name="devstack-watch", daemon=True)
            self._watcher.start()

    def stop(self) -> None:
        self._stop_watch.set()
        if self._watcher is not None:
            self._watcher.join(5)
        self.supervisor.stop_all()
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> "LocalStack":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # --- where things are --------------------------------------------------------------

    @property
    def admin_url(self) -> str:
        return f"http://{HOST}:{self.admin_port}"

    def url(self, listener: str | None = None) -> str:
        """Base URL of a gateway listener (the first one by default)."""
        return self.gateway[listener or next(iter(self.gateway))]

    def pod_service(self) -> dict[str, str]:
        return {e.name: svc for svc, eps in self.endpoints.items() for e in eps}

    def service_pools(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for pool in self.spec.pools:
            for svc in self.spec.pool_services(pool):
                out.setdefault(svc, []).append(pool)
        return out

    def describe(self) -> list[str]:
        lines = [f"stack file  {self.stack_file}"]
        for name, url in self.gateway.items():
            lines.append(f"gateway     {name:<14} {url}")
        for name, pool in self.pools.items():
            lines.append(f"pool        {name:<24} listener :{pool.port}  picker grpc :{pool.grpc_port} "
                         f"metrics :{pool.metrics_port}  ({self.spec.pools[name].failure_mode})")
        for name, eps in self.endpoints.items():
            kind = "endpoints" if self.spec.services[name].endpoints else "simulator"
            for e in eps:
                lines.append(f"{kind:<11} {e.name:<24} http://{e.address}")
        lines.append(f"envoy admin {self.admin_url}")
        lines.append(f"configs     {self.workdir}  (logs in {self.log_dir})")
        lines += [f"note        {n}" for n in self.notes]
        return lines

    def sample_requests(self) -> list[dict]:
        """One request per route (HTTPRoute or mirror): {route, url, headers, body}, for a
        model the route's main pool routes or serves — the seeds' curl commands, here."""
        out = []
        spec = self.spec
        for name, route in {**spec.routes, **spec.mirrors}.items():
            pool = route.backend if name in spec.mirrors else max(route.backends, key=route.backends.get)
            models = list(spec.pools[pool].models) or sorted(spec.pool_serves(pool))
            listener = route.listener or next(iter(self.gateway))
            matches = lambda p: any(p == x or p.startswith(x.rstrip("/") + "/") for x in route.paths)  # noqa: E731
            if matches("/v1/chat/completions"):
                path, body = "/v1/chat/completions", {
                    "model": models[0], "messages": [{"role": "user", "content": "Hello!"}], "max_tokens": 8}
            else:
                path = "/v1/completions" if matches("/v1/completions") else route.paths[0]
                body = {"model": models[0], "prompt": "San Francisco is a", "max_tokens": 8}
            headers = {"host": route.hostnames[0]} if route.hostnames and "*" not in route.hostnames[0] else {}
            out.append({"route": name, "url": self.gateway[listener] + path, "headers": headers, "body": body})
        return out

    # --- live changes ------------------------------------------------------------------

    def _write_routes(self, plane: DataPlane) -> list[str]:
        """Write the RDS files whose routes changed; return their route config names.
        Envoy ignores an identical route config (its version stays), so only changed
        ones are written and awaited."""
        self.version += 1
        changed = []
        for path, doc in envoy_config.route_files(plane, self.xds_dir, str(self.version)).items():
            resource = doc["resources"][0]
            if self._routes_written.get(resource["name"]) != resource:
                write_yaml(path, doc)
                self._routes_written[resource["name"]] = resource
                changed.append(resource["name"])
        return changed

    def route_versions(self) -> dict[str, str]:
        """RDS version Envoy is serving, per gateway route config."""
        with urllib.request.urlopen(f"{self.admin_url}/config_dump?resource=dynamic_route_configs", timeout=5) as r:
            dump = json.load(r)
        out = {}
        for cfg in dump.get("configs", []):
            rc = cfg.get("route_config", {})
            out[rc.get("name", "")] = cfg.get("version_info", "")
        return out

    def _wait_routes(self, names: list[str], version: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                got = self.route_versions()
            except OSError:
                got = {}
            if all(got.get(n) == str(version) for n in names):
                return True
            time.sleep(0.05)
        return False

    def apply(self) -> Applied:
        """Read the stack file and apply what changed; a bad edit is reported and ignored."""
        with self._lock:
            started = time.monotonic()
            result = self._apply()
            result.seconds = time.monotonic() - started
            self.applied.append(result)
            self.log(("applied: " if result.ok else "not applied: ") + result.message)
            return result

    def _apply(self) -> Applied:
        try:
            spec = stackspec.load_file(self.stack_file)
        except stackspec.StackConfigError as e:
            return Applied(False, f"{e} (the running config stays)")
        fixed = dataplane.restart_needed(self.spec, spec)
        if fixed:
            return Applied(False, f"the edit changes {', '.join(fixed[:5])}{' ...' if len(fixed) > 5 else ''}, "
                                  "which needs a restart of devstack (the running config stays)")
        plane = dataplane.build(spec, self.endpoints, self.ports)
        try:
            envoy_check.validate(envoy_config.bootstrap(plane, self.admin_port, None), envoy=self.options.envoy)
        except envoy_check.EnvoyConfigError as e:
            return Applied(False, f"{e} (the running config stays)")
        changed = []
        for name in spec.pools:
            new = self.picker_config(spec, name)
            if new != self.picker_config(self.spec, name):
                write_yaml(self.pools[name].config_file, new)
                changed.append(f"picker {name}")
        routes = self._write_routes(plane)
        if routes:
            if not self._wait_routes(routes, self.version, 10):
                return Applied(False, f"Envoy did not take route version {self.version} within 10s")
            changed.append(f"Envoy routes {', '.join(routes)} (version {self.version})")
        self.spec, self.plane = spec, plane
        return Applied(True, ", ".join(changed) or "nothing changed")

    def _watch(self) -> None:
        while not self._stop_watch.wait(self.options.watch_interval):
            try:
                state = self.stack_file.read_bytes()
            except OSError:
                continue  # mid-replace or removed: keep the running config
            if state != self._file_state:
                self._file_state = state
                try:
                    self.apply()
                except Exception as e:  # the watcher must outlive any one bad edit
                    self.log(f"not applied: {e}")

    # --- test and demo hooks -----------------------------------------------------------

    def kill_picker(self, pool: str) -> None:
        """Stop a pool's picker (to see its failure mode at work)."""
        child = self.pools[pool].child
        if child is not None:
            self.supervisor.stop(child)


@contextlib.contextmanager
def run(stack: str | Path, options: Options | None = None, **kwargs) -> Iterator[LocalStack]:
    """`with run("local", time_scale=20) as stack:` — started, ready, and stopped after."""
    if options is None:
        options = Options(**kwargs)
    elif kwargs:
        raise TypeError("give options or keyword arguments, not both")
    stack_obj = LocalStack(stack, options)
    stack_obj.start()
    try:
        yield stack_obj
    finally:
        stack_obj.stop()
