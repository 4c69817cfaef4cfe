"""A real, local Kubernetes control plane for tests: etcd, kube-apiserver, kube-controller-manager,
kube-scheduler and KWOK, built from the Go modules pinned in tools/realengine/k8s (its build.sh,
`make realengine`), started on free loopback ports in a temp dir and always stopped.

What runs, and how it is set up:
- etcd (one member, no fsync: test data) on loopback client and peer ports.
- kube-apiserver on a loopback HTTPS port, serving a certificate of a CA made per run, with client
  certificate authentication (that CA), service-account token signing with a key made per run
  (`--service-account-issuer/-key-file/-signing-key-file`, so the TokenRequest API works),
  `--authorization-mode=Node,RBAC`, and no endpoint reconciler (the `kubernetes` Service's
  endpoints would have to be a non-loopback address).
- kube-controller-manager (Deployments -> ReplicaSets -> Pods, garbage collection, service
  accounts, ...) and kube-scheduler (binds pods to nodes), each with a client certificate for the
  user name the API server's bootstrap RBAC policy grants (system:kube-controller-manager,
  system:kube-scheduler); neither serves HTTP (`--secure-port=0`).
- kwok with KWOK's own stages (node initialize + heartbeat with lease, pod ready / complete /
  delete; build.sh copies them from the pinned module) and `nodes` fake nodes without GPUs. Each
  node has a loopback pod CIDR (127.0.<10+i>.0/24), so the pod IPs KWOK assigns are addresses a
  test can bind a real server to (the network rule: tests reach loopback only).
- Every CRD under ../shared/crds (Gateway API, Inference Extension v1 and v1alpha2, llm-d's
  InferenceObjective and InferenceModelRewrite, Envoy Gateway's policies), applied server-side and
  waited for until Established, so the server validates custom resources itself (schemas, CEL).

API (the `control_plane` fixture of tests/realengine/conftest.py is a started ControlPlane, one per
test session):
- `server`: the API server's URL (https://127.0.0.1:PORT); `ca_file`: its CA (PEM).
- `kubeconfig`: an admin kubeconfig (client certificate in group system:masters), for any client
  (pulumi-kubernetes, the picker, kubectl).
- `request(method, path, body=None, params=None, headers=None, ok=(200, 201))` -> parsed JSON,
  as admin; an unexpected status raises ApiError carrying the server's Status message.
- `apply(objs_or_yaml, namespace=None, field_manager=...)`: server-side apply (force, strict field
  validation) of a dict, a list of dicts, or YAML text (several documents); returns the objects as
  the server stored them. `delete(objs_or_yaml, ...)`, `get(api_version, kind, name, namespace)`,
  `list(api_version, kind, namespace=None, label_selector=None)`, `ensure_namespace(name)`.
- `wait_for(predicate, timeout, what)`: polls until the predicate returns something truthy.
- `service_account_kubeconfig(namespace, name, expiration_seconds=3600, bound_secret=None,
  token_file=True)` -> ServiceAccountCredentials: mints a token for the ServiceAccount with the
  TokenRequest API (expirationSeconds; optionally bound to a Secret, so deleting the Secret revokes
  the token at once) and writes a kubeconfig that names it by `tokenFile` (default) or inline
  `token`. Its `rotate(...)` mints a new token and replaces the file atomically.
- `token_review(token)`: what the API server says of a token (TokenReview).
- `restart_apiserver(downtime=0.0)`: stops kube-apiserver (TERM, then its process group KILLed)
  and starts it again on the same port, with the same etcd: watches break, data stays.
- `log(component)`: what a component printed so far (etcd, kube-apiserver, ...).
- `stop()`: stops every process (process groups killed) and removes the temp dir; the fixture does
  it in teardown, also when a test failed.

Binaries: `binaries()` finds them where build.sh puts them (`build.sh --where`), or returns None;
the conftest then skips the tests naming `make realengine`, or fails them when
INFERSHIFT_REQUIRE_REALENGINE=1 (CI).
"""
from __future__ import annotations

import datetime
import ipaddress
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
import yaml

from infershift import proc
from infershift.devstack.ports import free_port

REPO = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO / "tools" / "realengine" / "k8s" / "build.sh"
CRDS_DIR = Path(os.environ.get("INFERSHIFT_CRDS", REPO.parent / "shared" / "crds"))
BINARIES = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")
LOOPBACK = "127.0.0.1"
# What KWOK's fake nodes are told to be; the stage templates fill in conditions and addresses.
KWOK_NODE_ANNOTATION = ("kwok.x-k8s.io/node", "fake")
ISSUER = "https://kubernetes.default.svc.cluster.local"


class ApiError(AssertionError):
    """An API call with an unexpected status: the method, path, status and the server's message."""

    def __init__(self, method: str, path: str, status: int, body: Any):
        self.method, self.path, self.status, self.body = method, path, status, body
        msg = body.get("message") if isinstance(body, dict) else str(body)[:2000]
        self.reason = body.get("reason") if isinstance(body, dict) else None
        self.message = msg
        super().__init__(f"{method} {path}: {status} {self.reason or ''}: {msg}")


def require_or_skip(reason: str) -> None:
    """Skip a test whose real engine is missing, naming what to do; with
    INFERSHIFT_REQUIRE_REALENGINE=1 (CI) fail it instead."""
    import pytest

    if os.environ.get("INFERSHIFT_REQUIRE_REALENGINE") == "1":
        pytest.fail(f"{reason} (INFERSHIFT_REQUIRE_REALENGINE=1)", pytrace=False)
    pytest.skip(reason)


def binaries() -> Path | None:
    """The bin folder build.sh fills (etcd, kube-apiserver, ...), or None when not built yet."""
    try:
        out = subprocess.run(["bash", str(BUILD_SCRIPT), "--where"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0 or not out.stdout.strip():
        return None
    path = Path(out.stdout.strip().splitlines()[-1])
    ok = all((path / b).is_file() for b in BINARIES) and (path.parent / "share" / "kwok-stages.yaml").is_file()
    return path if ok else None


# --- PKI: a CA per run, server and client certificates signed by it ------------------------------------------------

def _pki(d: Path) -> dict[str, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    d.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    files: dict[str, Path] = {}

    def write_key(name: str, key) -> None:
        p = d / f"{name}.key"
        p.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption()))
        p.chmod(0o600)
        files[f"{name}.key"] = p

    def cert(name: str, subject: x509.Name, key, issuer_name: x509.Name, issuer_key, *, ca=False,
             server: bool = False) -> x509.Certificate:
        b = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer_name)
             .public_key(key.public_key()).serial_number(x509.random_serial_number())
             .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=2))
             .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
        if ca:
            b = b.add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                              content_commitment=False, key_encipherment=False,
                                              data_encipherment=False, key_agreement=False,
                                              encipher_only=False, decipher_only=False), critical=True)
        else:
            usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
            b = b.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        if server:
            b = b.add_extension(x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address(LOOPBACK))]), critical=False)
        c = b.sign(issuer_key, hashes.SHA256())
        p = d / f"{name}.crt"
        p.write_bytes(c.public_bytes(serialization.Encoding.PEM))
        files[f"{name}.crt"] = p
        return c

    def name(cn: str, *orgs: str) -> x509.Name:
        return x509.Name([*(x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in orgs),
                          x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = name("infershift-test-ca")
    cert("ca", ca_name, ca_key, ca_name, ca_key, ca=True)
    write_key("ca", ca_key)
    for who, subject, server in [
        ("apiserver", name("kube-apiserver"), True),
        ("admin", name("infershift-admin", "system:masters"), False),
        ("controller-manager", name("system:kube-controller-manager"), False),
        ("scheduler", name("system:kube-scheduler"), False),
        ("kwok", name("kwok-controller", "system:masters"), False),
    ]:
        k = ec.generate_private_key(ec.SECP256R1())
        cert(who, subject, k, ca_name, ca_key, server=server)
        write_key(who, k)
    # The service-account token signing key pair (RS256, what every client expects of a cluster).
    sa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    write_key("sa", sa)
    pub = d / "sa.pub"
    pub.write_bytes(sa.public_key().public_bytes(serialization.Encoding.PEM,
                                                 serialization.PublicFormat.SubjectPublicKeyInfo))
    files["sa.pub"] = pub
    return files


def write_kubeconfig(path: Path, server: str, ca_file: Path, *, user: dict[str, Any], name: str = "test",
                     namespace: str | None = None) -> Path:
    """A one-context kubeconfig: the cluster (server, CA file) and `user` (a kubeconfig user entry:
    client-certificate/client-key, token or tokenFile)."""
    ctx: dict[str, Any] = {"cluster": name, "user": name}
    if namespace:
        ctx["namespace"] = namespace
    doc = {"apiVersion": "v1", "kind": "Config", "current-context": name,
           "clusters": [{"name": name, "cluster": {"server": server, "certificate-authority": str(ca_file)}}],
           "contexts": [{"name": name, "context": ctx}],
           "users": [{"name": name, "user": user}]}
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    path.chmod(0o600)
    return path


# --- processes -----------------------------------------------------------------------------------------------------

@dataclass
class _Component:
    name: str
    argv: list[str]
    log_path: Path
    p: subprocess.Popen | None = None
    _log: Any = None

    def start(self) -> None:
        self._log = open(self.log_path, "ab")
        self.p = proc.spawn(self.argv, out=self._log, cwd=str(self.log_path.parent))

    def alive(self) -> bool:
        return self.p is not None and self.p.poll() is None

    def stop(self, grace: float = 10.0) -> None:
        if self.p is not None:
            proc.stop_group(self.p, grace)
            self.p = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def output(self) -> str:
        if self._log is not None:
            self._log.flush()
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""


@dataclass
class ServiceAccountCredentials:
    """A kubeconfig for one ServiceAccount with a TokenRequest token (see ControlPlane)."""

    plane: ControlPlane
    namespace: str
    name: str
    kubeconfig: Path
    token_path: Path
    token: str
    expiration: str  # the token's status.expirationTimestamp
    bound_secret: str | None = None

    def rotate(self, expiration_seconds: int = 3600, bound_secret: str | None = None) -> str:
        """Mint a new token (optionally bound to another Secret) and replace the token file
        atomically, as the kubelet rotates a projected token; returns the new token."""
        tok, exp = self.plane.mint_token(self.namespace, self.name, expiration_seconds, bound_secret)
        tmp = self.token_path.with_suffix(".tmp")
        tmp.write_text(tok)
        tmp.chmod(0o600)
        os.replace(tmp, self.token_path)
        self.token, self.expiration, self.bound_secret = tok, exp, bound_secret
        return tok


@dataclass
class ControlPlane:
    bin_dir: Path
    nodes: int = 3
    node_capacity: dict[str, str] = field(default_factory=lambda: {"cpu": "32", "memory": "256Gi", "pods": "110"})
    apply_crds: bool = True
    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="infershift-k8s-")))

    def __post_init__(self) -> None:
        self.components: dict[str, _Component] = {}
        self._session: requests.Session | None = None
        self._resources: dict[tuple[str, str], tuple[str, bool]] = {}  # (apiVersion, kind) -> (plural, namespaced)
        self._sa_count = 0

    # --- lifecycle ---------------------------------------------------------------------------------------------

    def start(self) -> ControlPlane:
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        r = self.root
        self.pki = _pki(r / "pki")
        self.ca_file = self.pki["ca.crt"]
        self.etcd_port, self.etcd_peer_port, self.port = free_port(), free_port(), free_port()
        self.server = f"https://{LOOPBACK}:{self.port}"
        self.kubeconfig = write_kubeconfig(r / "admin.kubeconfig", self.server, self.ca_file, name="admin", user={
            "client-certificate": str(self.pki["admin.crt"]), "client-key": str(self.pki["admin.key"])})
        kc = {who: write_kubeconfig(r / f"{who}.kubeconfig", self.server, self.ca_file, name=who, user={
            "client-certificate": str(self.pki[f"{who}.crt"]), "client-key": str(self.pki[f"{who}.key"])})
            for who in ("controller-manager", "scheduler", "kwok")}
        b = self.bin_dir
        etcd_url = f"http://{LOOPBACK}:{self.etcd_port}"
        peer_url = f"http://{LOOPBACK}:{self.etcd_peer_port}"
        self._add("etcd", [str(b / "etcd"), "--name", "default", "--data-dir", str(r / "etcd"),
                           "--listen-client-urls", etcd_url, "--advertise-client-urls", etcd_url,
                           "--listen-peer-urls", peer_url, "--initial-advertise-peer-urls", peer_url,
                           "--initial-cluster", f"default={peer_url}", "--unsafe-no-fsync",
                           "--log-level", "warn"])
        self.wait_for(lambda: _http_ok(f"{etcd_url}/health"), 60, "etcd healthy", "etcd")
        self._add("kube-apiserver", [
            str(b / "kube-apiserver"), "--etcd-servers", etcd_url,
            "--bind-address", LOOPBACK, "--advertise-address", LOOPBACK, "--secure-port", str(self.port),
            "--tls-cert-file", str(self.pki["apiserver.crt"]), "--tls-private-key-file", str(self.pki["apiserver.key"]),
            "--client-ca-file", str(self.ca_file),
            "--service-account-issuer", ISSUER, "--service-account-key-file", str(self.pki["sa.pub"]),
            "--service-account-signing-key-file", str(self.pki["sa.key"]),
            "--authorization-mode", "Node,RBAC", "--service-cluster-ip-range", "10.96.0.0/16",
            "--endpoint-reconciler-type", "none", "--cert-dir", str(r / "apiserver-certs"),
            "--profiling=false", "--v", "1"])
        self._wait_apiserver()
        self._add("kube-controller-manager", [
            str(b / "kube-controller-manager"), "--kubeconfig", str(kc["controller-manager"]),
            "--leader-elect=false", "--secure-port", "0", "--use-service-account-credentials",
            "--service-account-private-key-file", str(self.pki["sa.key"]), "--root-ca-file", str(self.ca_file),
            "--cluster-signing-cert-file", str(self.ca_file), "--cluster-signing-key-file", str(self.pki["ca.key"]),
            "--v", "1"])
        self._add("kube-scheduler", [
            str(b / "kube-scheduler"), "--kubeconfig", str(kc["scheduler"]), "--leader-elect=false",
            "--secure-port", "0", "--v", "1"])
        self._add("kwok", [
            str(b / "kwok"), "--kubeconfig", str(kc["kwok"]), "--config", str(b.parent / "share" / "kwok-stages.yaml"),
            "--manage-all-nodes=false", "--manage-nodes-with-annotation-selector", "=".join(KWOK_NODE_ANNOTATION),
            "--node-lease-duration-seconds", "40", "--cidr", "127.0.9.0/24", "--node-ip", LOOPBACK])
        for i in range(self.nodes):
            self._create_node(i)
        self.wait_for(lambda: all(_ready(n) for n in self.list("v1", "Node")) and len(self.list("v1", "Node")) == self.nodes,
                      60, "KWOK's nodes Ready", "kwok")
        # the service-account controller works once `default` has its ServiceAccount
        self.wait_for(lambda: self.get("v1", "ServiceAccount", "default", "default"), 60,
                      "the default ServiceAccount (kube-controller-manager running)", "kube-controller-manager")
        if self.apply_crds:
            self.install_crds()

    def _add(self, name: str, argv: list[str]) -> None:
        c = _Component(name, argv, self.root / f"{name}.log")
        self.components[name] = c
        c.start()

    def _wait_apiserver(self) -> None:
        def ready():
            r = self.session.get(f"{self.server}/readyz", timeout=5)
            return r.status_code == 200
        self.wait_for(ready, 120, "kube-apiserver /readyz", "kube-apiserver")

    def _create_node(self, i: int) -> None:
        name = f"kwok-node-{i}"
        self.request("POST", "/api/v1/nodes", {
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "annotations": dict([KWOK_NODE_ANNOTATION]),
                         "labels": {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux",
                                    "kubernetes.io/arch": "amd64", "type": "kwok"}},
            "spec": {"podCIDR": f"127.0.{10 + i}.0/24", "podCIDRs": [f"127.0.{10 + i}.0/24"]},
            "status": {"capacity": dict(self.node_capacity), "allocatable": dict(self.node_capacity)},
        })

    def stop(self) -> None:
        for name in reversed(list(self.components)):
            try:
                self.components[name].stop()
            except Exception:
                pass
        if self._session is not None:
            self._session.close()
            self._session = None
        if os.environ.get("INFERSHIFT_KEEP_CONTROLPLANE_DIR"):
            return
        shutil.rmtree(self.root, ignore_errors=True)

    def restart_apiserver(self, downtime: float = 0.0) -> None:
        """Stop kube-apiserver and start it again on the same port: open watches break; etcd keeps
        the data, so resource versions stay valid (a watch may still be told 410 Gone if the new
        server's watch cache starts past them)."""
        c = self.components["kube-apiserver"]
        c.stop()
        if self._session is not None:
            self._session.close()
            self._session = None
        time.sleep(downtime)
        c.start()
        self._wait_apiserver()

    def log(self, component: str) -> str:
        return self.components[component].output()

    # --- HTTP ----------------------------------------------------------------------------------------------------

    @property
    def session(self) -> requests.Session:
        if self._session is None:
            s = requests.Session()
            s.verify = str(self.ca_file)
            s.cert = (str(self.pki["admin.crt"]), str(self.pki["admin.key"]))
            s.trust_env = False  # never a proxy
            self._session = s
        return self._session

    def request(self, method: str, path: str, body: Any = None, *, params: dict | None = None,
                headers: dict | None = None, ok: Iterable[int] = (200, 201), content_type: str = "application/json",
                session: requests.Session | None = None) -> Any:
        data = None if body is None else (body if isinstance(body, (bytes, str)) else json.dumps(body))
        hdrs = {"Content-Type": content_type, "Accept": "application/json", **(headers or {})}
        r = (session or self.session).request(method, f"{self.server}{path}", data=data, params=params,
                                              headers=hdrs, timeout=60)
        try:
            doc = r.json()
        except ValueError:
            doc = r.text
        if r.status_code not in tuple(ok):
            raise ApiError(method, path, r.status_code, doc)
        return doc

    def wait_for(self, pred: Callable[[], Any], timeout: float, what: str, component: str | None = None) -> Any:
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            if component is not None and not self.components[component].alive():
                raise RuntimeError(f"{what}: {component} exited:\n{self.log(component)[-4000:]}")
            try:
                v = pred()
                if v:
                    return v
            except (requests.RequestException, ApiError, OSError) as e:
                last = e
            time.sleep(0.2)
        tail = f"\n{component} log:\n{self.log(component)[-4000:]}" if component else ""
        raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}" + (f" (last error: {last})" if last else "")
                           + tail)

    # --- resources -----------------------------------------------------------------------------------------------

    def _resource(self, api_version: str, kind: str) -> tuple[str, bool]:
        key = (api_version, kind)
        if key not in self._resources:
            base = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
            doc = self.request("GET", base)
            for res in doc.get("resources") or []:
                if "/" not in res["name"]:
                    self._resources[(api_version, res["kind"])] = (res["name"], bool(res["namespaced"]))
            if key not in self._resources:
                raise ApiError("GET", base, 404, {"message": f"kind {kind} is not served in {api_version}"})
        return self._resources[key]

    def path(self, api_version: str, kind: str, name: str | None = None, namespace: str | None = None) -> str:
        plural, namespaced = self._resource(api_version, kind)
        base = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
        ns = f"/namespaces/{namespace or 'default'}" if namespaced else ""
        return f"{base}{ns}/{plural}" + (f"/{name}" if name else "")

    @staticmethod
    def _docs(objs: Any) -> list[dict]:
        if isinstance(objs, str):
            return [d for d in yaml.safe_load_all(objs) if d]
        if isinstance(objs, dict):
            return [objs]
        return [d for d in objs if d]

    def apply(self, objs: Any, namespace: str | None = None, field_manager: str = "infershift-tests") -> list[dict]:
        """Server-side apply (force, strict field validation); the server's message on rejection."""
        out = []
        for d in self._docs(objs):
            meta = d.get("metadata") or {}
            ns = meta.get("namespace") or namespace
            path = self.path(d["apiVersion"], d["kind"], meta["name"], ns)
            body = d if not ns or meta.get("namespace") else {**d, "metadata": {**meta, "namespace": ns}}
            out.append(self.request("PATCH", path, body, content_type="application/apply-patch+yaml",
                                    params={"fieldManager": field_manager, "force": "true",
                                            "fieldValidation": "Strict"}))
        return out

    def delete(self, objs: Any, namespace: str | None = None, missing_ok: bool = True,
               grace_period_seconds: int | None = None) -> None:
        for d in self._docs(objs):
            meta = d.get("metadata") or {}
            path = self.path(d["apiVersion"], d["kind"], meta["name"], meta.get("namespace") or namespace)
            body = {"apiVersion": "v1", "kind": "DeleteOptions", "propagationPolicy": "Background"}
            if grace_period_seconds is not None:
                body["gracePeriodSeconds"] = grace_period_seconds
            self.request("DELETE", path, body, ok=(200, 202, 404) if missing_ok else (200, 202))

    def get(self, api_version: str, kind: str, name: str, namespace: str | None = None) -> dict | None:
        doc = self.request("GET", self.path(api_version, kind, name, namespace), ok=(200, 404))
        return None if doc.get("kind") == "Status" else doc

    def list(self, api_version: str, kind: str, namespace: str | None = None,
             label_selector: str | None = None) -> list[dict]:
        plural, namespaced = self._resource(api_version, kind)
        base = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
        path = f"{base}/namespaces/{namespace}/{plural}" if namespaced and namespace else f"{base}/{plural}"
        params = {"labelSelector": label_selector} if label_selector else None
        return self.request("GET", path, params=params).get("items") or []

    def ensure_namespace(self, name: str) -> None:
        """The namespace, once kube-controller-manager has given it its default ServiceAccount.
        Usually at once; after an API-server restart (restart_apiserver) the new server refuses
        the controllers' watches as forbidden until its RBAC cache has synced, and each refused
        reflector backs off (client-go v0.36.3 tools/cache/reflector.go: from 800 ms, doubling, to
        a 30 s cap with jitter, so [30, 60) s between tries), and the ServiceAccount can take over
        30 s; CI saw that once after the leader-election tests' restarts."""
        self.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
        self.wait_for(lambda: self.get("v1", "ServiceAccount", "default", name), 120,
                      f"namespace {name}'s default ServiceAccount", "kube-controller-manager")

    def install_crds(self, crds_dir: Path = CRDS_DIR) -> list[str]:
        """Apply every CRD under crds_dir (server-side) and wait until each is Established."""
        files = sorted(p for p in crds_dir.rglob("*.yaml"))
        if not files:
            raise FileNotFoundError(f"no CRD manifests under {crds_dir} (set INFERSHIFT_CRDS)")
        names = []
        for p in files:
            for d in self._docs(p.read_text()):
                if d.get("kind") == "CustomResourceDefinition":
                    self.apply(d)
                    names.append(d["metadata"]["name"])

        def established(n: str) -> bool:
            crd = self.get("apiextensions.k8s.io/v1", "CustomResourceDefinition", n)
            return bool(crd) and any(c["type"] == "Established" and c["status"] == "True"
                                     for c in (crd.get("status") or {}).get("conditions") or [])
        self.wait_for(lambda: all(established(n) for n in names), 60, "the CRDs Established")
        self._resources.clear()  # new groups are served now

        # Established is not yet listable: the new resource's storage answers 429 "storage is
        # (re)initializing" for a moment. Wait until every served version lists.
        def listable(n: str) -> bool:
            crd = self.get("apiextensions.k8s.io/v1", "CustomResourceDefinition", n)
            assert crd is not None
            sp = crd["spec"]
            for v in sp["versions"]:
                if v.get("served"):
                    scope = "/namespaces/default" if sp["scope"] == "Namespaced" else ""
                    self.request("GET", f"/apis/{sp['group']}/{v['name']}{scope}/{sp['names']['plural']}",
                                 params={"limit": "1"})
            return True
        self.wait_for(lambda: all(listable(n) for n in names), 60, "the CRDs' resources listable")
        return names

    # --- service accounts -----------------------------------------------------------------------------------

    def mint_token(self, namespace: str, name: str, expiration_seconds: int = 3600,
                   bound_secret: str | None = None) -> tuple[str, str]:
        """A TokenRequest token for the ServiceAccount (the API server's minimum expirationSeconds is
        600); bound to the named Secret if given, so deleting the Secret revokes it. (token, expiry)."""
        spec: dict[str, Any] = {"expirationSeconds": int(expiration_seconds)}
        if bound_secret:
            sec = self.get("v1", "Secret", bound_secret, namespace)
            if sec is None:
                sec = self.request("POST", f"/api/v1/namespaces/{namespace}/secrets",
                                   {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": bound_secret}})
            spec["boundObjectRef"] = {"apiVersion": "v1", "kind": "Secret", "name": bound_secret,
                                      "uid": sec["metadata"]["uid"]}
        doc = self.request("POST", f"/api/v1/namespaces/{namespace}/serviceaccounts/{name}/token",
                           {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec})
        return doc["status"]["token"], doc["status"]["expirationTimestamp"]

    def service_account_kubeconfig(self, namespace: str, name: str, expiration_seconds: int = 3600,
                                   bound_secret: str | None = None, token_file: bool = True,
                                   path: Path | None = None) -> ServiceAccountCredentials:
        tok, exp = self.mint_token(namespace, name, expiration_seconds, bound_secret)
        self._sa_count += 1
        d = self.root / "sa" / f"{namespace}-{name}-{self._sa_count}"
        d.mkdir(parents=True, exist_ok=True)
        token_path = d / "token"
        token_path.write_text(tok)
        token_path.chmod(0o600)
        user = {"tokenFile": str(token_path)} if token_file else {"token": tok}
        kc = write_kubeconfig(path or d / "kubeconfig", self.server, self.ca_file, user=user,
                              name=f"{namespace}-{name}", namespace=namespace)
        return ServiceAccountCredentials(self, namespace, name, kc, token_path, tok, exp, bound_secret)

    def token_review(self, token: str) -> dict:
        return self.request("POST", "/apis/authentication.k8s.io/v1/tokenreviews",
                            {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
                             "spec": {"token": token}})["status"]

    def session_for_token(self, token_or_path: str | Path) -> requests.Session:
        """A requests session authenticating with a bearer token (or the token in a file)."""
        tok = Path(token_or_path).read_text().strip() if isinstance(token_or_path, Path) else token_or_path
        s = requests.Session()
        s.verify = str(self.ca_file)
        s.trust_env = False
        s.headers["Authorization"] = f"Bearer {tok}"
        return s


def _http_ok(url: str) -> bool:
    try:
        return requests.get(url, timeout=2).status_code == 200
    except requests.RequestException:
        return False


def _ready(obj: dict) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (obj.get("status") or {}).get("conditions") or [])


def pod_ready(pod: dict) -> bool:
    st = pod.get("status") or {}
    return st.get("phase") == "Running" and bool(st.get("podIP")) and _ready(pod)
