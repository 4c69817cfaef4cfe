"""How the picker reaches the Kubernetes API: in-cluster service account or a kubeconfig file
(token or client-certificate auth, the cluster's CA). Parsing is pure; ssl_context() turns the
result into what aiohttp needs. Exec plugins and auth providers are not supported (a clear error)."""
from __future__ import annotations

import base64
import os
import ssl
import tempfile
from dataclasses import dataclass

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

    def headers(self) -> dict[str, str]:
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
    return KubeCredentials(f"https://{h}:{port}", token=token, ca_file=os.path.join(sa_dir, "ca.crt"))


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

    for unsupported in ("exec", "auth-provider"):
        if user.get(unsupported):
            raise ConfigError(f"kubeconfig {path}: user {ctx.get('user')!r} uses {unsupported}, which the picker "
                              f"does not run; use a token or a client certificate")
    token = user.get("token")
    if not token and user.get("tokenFile"):
        try:
            with open(rel(user["tokenFile"]), encoding="utf-8") as f:
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
    )
    has_cert = bool(creds.cert_file or creds.cert_data)
    has_key = bool(creds.key_file or creds.key_data)
    if has_cert != has_key:
        raise ConfigError(f"kubeconfig {path}: user {ctx.get('user')!r} has a client certificate without its key "
                          "or the other way round")
    if not creds.token and not has_cert:
        raise ConfigError(f"kubeconfig {path}: user {ctx.get('user')!r} has neither a token nor a client certificate")
    return creds


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
