"""upstream-epp: real Envoy + the upstream endpoint picker (EPP) that infershift's picker replaces,
sigs.k8s.io/gateway-api-inference-extension v1.5.0 cmd/epp, built by tools/realengine/epp/build.sh
(its go.mod says why that version), with upstream's default EndpointPickerConfig.

EPP cannot run without a Kubernetes API server at v1.5.0: cmd/epp/runner/runner.go `Run` gets a
rest config (`ctrl.GetConfig()`) and starts a controller-runtime manager whatever the flags, and
no data source lists endpoints from anything but Pods (pkg/epp/framework/plugins/datalayer/source).
Its "standalone" mode (`--endpoint-selector`, no CRDs) cannot be reached from the command line at
v1.5.0: server/options.go Validate refuses `--pool-name` together with `--endpoint-selector`, and
runner.go NewEndpointPoolFromOptions then refuses the empty pool name; upstream's own standalone
integration harness (test/integration/epp/harness.go) sets both options in Go, bypassing the flags.
So this launcher runs EPP the way the inferencepool chart and upstream's e2e manifests do
(config/charts/inferencepool, test/testdata/inferencepool-e2e.yaml: `--pool-name`,
`--pool-namespace`), against the control plane of tests/realengine/controlplane.py (binaries from
tools/realengine/k8s/build.sh) with the CRDs of EPP's own module version (share/crds from
tools/realengine/epp/build.sh), so nothing here stands in for Kubernetes:

- an InferencePool (inference.networking.k8s.io/v1) selecting the pool's Pods, every server's port
  a target port (at most 8: the CRD's maxItems), its endpointPickerRef naming EPP's gRPC port;
- one Pod per simulated server, labelled for the selector, `schedulerName` naming no scheduler (no
  node runs them; envtest in upstream's harness has no scheduler either), status Running + Ready
  with the server's IP written through the status subresource;
- the simulators of one pool share 127.0.0.1 and differ by port, so each Pod names its own port
  with the `inference.networking.k8s.io/active-ports` annotation (datastore.go extractActivePorts):
  EPP then has one endpoint per server, `<pod>-rank-<i>` at 127.0.0.1:<port>, whose metrics it
  scrapes at the same port (with several target ports the metrics port is the target port,
  datastore.go podUpdateOrAddIfNotExist);
- EPP reads the API server as its own ServiceAccount, with the Roles upstream's inferencepool chart
  gives it (config/charts/epplib/templates/_rbac.yaml: pods get/watch/list;
  config/charts/inferencepool/templates/rbac.yaml: inferencepools, inferenceobjectives,
  inferencemodelrewrites get/watch/list), through a TokenRequest token in a kubeconfig;
- flags and environment as the chart's Deployment sets them (config/charts/epplib/templates/
  _deployment.yaml: `--pool-name`, `--pool-namespace`, `--pool-group`, `--zap-encoder json`,
  `--config-file`, `--v 1`, `--tracing=false`, NAMESPACE and POD_NAME from the downward API), on
  free ports, plus `--metrics-endpoint-auth=false` (the chart's own flag when Prometheus auth is
  off) so the launcher can read `inference_pool_ready_pods` to know EPP sees every server;
- the EndpointPickerConfig is the chart's default-plugins.yaml for a vLLM pool over HTTP
  (config/charts/epplib/templates/_config.yaml), which is also the binary's built-in default
  (pkg/epp/config/loader/defaults.go): queue-scorer 2, kv-cache-utilization-scorer 2,
  prefix-cache-scorer 3, metrics from /metrics;
- Envoy is the bench's gateway (infershift.picker.envoy_config.gateway_config, the same as the
  infershift router's) in the shape upstream's own Envoy for EPP has (test/testdata/envoy.yaml):
  ext_proc FULL_DUPLEX_STREAMED both ways with trailers, no failure_mode_allow (fail closed, so
  every answered request was placed by EPP), a message timeout of 1000s, TLS to EPP's self-signed
  certificate, and an ORIGINAL_DST cluster that dials x-gateway-destination-endpoint.

EPP binds its gRPC, health and metrics ports on every interface (`:<port>`: internal/runnable/grpc.go,
runner.go's metrics BindAddress; v1.5.0 has no bind-address flag); they are free ports and only
this machine's loopback talks to them. The control plane's processes are not counted in the
router's cores (a cluster runs an API server for either picker); Envoy and EPP are.

Without the EPP binary or the control plane's, `unavailable()` says which build is missing and the
runner leaves this router out of the run with that reason (not a failure).
"""
from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
import urllib.request
from pathlib import Path
from types import ModuleType
from typing import Any

import yaml

from ..procs import REPO, Proc, free_port
from .base import Router, Setup
from .infershift import envoy_config as gateway_envoy_config

EPP_BUILD = REPO / "tools" / "realengine" / "epp" / "build.sh"
CONTROLPLANE_PY = REPO / "tests" / "realengine" / "controlplane.py"
EPP_VERSION = "gateway-api-inference-extension v1.5.0"
NAMESPACE = "bench"
POOL_NAME = "bench-pool"
POOL_LABEL = "app", POOL_NAME
POOL_GROUP = "inference.networking.k8s.io"
# A Deployment-style pod name, as the downward API gives EPP (runner.go parses POD_NAME as
# `<deployment>-<hash>-<suffix>` in some modes).
POD_NAME = "upstream-epp-5d7c9b8f4-bench"
ACTIVE_PORTS_ANNOTATION = "inference.networking.k8s.io/active-ports"
MAX_TARGET_PORTS = 8   # the InferencePool CRD's targetPorts maxItems
NO_SCHEDULER = "bench-no-scheduler"
# The chart's Roles for EPP (config/charts/epplib/templates/_rbac.yaml and
# config/charts/inferencepool/templates/rbac.yaml), one Role here.
ROLE_RULES = [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "watch", "list"]},
              {"apiGroups": ["inference.networking.x-k8s.io"],
               "resources": ["inferenceobjectives", "inferencemodelrewrites"], "verbs": ["get", "watch", "list"]},
              {"apiGroups": [POOL_GROUP], "resources": ["inferencepools"], "verbs": ["get", "watch", "list"]}]
# upstream's Envoy for EPP (test/testdata/envoy.yaml) waits this long for an ext_proc message
MESSAGE_TIMEOUT = "1000s"


def plugins_config() -> dict:
    """The chart's default-plugins.yaml rendered for modelServerType vllm, protocol http, no latency
    predictor, metricsDataSource at its defaults (values.yaml: http, /metrics, insecureSkipVerify)."""
    return {
        "apiVersion": "inference.networking.x-k8s.io/v1alpha1",
        "kind": "EndpointPickerConfig",
        "plugins": [
            {"type": "queue-scorer"},
            {"type": "kv-cache-utilization-scorer"},
            {"type": "prefix-cache-scorer"},
            {"type": "metrics-data-source",
             "parameters": {"scheme": "http", "path": "/metrics", "insecureSkipVerify": True}},
            {"type": "core-metrics-extractor"},
        ],
        "schedulingProfiles": [{"name": "default", "plugins": [
            {"pluginRef": "queue-scorer", "weight": 2},
            {"pluginRef": "kv-cache-utilization-scorer", "weight": 2},
            {"pluginRef": "prefix-cache-scorer", "weight": 3},
        ]}],
    }


def _split(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"pool address {address!r}: expected ip:port")
    return host, int(port)


def target_ports(addresses: list[str]) -> list[int]:
    """The InferencePool's targetPorts: every server's port, in pool order. Refuses pools
    EPP cannot address this way: more than 8 servers, or two servers on one port."""
    ports = [_split(a)[1] for a in addresses]
    if not ports:
        raise ValueError("pool addresses: empty; EPP needs at least one endpoint")
    if len(ports) > MAX_TARGET_PORTS:
        raise ValueError(f"pool addresses: {len(ports)} servers, but EPP takes at most {MAX_TARGET_PORTS} "
                         "target ports (InferencePool spec.targetPorts)")
    if len(set(ports)) != len(ports):
        raise ValueError(f"pool addresses: ports must differ per server for EPP's active-ports mapping, "
                         f"got {addresses}")
    return ports


def pods(addresses: list[str]) -> list[tuple[dict, dict]]:
    """(Pod to create, status to write) per server: labelled for EPP's selector, its own port the only
    active target port, never scheduled; status Running and Ready at the server's IP."""
    target_ports(addresses)
    out = []
    for i, a in enumerate(addresses):
        ip, port = _split(a)
        pod = {"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": f"sim-{i}", "namespace": NAMESPACE, "labels": dict([POOL_LABEL]),
                            "annotations": {ACTIVE_PORTS_ANNOTATION: str(port)}},
               "spec": {"schedulerName": NO_SCHEDULER, "containers": [{
                   "name": "vllm", "image": "infershift/sim",
                   "ports": [{"name": "http", "containerPort": port}]}]}}
        status = {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}],
                  "conditions": [{"type": "Ready", "status": "True"},
                                 {"type": "ContainersReady", "status": "True"}]}
        out.append((pod, status))
    return out


def inference_pool(addresses: list[str], grpc_port: int) -> dict:
    return {"apiVersion": f"{POOL_GROUP}/v1", "kind": "InferencePool",
            "metadata": {"name": POOL_NAME, "namespace": NAMESPACE},
            "spec": {"selector": {"matchLabels": dict([POOL_LABEL])},
                     "targetPorts": [{"number": p} for p in target_ports(addresses)],
                     "endpointPickerRef": {"name": "upstream-epp", "port": {"number": grpc_port}}}}


def epp_argv(epp: Path, *, grpc_port: int, health_port: int, metrics_port: int, config_file: Path) -> list[str]:
    return [str(epp),
            "--pool-name", POOL_NAME, "--pool-namespace", NAMESPACE, "--pool-group", POOL_GROUP,
            "--grpc-port", str(grpc_port), "--grpc-health-port", str(health_port),
            "--metrics-port", str(metrics_port), "--metrics-endpoint-auth=false",
            "--zap-encoder", "json", "--config-file", str(config_file), "--v", "1", "--tracing=false"]


def epp_env(kubeconfig: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KUBE", "POD_", "NAMESPACE"))}
    env.update({"KUBECONFIG": str(kubeconfig), "NAMESPACE": NAMESPACE, "POD_NAME": POD_NAME})
    return env


def envoy_config(*, listen_port: int, admin_port: int, picker_port: int, pool: list[str]) -> dict:
    return gateway_envoy_config(listen_port=listen_port, admin_port=admin_port, picker_port=picker_port,
                                pool=pool, full_duplex=True, fail_open=False, message_timeout=MESSAGE_TIMEOUT)


def epp_bin_dir() -> tuple[Path | None, str]:
    """(bin dir holding `epp`, or None; what build.sh --where said)."""
    try:
        r = subprocess.run(["bash", str(EPP_BUILD), "--where"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as e:
        return None, str(e)
    where = r.stdout.strip().splitlines()[-1] if r.stdout.strip() else ""
    if r.returncode == 0 and where and (Path(where) / "epp").is_file():
        return Path(where), where
    return None, where


def load_controlplane() -> ModuleType:
    """tests/realengine/controlplane.py (the real control plane the tests use), loaded by path once."""
    name = "infershift_realengine_controlplane"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, CONTROLPLANE_PY)
    if spec is None or spec.loader is None:
        raise FileNotFoundError(CONTROLPLANE_PY)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod  # its dataclasses look their module up there
    try:
        spec.loader.exec_module(mod)
    except BaseException:
        del sys.modules[name]
        raise
    return mod


READY_PODS = re.compile(r"^inference_pool_ready_pods\{[^}]*\}\s+([0-9.eE+-]+)$", re.M)


def ready_pods(metrics_text: str) -> int | None:
    m = READY_PODS.search(metrics_text)
    return int(float(m.group(1))) if m else None


class UpstreamEPP(Router):
    name = "upstream-epp"
    description = (f"Envoy 1.40 + the upstream endpoint picker ({EPP_VERSION} cmd/epp, its default "
                   "EndpointPickerConfig, standalone mode over the pool's Pods in a real kube-apiserver), "
                   "ext_proc full duplex as upstream's Envoy config, 1 Envoy worker thread")
    picker_process = "upstream-epp"

    def __init__(self) -> None:
        super().__init__()
        self.plane: Any = None

    def unavailable(self) -> str | None:
        bin_dir, where = epp_bin_dir()
        if bin_dir is None:
            return (f"the upstream endpoint picker is not built (no epp in {where or 'the realengine cache'}): "
                    f"run `make realengine` or `bash {EPP_BUILD.relative_to(REPO)}`")
        if not CONTROLPLANE_PY.is_file():
            return f"{CONTROLPLANE_PY.relative_to(REPO)} is missing (EPP needs a Kubernetes API server)"
        try:
            cp_bins = load_controlplane().binaries()
        except Exception as e:  # an unreadable control plane module is a reason, reported as such
            return f"the control plane could not be located: {e}"
        if cp_bins is None:
            return ("the control plane EPP needs (etcd, kube-apiserver, ...) is not built: run `make realengine` "
                    "or `bash tools/realengine/k8s/build.sh`")
        return None

    def start(self, setup: Setup) -> str:
        why = self.unavailable()
        if why:
            raise RuntimeError(why)
        target_ports(setup.addresses)  # refuse a pool EPP cannot address before starting anything
        bin_dir, _ = epp_bin_dir()
        assert bin_dir is not None
        cp = load_controlplane()
        self.plane = cp.ControlPlane(cp.binaries(), nodes=0, apply_crds=False)
        self.plane.start()
        plane = self.plane
        plane.install_crds(bin_dir.parent / "share" / "crds")
        plane.ensure_namespace(NAMESPACE)
        grpc, health, metrics = free_port(), free_port(), free_port()
        plane.apply([
            {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "upstream-epp", "namespace": NAMESPACE}},
            {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
             "metadata": {"name": "upstream-epp-sa", "namespace": NAMESPACE}, "rules": ROLE_RULES},
            {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
             "metadata": {"name": "upstream-epp-sa", "namespace": NAMESPACE},
             "subjects": [{"kind": "ServiceAccount", "name": "upstream-epp", "namespace": NAMESPACE}],
             "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "upstream-epp-sa"}},
            inference_pool(setup.addresses, grpc),
        ])
        for pod, status in pods(setup.addresses):
            created = plane.request("POST", f"/api/v1/namespaces/{NAMESPACE}/pods", pod)
            created["status"] = status
            plane.request("PUT", f"/api/v1/namespaces/{NAMESPACE}/pods/{pod['metadata']['name']}/status", created)
        creds = plane.service_account_kubeconfig(NAMESPACE, "upstream-epp")
        cfg = setup.workdir / f"{self.name}-plugins.yaml"
        cfg.write_text(yaml.safe_dump(plugins_config(), sort_keys=False))
        epp = Proc(self.picker_process, epp_argv(bin_dir / "epp", grpc_port=grpc, health_port=health,
                                                 metrics_port=metrics, config_file=cfg),
                   setup.workdir / f"{self.name}.log", env=epp_env(creds.kubeconfig))
        self.procs.append(epp)
        n = len(setup.addresses)

        def sees_pool() -> bool:
            with urllib.request.urlopen(f"http://127.0.0.1:{metrics}/metrics", timeout=2) as r:
                return ready_pods(r.read().decode()) == n
        # inference_pool_ready_pods is flushed every --refresh-prometheus-metrics-interval (5 s)
        epp.wait_for(sees_pool, 90, f"reporting {n} ready pods (inference_pool_ready_pods)")
        return self.start_front_envoy(setup, lambda port, admin: envoy_config(
            listen_port=port, admin_port=admin, picker_port=grpc, pool=setup.addresses))

    def stop(self) -> None:
        try:
            super().stop()
        finally:
            if self.plane is not None:
                self.plane.stop()
                self.plane = None
