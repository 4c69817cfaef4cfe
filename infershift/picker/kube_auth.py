"""How the picker reaches the Kubernetes API: in-cluster service account or a kubeconfig file
(token, tokenFile, exec credential plugin or client-certificate auth, the cluster's CA). Parsing is
pure; ssl_context() turns the result into what aiohttp needs and TokenSource gives each request its
bearer token. Auth providers (the removed gcp/azure/oidc in-tree plugins) are refused (a clear error).

Bound service-account tokens expire (an hour by default; the kubelet rewrites the projected file
well before), so a token read from a file is re-read, as client-go does: at most a minute old
(client-go transport/token_source.go, NewCachedFileTokenSource caches a file token for 1 min),
and at once after a 401. An exec plugin's token is cached until its ExecCredential
status.expirationTimestamp and the plugin re-run after a 401 (client-go
plugin/pkg/client/auth/exec/exec.go; the protocol: k8s.io/client-go/pkg/apis/clientauthentication).
"""
from __future__ import annotations

import asyncio
import base64
import datetime
import json
import os
import ssl
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .config import read_yaml
from .errors import ConfigError

SA_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"


@dataclass(frozen=True)
class KubeCredentials:
    server: str                      # https://host:port
    token: str | None = None
    ca_file: str | None = None
    ca_data: str | None = None       # PEM text
    cert_file: str | None = None
    cert_data: bytes | None = None   # PEM
    key_file: str | None = None
    key_data: bytes | None = None    # PEM
    insecure: bool = False           # insecure-skip-tls-verify
    namespace: str | None = None     # the context's namespace, if any
    token_file: str | None = None    # re-read while running (projected service-account tokens rotate)
    exec: dict[str, Any] | None = field(default=None, hash=False)  # the kubeconfig user's exec entry
    exec_dir: str | None = None      # the kubeconfig's folder: relative exec commands resolve there

    def headers(self) -> dict[str, str]:
        """The credentials as read at start (a static token); running requests use TokenSource."""
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}


def in_cluster(env: dict[str, str], sa_dir: str = SA_DIR) -> KubeCredentials:
    host, port = env.get("KUBERNETES_SERVICE_HOST"), env.get("KUBERNETES_SERVICE_PORT", "443")
    if not host:
        raise ConfigError("kubernetes: not in a cluster (KUBERNETES_SERVICE_HOST is not set); pass --kubeconfig")
    try:
        with open(os.path.join(sa_dir, "token"), encoding="utf-8") as f:
            token = f.read().strip()
    except OSError as e:
        raise ConfigError(f"kubernetes: cannot read the service-account token in {sa_dir}: {e.strerror}") from e
    h = f"[{host}]" if ":" in host else host
    return KubeCredentials(f"https://{h}:{port}", token=token, ca_file=os.path.join(sa_dir, "ca.crt"),
                           token_file=os.path.join(sa_dir, "token"))


def _named(items, name: str, kind: str, path: str) -> dict:
    for it in items or []:
        if isinstance(it, dict) and it.get("name") == name:
            return it.get(kind) or {}
    raise ConfigError(f"kubeconfig {path}: no {kind} named {name!r}")


def _b64(value: str, field: str, path: str) -> bytes:
    try:
        return base64.b64decode(value, validate=True)
    except (ValueError, TypeError):
        raise ConfigError(f"kubeconfig {path}: {field} is not valid base64") from None


def from_kubeconfig(path: str, context: str | None = None) -> KubeCredentials:
    """The credentials of `context` (default: current-context) in the kubeconfig at `path`.
    Relative file references resolve against the kubeconfig's directory, as kubectl does."""
    doc = read_yaml(path, "kubeconfig")
    if not isinstance(doc, dict):
        raise ConfigError(f"kubeconfig {path}: expected a mapping")
    name = context or doc.get("current-context")
    if not name:
        raise ConfigError(f"kubeconfig {path}: no current-context; pass --kube-context")
    ctx = _named(doc.get("contexts"), name, "context", path)
    if not ctx.get("cluster"):
        raise ConfigError(f"kubeconfig {path}: context {name!r} names no cluster")
    cluster = _named(doc.get("clusters"), ctx["cluster"], "cluster", path)
    user = _named(doc.get("users"), ctx["user"], "user", path) if ctx.get("user") else {}
    server = cluster.get("server")
    if not isinstance(server, str) or not server.startswith(("https://", "http://")):
        raise ConfigError(f"kubeconfig {path}: cluster {ctx['cluster']!r} has no http(s) server URL")
    base = os.path.dirname(os.path.abspath(path))

    def rel(p):
        return p if p is None or os.path.isabs(p) else os.path.join(base, p)

    if user.get("auth-provider"):
        raise ConfigError(f"kubeconfig {path}: user {ctx.get('user')!r} uses auth-provider, which the picker "
                          f"does not run (client-go removed them too); use exec, a token or a client certificate")
    exec_spec = _exec_spec(user.get("exec"), f"kubeconfig {path}: user {ctx.get('user')!r}") \
        if user.get("exec") else None
    token = user.get("token")
    token_file = None
    if not token and user.get("tokenFile"):
        token_file = rel(user["tokenFile"])
        try:
            with open(token_file, encoding="utf-8") as f:
                token = f.read().strip()
        except OSError as e:
            raise ConfigError(f"kubeconfig {path}: cannot read tokenFile: {e.strerror}") from e
    cert_data = user.get("client-certificate-data")
    key_data = user.get("client-key-data")
    creds = KubeCredentials(
        server=server.rstrip("/"),
        token=token or None,
        ca_file=rel(cluster.get("certificate-authority")),
        ca_data=_b64(cluster["certificate-authority-data"], "certificate-authority-data", path).decode()
        if cluster.get("certificate-authority-data") else None,
        cert_file=rel(user.get("client-certificate")),
        cert_data=_b64(cert_data, "client-certificate-data", path) if cert_data else None,
        key_file=rel(user.get("client-key")),
        key_data=_b64(key_data, "client-key-data", path) if key_data else None,
        insecure=bool(cluster.get("insecure-skip-tls-verify")),
        namespace=ctx.get("namespace"),
        token_file=token_file,
        exec=exec_spec,
        exec_dir=base if exec_spec else None,
    )
    has_cert = bool(creds.cert_file or creds.cert_data)
    has_key = bool(creds.key_file or creds.key_data)
    if has_cert != has_key:
        raise ConfigError(f"kubeconfig {path}: user {ctx.get('user')!r} has a client certificate without its key "
                          "or the other way round")
    if not creds.token and not has_cert and not exec_spec:
        raise ConfigError(f"kubeconfig {path}: user {ctx.get('user')!r} has neither a token, an exec plugin "
                          "nor a client certificate")
    return creds


EXEC_API_VERSIONS = ("client.authentication.k8s.io/v1", "client.authentication.k8s.io/v1beta1")


def _exec_spec(spec: Any, where: str) -> dict[str, Any]:
    """A kubeconfig user's `exec` entry, checked: the picker runs it unattended, never interactively."""
    if not isinstance(spec, dict) or not isinstance(spec.get("command"), str) or not spec["command"]:
        raise ConfigError(f"{where}: exec.command is required")
    api = spec.get("apiVersion")
    if api not in EXEC_API_VERSIONS:
        raise ConfigError(f"{where}: exec.apiVersion {api!r} is not one of {', '.join(EXEC_API_VERSIONS)}")
    args = spec.get("args") or []
    if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
        raise ConfigError(f"{where}: exec.args must be a list of strings")
    env = spec.get("env") or []
    if not isinstance(env, list) or not all(isinstance(e, dict) and isinstance(e.get("name"), str)
                                            and isinstance(e.get("value", ""), str) for e in env):
        raise ConfigError(f"{where}: exec.env must be a list of {{name, value}}")
    if spec.get("interactiveMode") == "Always":
        raise ConfigError(f"{where}: exec.interactiveMode is Always, but the picker runs without a terminal")
    return {"apiVersion": api, "command": spec["command"], "args": list(args),
            "env": {e["name"]: e.get("value", "") for e in env},
            "provideClusterInfo": bool(spec.get("provideClusterInfo"))}


def _parse_time(value: str, where: str) -> float:
    try:
        return datetime.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except (ValueError, AttributeError):
        raise ConfigError(f"{where}: status.expirationTimestamp {value!r} is not an RFC 3339 time") from None


class TokenSource:
    """The bearer token for the next request: a static one, a file's (re-read at most `file_period`
    seconds after the last read, at once after invalidate()), or an exec plugin's (kept until its
    expiry, re-run after invalidate()). `headers()` is what a request sends."""

    def __init__(self, creds: KubeCredentials, *, file_period: float = 60.0, exec_timeout: float = 60.0,
                 clock: Callable[[], float] = time.monotonic, wall: Callable[[], float] = time.time):
        self.creds = creds
        self.file_period, self.exec_timeout = file_period, exec_timeout
        self.clock, self.wall = clock, wall
        self._token = creds.token
        self._read_at = clock()
        self._expires: float | None = None  # wall-clock expiry of an exec token; None: no expiry given
        self._stale = creds.exec is not None and not creds.token
        self._lock = asyncio.Lock()
        self.refreshes = 0  # tokens obtained after the first (file re-reads that changed it, plugin runs)

    def invalidate(self) -> None:
        """The server answered 401: the next request reads the file / runs the plugin again."""
        self._stale = True

    async def headers(self) -> dict[str, str]:
        tok = await self.token()
        return {"Authorization": f"Bearer {tok}"} if tok else {}

    async def token(self) -> str | None:
        c = self.creds
        if c.exec is not None:
            if self._stale or self._token is None or (self._expires is not None and self.wall() >= self._expires):
                async with self._lock:
                    if self._stale or self._token is None or (self._expires is not None
                                                              and self.wall() >= self._expires):
                        first = self._token is None
                        self._token, self._expires = await self._run_exec()
                        self._stale = False
                        self.refreshes += 0 if first else 1
            return self._token
        if c.token_file is not None and (self._stale or self.clock() - self._read_at >= self.file_period):
            try:
                with open(c.token_file, encoding="utf-8") as f:
                    tok = f.read().strip()
            except OSError:
                tok = ""  # mid-rotation or gone: keep the last one, try again next time
            self._read_at, self._stale = self.clock(), False
            if tok and tok != self._token:
                self._token = tok
                self.refreshes += 1
        return self._token

    async def _run_exec(self) -> tuple[str, float | None]:
        """Run the plugin as client-go does: KUBERNETES_EXEC_INFO carries an ExecCredential of the
        same apiVersion (spec.interactive false, spec.cluster when provideClusterInfo); stdout is
        an ExecCredential whose status has the token. A command with a path separator is relative
        to the kubeconfig's folder (kubernetes.io docs, client-go credential plugins)."""
        c = self.creds
        assert c.exec is not None
        spec = c.exec
        cmd = spec["command"]
        if os.sep in cmd and not os.path.isabs(cmd) and c.exec_dir:
            cmd = os.path.join(c.exec_dir, cmd)
        info: dict[str, Any] = {"apiVersion": spec["apiVersion"], "kind": "ExecCredential",
                                "spec": {"interactive": False}}
        if spec["provideClusterInfo"]:
            cluster: dict[str, Any] = {"server": c.server, "insecure-skip-tls-verify": c.insecure}
            ca = c.ca_data
            if ca is None and c.ca_file:
                try:
                    with open(c.ca_file, encoding="utf-8") as f:
                        ca = f.read()
                except OSError:
                    ca = None
            if ca:
                cluster["certificate-authority-data"] = base64.b64encode(ca.encode()).decode()
            info["spec"]["cluster"] = cluster
        env = {**os.environ, **spec["env"], "KUBERNETES_EXEC_INFO": json.dumps(info)}
        where = f"kubernetes exec plugin {spec['command']!r}"
        try:
            p = await asyncio.create_subprocess_exec(cmd, *spec["args"], env=env, stdin=asyncio.subprocess.DEVNULL,
                                                     stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        except OSError as e:
            raise ConfigError(f"{where}: cannot run it: {e.strerror}") from None
        try:
            out, err = await asyncio.wait_for(p.communicate(), self.exec_timeout)
        except TimeoutError:
            p.kill()
            await p.wait()
            raise ConfigError(f"{where}: no answer within {self.exec_timeout:.0f} s") from None
        if p.returncode != 0:
            raise ConfigError(f"{where}: exited with {p.returncode}: {err.decode(errors='replace').strip()[-500:]}")
        try:
            doc = json.loads(out)
        except ValueError:
            raise ConfigError(f"{where}: its output is not an ExecCredential (JSON)") from None
        if not isinstance(doc, dict) or doc.get("kind") != "ExecCredential" or doc.get("apiVersion") != spec["apiVersion"]:
            raise ConfigError(f"{where}: expected kind ExecCredential, apiVersion {spec['apiVersion']}")
        status = doc.get("status") or {}
        tok = status.get("token")
        if not isinstance(tok, str) or not tok:
            what = "client certificates (status.clientCertificateData), which the picker does not take from " \
                   "plugins" if status.get("clientCertificateData") else "no status.token"
            raise ConfigError(f"{where}: the ExecCredential has {what}")
        exp = status.get("expirationTimestamp")
        return tok, (_parse_time(exp, where) if exp else None)


def ssl_context(c: KubeCredentials) -> ssl.SSLContext | bool:
    try:
        return _ssl_context(c)
    except (OSError, ssl.SSLError) as e:
        raise ConfigError(f"kubernetes TLS material (certificate-authority, client certificate or key) "
                          f"cannot be loaded: {e}") from None


def _ssl_context(c: KubeCredentials) -> ssl.SSLContext | bool:
    if not c.server.startswith("https://"):
        return False  # plain http (e.g. kubectl proxy): no TLS
    if c.insecure:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    else:
        ctx = ssl.create_default_context(cafile=c.ca_file, cadata=c.ca_data)
    if c.cert_file or c.cert_data:
        if c.cert_data or c.key_data:
            # ssl loads key pairs from files only: write them to a private temporary dir, then remove it
            with tempfile.TemporaryDirectory(prefix="picker-kube-") as d:
                cert = c.cert_file or _write(d, "tls.crt", c.cert_data or b"")
                key = c.key_file or _write(d, "tls.key", c.key_data or b"")
                ctx.load_cert_chain(cert, key)
        else:
            assert c.cert_file is not None
            ctx.load_cert_chain(c.cert_file, c.key_file)
    return ctx


def _write(d: str, name: str, data: bytes) -> str:
    p = os.path.join(d, name)
    fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    return p
