"""Run one stack's data plane locally: simulators (or real servers), a picker per pool,
and Envoy; apply edits of the stack file live. `run()` is the API tests and the demo use."""
from __future__ import annotations

import contextlib
import functools
import json
import os
import shutil
import socket
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from infershift import contract
from infershift import spec as stackspec
from infershift.envoy import argv as envoy_argv
from infershift.spec import StackSpec

from . import dataplane, envoy_check, envoy_config, ir, sims, translate
from . import manifests as manifests_mod
from .dataplane import DataPlane, Endpoint, Ports
from .files import write_atomic, write_yaml, write_yaml_all
from .ports import HOST, PortPlan
from .procs import Child, ProcessError, Supervisor, http_ok, log_says

# The directory that holds the `infershift` package: a source checkout (the repository) or an
# installed environment's site-packages.
PACKAGE_ROOT = Path(__file__).resolve().parents[2]
SOURCE_CHECKOUT = (PACKAGE_ROOT / "pyproject.toml").is_file()


def default_picker_python() -> Path:
    """The interpreter the pickers run with: `$INFERSHIFT_PICKER_PYTHON`; in a checkout, the
    repository's `.venv-picker` (the Makefile's); else this interpreter (infershift[picker] installed)."""
    if os.environ.get("INFERSHIFT_PICKER_PYTHON"):
        return Path(os.environ["INFERSHIFT_PICKER_PYTHON"])
    venv = PACKAGE_ROOT / ".venv-picker" / "bin" / "python"
    return venv if SOURCE_CHECKOUT and venv.exists() else Path(sys.executable)


PICKER_PYTHON = default_picker_python()


def _seed_body(path: str, model: str) -> dict:
    """A request body as the guides' curl commands write it (with max_tokens, which their chat
    requests leave to the server: up to the context length)."""
    if path.endswith("/chat/completions"):
        return {"model": model, "temperature": 0, "max_tokens": 100,
                "messages": [{"role": "user", "content": "Who are you?"}]}
    return {"model": model, "prompt": "Write as if you were a critic: San Francisco", "max_tokens": 100,
            "temperature": 0}


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
    restart: bool = True
    """Restart a simulator, picker or Envoy that exits (backoff 0.5 s doubling to 30 s), reported."""
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
    routing_file: Path
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
    """A running local stack. Attributes say where everything listens.

    Its input is Kubernetes objects: a stack file rendered by the Pulumi program's own manifest
    builders (`stack`), or YAML files and folders as `kubectl apply -f` takes them (`manifests`).
    """

    def __init__(self, stack: str | Path | None = None, options: Options | None = None,
                 log: Callable[[str], None] = lambda msg: print(msg, flush=True),
                 manifests: list[str | Path] | None = None):
        if (stack is None) == (not manifests):
            raise StackError("give a stack or manifest paths (one of them)")
        self.options = options or Options()
        self.log = log
        self.stack_file: Path | None = resolve_stack(stack) if stack is not None else None
        self.manifest_paths = [Path(m).resolve() for m in manifests or []]
        self.spec: StackSpec | None = stackspec.load_file(self.stack_file) if self.stack_file else None
        self.objects: manifests_mod.Objects = self._read()
        self.gw: ir.Gateway = translate.translate(self.objects.items)
        self._own_workdir = self.options.workdir is None
        self.workdir = Path(self.options.workdir or tempfile.mkdtemp(prefix="devstack-"))
        self.xds_dir = self.workdir / "xds"
        self.log_dir = self.workdir / "logs"
        self.supervisor = Supervisor(self.log_dir, report=lambda msg: self.log(f"supervisor: {msg}"))
        self.endpoints: dict[str, list[Endpoint]] = {}
        self.sim_ports: dict[str, int] = {}
        self.sim_admin_ports: dict[str, int] = {}  # each simulator's admin port (faults, predictions)
        self.recorder_ports: dict[str, int] = {}  # each shadow recorder's port
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
        self._file_state: object = None
        self.applied: list[Applied] = []
        self._routes_written: dict[str, dict] = {}
        self._picker_written: dict[str, tuple] = {}

    @property
    def source(self) -> str:
        if self.stack_file:
            return str(self.stack_file)
        return " ".join(str(p) for p in self.manifest_paths)

    def _read(self) -> manifests_mod.Objects:
        try:
            if self.stack_file is not None:
                return manifests_mod.render_stack_file(self.stack_file)
            return manifests_mod.load(self.manifest_paths)
        except manifests_mod.ManifestError as e:
            raise StackError(str(e)) from None

    def report(self) -> list[str]:
        """What a gateway and `pulumi up` would say about the objects, and what runs differently here."""
        said = " ".join(self.objects.warnings)
        # The render already warned of a model split (with the stack's config path): once is enough.
        gateway = [w for w in self.gw.warnings
                   if not ("routed only by pool" in w and w.split("'")[1:2] and f"'{w.split(chr(39))[1]}'" in said)]
        lines = [f"warning: {w}" for w in (*self.objects.warnings, *gateway)]
        if self.gw.ignored:
            # Whole objects grouped by kind ("Role a, b"); field-level entries as they are.
            kinds: dict[str, list[str]] = {}
            fields = []
            for item in self.gw.ignored:
                kind, _, name = item.partition(" ")
                if name and " " not in name and ":" not in item:
                    kinds.setdefault(kind, []).append(name)
                else:
                    fields.append(item)
            parts = [f"{k} {', '.join(v)}" for k, v in kinds.items()] + fields
            lines.append("ignored locally: " + "; ".join(parts))
        lines += [f"note: {n}" for n in self.gw.notes]
        return lines

    # --- plan --------------------------------------------------------------------------

    def _listener_port(self, port: ir.Port, plan: PortPlan) -> int:
        o = self.options
        names = [port.key, *(lst.name for lst in port.listeners)]
        chosen = [o.listener_ports[n] for n in names if n in o.listener_ports]
        if chosen:
            return plan.claim(chosen[0], f"gateway listener {port.key}")
        if o.auto_ports:
            return plan.fresh(f"gateway listener {port.key}")
        return plan.claim(port.port + o.port_offset, f"gateway listener {port.key}")

    def _service_knobs(self, name: str):
        """Local-only settings a stack file gives a Deployment (simulator profile, real endpoints)."""
        if self.spec is not None and name in self.spec.services:
            return self.spec.services[name]
        return None

    def sim_profile(self, group: ir.ServerGroup) -> str:
        from infershift.sim.profiles import PROFILES

        knobs = self._service_knobs(group.name)
        if knobs is not None:
            return knobs.sim_profile
        if group.server.profile in PROFILES:
            return group.server.profile
        return sims.profile_for(group.server)

    def _plan(self) -> PortPlan:
        gw = self.gw
        known = {n for p in gw.ports for n in (p.key, *(lst.name for lst in p.listeners))}
        unknown = set(self.options.listener_ports) - known
        if unknown:
            raise StackError(f"--listener-port names unknown listener(s) {', '.join(sorted(unknown))} "
                             f"(listeners: {', '.join(sorted(known))})")
        plan = PortPlan()
        listener_ports = {p.key: self._listener_port(p, plan) for p in gw.ports}
        for group in gw.servers:
            models = tuple(sorted(group.server.serves))
            knobs = self._service_knobs(group.name)
            if knobs is not None and knobs.endpoints:
                self.endpoints[group.name] = [_endpoint_from_url(u, group.name, models) for u in knobs.endpoints]
            elif group.replicas:
                base = plan.fresh_run(group.replicas, f"simulator of Deployment {group.name}")
                admin = plan.fresh_run(group.replicas, f"simulator of Deployment {group.name} (admin)")
                self.sim_ports[group.name] = base
                self.sim_admin_ports[group.name] = admin
                self.endpoints[group.name] = [
                    Endpoint(f"{HOST}:{base + i}", sims.pod_name(group.name, i), group.name, models,
                             admin=f"{HOST}:{admin + i}")
                    for i in range(group.replicas)
                ]
            else:
                self.endpoints[group.name] = []
        self.recorder_ports.clear()
        for r in gw.recorders:
            port = plan.fresh(f"shadow recorder {r.name}")
            self.recorder_ports[r.name] = port
            self.endpoints[r.name] = [Endpoint(f"{HOST}:{port}", r.name, r.name, ())]
        for pool in gw.pools:
            self.pools[pool.name] = PoolProcess(
                name=pool.name,
                port=plan.fresh(f"listener of pool {pool.name}"),
                grpc_port=plan.fresh(f"picker of pool {pool.name} (ext_proc)"),
                health_port=plan.fresh(f"picker of pool {pool.name} (health)"),
                metrics_port=plan.fresh(f"picker of pool {pool.name} (metrics)"),
                config_file=self.workdir / f"picker-{pool.name}.yaml",
                routing_file=self.workdir / f"picker-{pool.name}-routing.yaml",
            )
        self.admin_port = plan.fresh("Envoy admin")
        self.ports = Ports(
            listeners=listener_ports,
            pools={n: p.port for n, p in self.pools.items()},
            pickers={n: p.grpc_port for n, p in self.pools.items()},
        )
        self.gateway = {}
        for p in gw.ports:
            url = f"http://{HOST}:{listener_ports[p.key]}"
            self.gateway[p.key] = url
            for lst in p.listeners:
                self.gateway.setdefault(lst.name, url)
        return plan

    def picker_config(self, gw: ir.Gateway, pool: str) -> dict:
        """The config the cluster's picker gets (its ConfigMap), with discovery swapped: the local
        replicas as static endpoints instead of the API server. Model routing comes from the
        pool's routing objects (`routing_objects`), read by the picker as it reads the cluster's."""
        p = gw.pool(pool)
        config = {k: v for k, v in p.picker.config.items() if k != "kubernetes"}
        config.setdefault("pool", {"name": pool, "namespace": "default"})
        config["endpoints"] = [{"address": e.address, "name": e.name, "models": list(e.models)}
                               for s in p.servers for e in self.endpoints.get(s, [])]
        if pool in mirror_pools(gw):
            # the shadow report (python -m infershift.shadow): a mirror's primary and shadow pools
            # log every answer (picker answerLog), unless the pool's config says otherwise
            config.setdefault("answerLog", {"enabled": True})
        return config

    def answer_logs(self) -> list[Path]:
        """The log files of the pickers that write answer lines (the mirrors' pools), and of the
        shadow recorders (mirrors to a Service with `record`)."""
        return [self.picker_log(name) for name in sorted(mirror_pools(self.gw))] + self.recorder_logs()

    def recorder_logs(self) -> list[Path]:
        """The shadow recorders' log files (their answer lines)."""
        return [self.supervisor.log_dir / f"recorder-{r.name}.log" for r in self.gw.recorders]

    def picker_log(self, pool: str) -> Path:
        """The file a pool's picker logs to (its answer lines too, when `answerLog` is on)."""
        return self.supervisor.log_dir / f"picker-{pool}.log"

    @staticmethod
    def routing_objects(gw: ir.Gateway, pool: str) -> list[dict]:
        return list(gw.pool(pool).routing)

    # --- start / stop ------------------------------------------------------------------

    def start(self) -> LocalStack:
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
        if self.gw.pools and not picker_python.exists():
            raise StackError(
                f"the picker's virtualenv is missing ({picker_python}); create it with "
                "`python3.11 -m venv .venv-picker && "
                ".venv-picker/bin/pip install -r infershift/picker/requirements.txt`, or give --picker-python")
        for line in self.report():
            self.log(line)
        self.plane = dataplane.build(self.gw, self.endpoints, self.ports)
        envoy_check.validate(envoy_config.bootstrap(self.plane, self.admin_port, None), envoy=self.options.envoy)
        for pool in self.gw.pools:
            self._write_picker(self.gw, pool.name)
        first_routes = self._write_routes(self.plane)
        bootstrap = envoy_config.bootstrap(self.plane, self.admin_port, self.xds_dir)
        bootstrap_file = self.workdir / "envoy.yaml"
        write_atomic(bootstrap_file, envoy_check.dump(bootstrap))
        envoy_check.validate(bootstrap, envoy=self.options.envoy)
        self._file_state = self._source_state()

        # In a checkout the children import the package from it; installed, each interpreter
        # (this one for simulators, the picker's) has its own copy and PYTHONPATH stays unset, so
        # the picker's environment never sees this one's packages.
        env = {"PYTHONUNBUFFERED": "1", **({"PYTHONPATH": str(PACKAGE_ROOT)} if SOURCE_CHECKOUT else {})}
        cwd = PACKAGE_ROOT if SOURCE_CHECKOUT else self.workdir
        sim_children = []
        for name, base in self.sim_ports.items():
            group = self.gw.server(name)
            argv = sims.sim_argv(self.options.sim_python, group, profile=self.sim_profile(group), port=base,
                                 admin_port=self.sim_admin_ports[name],
                                 time_scale=self.options.time_scale, seed=self.options.seed)
            sim_children.append((name, self.supervisor.start(f"sim-{name}", argv, env=env, cwd=cwd)))
        for name, child in sim_children:
            for ep in self.endpoints[name]:
                self.supervisor.wait_ready(child, functools.partial(http_ok, f"http://{ep.address}/health"),
                                           self.options.ready_timeout)
        for name, proc in self.pools.items():
            argv = [
                str(picker_python), "-m", "infershift.picker", "--config", str(proc.config_file),
                "--routing-objects", str(proc.routing_file), "--host", HOST,
                "--grpc-port", str(proc.grpc_port), "--health-port", str(proc.health_port),
                "--metrics-port", str(proc.metrics_port), "--seed", str(self.options.seed),
                # a fallback endpoint after the pick: Envoy retries a failed request there
                # (envoy_config.RETRY_POLICY)
                "--fallbacks", str(envoy_config.PICKER_FALLBACKS),
            ]
            if self.options.poll_interval:
                argv += ["--poll-interval", self.options.poll_interval]
            if not self.gw.pool(name).picker.tls:  # as its Deployment runs it; TLS otherwise
                argv.append("--secure-serving=false")
            proc.child = self.supervisor.start(f"picker-{name}", argv, env=env, cwd=cwd)
        for proc in self.pools.values():
            assert proc.child is not None
            self.supervisor.wait_ready(proc.child, log_says(proc.child, "picker ready"), self.options.ready_timeout)
        for r in self.gw.recorders:
            # as its Deployment runs it, in front of the Service it names: here that Service's
            # local endpoints, taken in turn (kube-proxy's part)
            upstream = next((s for s in self.gw.services if s.name == r.upstream), None)
            urls = [f"http://{e.address}" for g in (upstream.servers if upstream else ()) for e in self.endpoints.get(g, [])]
            argv = [str(picker_python), "-m", contract.RECORDER_MODULE, "--name", r.record_as, "--host", HOST,
                    "--port", str(self.recorder_ports[r.name]), "--max-text-chars", str(r.max_text_chars)]
            for u in urls or [f"http://{HOST}:9"]:  # no server: every copy is a logged 502
                argv += ["--upstream", u]
            child = self.supervisor.start(f"recorder-{r.name}", argv, env=env, cwd=cwd)
            self.supervisor.wait_ready(
                child, functools.partial(http_ok, f"http://{HOST}:{self.recorder_ports[r.name]}/healthz"),
                self.options.ready_timeout)
        self.envoy = self.supervisor.start("envoy", envoy_argv(
            bootstrap_file, envoy=self.options.envoy, concurrency=self.options.envoy_concurrency,
            dynamic_base_id=False))
        self.supervisor.wait_ready(self.envoy, lambda: http_ok(f"{self.admin_url}/ready"), self.options.ready_timeout)
        if not self._wait_routes(first_routes, self.version, self.options.ready_timeout):
            raise ProcessError(f"Envoy did not load its route files; log {self.envoy.log}:\n{self.envoy.log_tail()}")
        if self.options.watch:
            self._watcher = threading.Thread(target=self._watch, name="devstack-watch", daemon=True)
            self._watcher.start()
        if self.options.restart:
            # from here on a child that exits is restarted with backoff, as a Deployment's pod
            self.supervisor.supervise()

    def stop(self) -> None:
        self._stop_watch.set()
        if self._watcher is not None:
            self._watcher.join(5)
        self.supervisor.stop_all()
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> LocalStack:
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
        """Pod (simulated replica) name -> its Deployment."""
        return {e.name: group for group, eps in self.endpoints.items() for e in eps}

    def service_pools(self) -> dict[str, list[str]]:
        """Deployment -> the pools that select it."""
        out: dict[str, list[str]] = {}
        for pool in self.gw.pools:
            for group in pool.servers:
                out.setdefault(group, []).append(pool.name)
        return out

    def describe(self) -> list[str]:
        lines = [f"objects     {self.source}  ({len(self.objects.items)} objects)"]
        for name, url in self.gateway.items():
            lines.append(f"gateway     {name:<14} {url}")
        for name, pool in self.pools.items():
            p = self.gw.pool(name)
            lines.append(f"pool        {name:<24} listener :{pool.port}  picker grpc :{pool.grpc_port} "
                         f"({'TLS' if p.picker.tls else 'plaintext'}) "
                         f"metrics :{pool.metrics_port}  ({p.picker.failure_mode}; "
                         f"picker config: {p.picker.config_source})")
        for name, eps in self.endpoints.items():
            knobs = self._service_knobs(name)
            kind = "endpoints" if knobs is not None and knobs.endpoints else "simulator"
            for e in eps:
                admin = f"  (admin http://{e.admin})" if e.admin else ""
                lines.append(f"{kind:<11} {e.name:<24} http://{e.address}{admin}")
        lines.append(f"envoy admin {self.admin_url}")
        lines.append(f"configs     {self.workdir}  (logs in {self.log_dir})")
        lines += [f"note        {n}" for n in self.notes]
        return lines

    def sample_requests(self) -> list[dict]:
        """The seeds' curl commands, here: per HTTPRoute (or attached pool), one request for each
        client-facing model name its pools route (a LoRA canary's name, an in-pool split's name) or,
        without any, the first model they serve; plus one per pin header. Bodies as the guides write
        them (chat: "Who are you?" at temperature 0; completions: the critic prompt).
        `pools` names the rule's pools that route the request's model and `routePools` the
        ones the weights send to: where they differ, the share sent elsewhere gets 404
        model_not_found, as on a cluster (the spec warns of it)."""
        out = []
        seen = set()
        for port in self.gw.ports:
            for rule in sorted(port.rules, key=lambda r: (r.order, r.index)):
                if rule.route in seen:
                    continue
                main = [r for r in port.rules if r.route == rule.route and not any(m.headers for m in r.matches)]
                rule = main[-1] if main else rule
                pools = sorted((b for b in rule.backends if b.kind == "InferencePool"), key=lambda b: -b.weight)
                if not pools:
                    continue
                seen.add(rule.route)
                models: list[str] = []
                routed_by: dict[str, list[str]] = {}
                for backend in pools:
                    for x in translate.client_models(self.gw.pool(backend.name)):
                        routed_by.setdefault(x, []).append(backend.name)
                        if x not in models:
                            models.append(x)
                if not models:
                    models = sorted({x for g in self.gw.pool(pools[0].name).servers
                                     for x in self.gw.server(g).server.serves})[:1]
                m = rule.matches[0]
                path = m.path if m.path_type != "RegularExpression" else "/v1/completions"
                prefix = m.path_type == "PathPrefix"
                if prefix and ("/v1/chat/completions".startswith(path.rstrip("/") + "/") or path == "/"):
                    path = "/v1/chat/completions"
                headers = {h.name: h.value for h in m.headers if h.type == "Exact"}
                if rule.hostnames and not rule.hostnames[0].startswith("*"):
                    headers["host"] = rule.hostnames[0]
                pins = [{h.name: h.value for h in r.matches[0].headers if h.type == "Exact"}
                        for r in port.rules if r.route == rule.route and r is not rule and r.matches
                        and any(h.type == "Exact" for h in r.matches[0].headers)]
                variants: list[dict[str, str]] = [{}, *pins]
                for model in models or [""]:
                    for extra in variants if model == (models or [""])[0] else variants[:1]:
                        out.append({"route": rule.route, "url": self.gateway[port.key] + path,
                                    "headers": {**headers, **extra}, "body": _seed_body(path, model),
                                    "pools": routed_by.get(model, [b.name for b in pools]),
                                    "routePools": [b.name for b in pools if b.weight > 0]})
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

    def _write_picker(self, gw: ir.Gateway, pool: str) -> bool:
        """Write a pool's picker config and routing objects if they changed; the picker reloads them."""
        config, routing = self.picker_config(gw, pool), self.routing_objects(gw, pool)
        state = (repr(config), repr(routing))
        if self._picker_written.get(pool) == state:
            return False
        proc = self.pools[pool]
        # Routing objects first: the picker reloads when either file changes.
        write_yaml_all(proc.routing_file, routing)
        write_yaml(proc.config_file, config)
        self._picker_written[pool] = state
        return True

    def _apply(self) -> Applied:
        try:
            objects = self._read()
            if self.stack_file is not None:
                spec = stackspec.load_file(self.stack_file)
            gw = translate.translate(objects.items)
        except (StackError, stackspec.StackConfigError, ValueError) as e:
            return Applied(False, f"{e} (the running config stays)")
        fixed = dataplane.restart_needed(self.gw, gw)
        if fixed:
            return Applied(False, f"the edit changes {', '.join(fixed[:5])}{' ...' if len(fixed) > 5 else ''}, "
                                  "which needs a restart of devstack (the running config stays)")
        plane = dataplane.build(gw, self.endpoints, self.ports)
        try:
            envoy_check.validate(envoy_config.bootstrap(plane, self.admin_port, None), envoy=self.options.envoy)
        except envoy_check.EnvoyConfigError as e:
            return Applied(False, f"{e} (the running config stays)")
        for line in [f"warning: {w}" for w in (*objects.warnings, *gw.warnings)
                     if w not in (*self.objects.warnings, *self.gw.warnings)]:
            self.log(line)
        changed = [f"picker {p.name}" for p in gw.pools if self._write_picker(gw, p.name)]
        routes = self._write_routes(plane)
        if routes:
            if not self._wait_routes(routes, self.version, 10):
                return Applied(False, f"Envoy did not take route version {self.version} within 10s")
            changed.append(f"Envoy routes {', '.join(routes)} (version {self.version})")
        if self.stack_file is not None:
            self.spec = spec
        self.objects, self.gw, self.plane = objects, gw, plane
        return Applied(True, ", ".join(changed) or "nothing changed")

    def _watched_files(self) -> list[Path]:
        if self.stack_file is not None:
            return [self.stack_file]
        out = []
        for p in self.manifest_paths:
            out += sorted(x for x in p.rglob("*") if x.is_file()) if p.is_dir() else [p]
        return out

    def _source_state(self) -> object:
        state = []
        for f in self._watched_files():
            try:
                state.append((str(f), f.read_bytes()))
            except OSError:
                return None  # mid-replace or removed: keep the running config
        return state

    def _watch(self) -> None:
        while not self._stop_watch.wait(self.options.watch_interval):
            state = self._source_state()
            if state is None:
                continue
            if state != self._file_state:
                self._file_state = state
                try:
                    self.apply()
                except Exception as e:  # the watcher must outlive any one bad edit
                    self.log(f"not applied: {e}")

    # --- test and demo hooks -----------------------------------------------------------

    def sim_admin(self, pod: str) -> str:
        """Base URL of a simulated replica's admin endpoints (/admin/faults, /admin/predict)."""
        for eps in self.endpoints.values():
            for e in eps:
                if e.name == pod and e.admin:
                    return f"http://{e.admin}"
        raise KeyError(f"no simulated replica named {pod!r}")

    def set_faults(self, pod: str, **faults) -> dict:
        """POST /admin/faults on a simulated replica: error_rate, error_status, stall, slow_start_seconds."""
        req = urllib.request.Request(f"{self.sim_admin(pod)}/admin/faults", data=json.dumps(faults).encode(),
                                     headers={"content-type": "application/json"}, method="POST")
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.load(r)

    def child(self, name: str) -> Child:
        """A supervised process by name: `envoy`, `picker-<pool>`, `sim-<Deployment>`."""
        return next(c for c in self.supervisor.children if c.name == name)

    def crash(self, name: str) -> None:
        """Kill a process as a crash would (SIGKILL); the supervisor restarts it."""
        self.supervisor.crash(self.child(name))

    def kill_picker(self, pool: str) -> None:
        """Stop a pool's picker for good (to see its failure mode at work; no restart)."""
        child = self.pools[pool].child
        if child is not None:
            self.supervisor.stop(child)


@contextlib.contextmanager
def run(stack: str | Path | None = None, options: Options | None = None, *,
        manifests: list[str | Path] | None = None, **kwargs) -> Iterator[LocalStack]:
    """`with run("local", time_scale=20) as stack:` — started, ready, and stopped after."""
    if options is None:
        options = Options(**kwargs)
    elif kwargs:
        raise TypeError("give options or keyword arguments, not both")
    stack_obj = LocalStack(stack, options, manifests=manifests)
    stack_obj.start()
    try:
        yield stack_obj
    finally:
        stack_obj.stop()


def mirror_pools(gw: ir.Gateway) -> set[str]:
    """The pools a mirror involves: the primary pool of a mirroring rule and the pools it mirrors to."""
    out: set[str] = set()
    for port in gw.ports:
        for rule in port.rules:
            if rule.mirrors:
                out |= {b.name for b in rule.backends if b.kind == "InferencePool"}
                out |= {m.name for m in rule.mirrors if m.kind == "InferencePool"}
    return out
