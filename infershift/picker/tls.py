"""TLS on the ext_proc port, on by default, as the upstream endpoint picker serves it.

Upstream (kubernetes-sigs/gateway-api-inference-extension at 1748e829, before the EPP left that
repository): `--secure-serving` defaults to true; the certificate is `--cert-path DIR` (files
`tls.crt` and `tls.key`) or, without it, a self-signed one made at start
(`internal/tls/tls.go` CreateSelfSignedTLSCertificate: 10 years, server auth, no SAN); with
`--enable-cert-reload` the files are watched and new handshakes get the new pair
(`pkg/common/certs.go` CertReloader); ALPN `h2` (`pkg/epp/server/runserver.go`). Gateways connect
with TLS and do not verify that certificate: Envoy AI Gateway's InferencePool cluster is an
UpstreamTlsContext with an empty validation context ("accepts untrusted certificates",
envoyproxy/ai-gateway `internal/extensionserver/inferencepool.go`), Istio's DestinationRule for
the EPP is `tls: {mode: SIMPLE, insecureSkipVerify: true}` and the upstream standalone chart's
Envoy cluster an UpstreamTlsContext with an empty validation context (both in
`config/charts/` upstream). So a self-signed certificate is enough for every gateway; one from a
Secret is for a gateway that verifies it.

Differences from upstream, on purpose: the self-signed key is ECDSA P-256, not RSA-4096 (made in
milliseconds, cheaper handshakes; every TLS 1.2+ client takes it), and it names `localhost` and
127.0.0.1 so a test client can verify it; the files are polled every second (inode, mtime, size,
as the config file is) instead of inotify, which also sees a Secret volume's symlink swap.

One certificate serves every transport: `ssl_context()` for the picker's own HTTP/2 server and
grpclib (asyncio), `grpc_credentials()` for grpc.aio. A reload loads the pair into a scratch
context first (a bad or half-written pair is rejected and the running certificate stays), then
into the live context; both run on the event loop, so no handshake sees a mix.
"""
from __future__ import annotations

import asyncio
import datetime
import ipaddress
import logging
import os
import shutil
import ssl
import tempfile

from .errors import ConfigError

log = logging.getLogger("picker.tls")

CERT_FILE, KEY_FILE = "tls.crt", "tls.key"
ALPN = ["h2"]


def self_signed(common_name: str = "infershift-picker") -> tuple[bytes, bytes]:
    """(certificate PEM, private key PEM): a self-signed server certificate, valid 10 years."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "infershift"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder()
            .subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_encipherment=False, content_commitment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                         crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.SubjectAlternativeName([
                x509.DNSName(common_name), x509.DNSName("localhost"),
                x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .sign(key, hashes.SHA256()))
    return (cert.public_bytes(serialization.Encoding.PEM),
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()))


def _base_context() -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2  # RFC 9113 9.2: HTTP/2 over TLS 1.2 or later
    ctx.set_alpn_protocols(ALPN)
    # The client's cipher order, not ours: with ours (OpenSSL's) Envoy, whose upstream TLS defaults
    # to 1.2, gets ECDHE-ECDSA-AES256-GCM-SHA384; with its own, AES128-GCM (grpc.aio's server picks
    # that too), cheaper on every 220 KB prompt. Both are ECDHE + AEAD.
    ctx.options &= ~ssl.OP_CIPHER_SERVER_PREFERENCE
    return ctx


def _load(ctx: ssl.SSLContext, cert_pem: bytes, key_pem: bytes) -> None:
    """ssl loads key pairs from files only: a private directory, removed at once."""
    d = tempfile.mkdtemp(prefix="picker-tls-")
    try:
        cert, key = os.path.join(d, CERT_FILE), os.path.join(d, KEY_FILE)
        for path, data in ((cert, cert_pem), (key, key_pem)):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
        ctx.load_cert_chain(cert, key)
    finally:
        shutil.rmtree(d, ignore_errors=True)


def _stat(path: str):
    try:
        s = os.stat(path)
        return (s.st_ino, s.st_mtime_ns, s.st_size)
    except OSError:
        return None


class ServerTLS:
    """The ext_proc port's certificate: from `cert_path` (tls.crt + tls.key), or self-signed."""

    def __init__(self, cert_path: str | None = None, reload: bool = False):
        if reload and not cert_path:
            raise ConfigError("--enable-cert-reload needs --cert-path (a self-signed certificate never changes)")
        self.cert_path = cert_path
        self.reload = reload
        self.generation = 0  # bumped by every accepted reload
        if cert_path:
            cert_pem, key_pem = self._read()
        else:
            cert_pem, key_pem = self_signed()
        self.cert_pem, self.key_pem = cert_pem, key_pem
        self._ctx = _base_context()
        try:
            _load(self._ctx, cert_pem, key_pem)
        except ssl.SSLError as e:
            raise ConfigError(f"--cert-path {cert_path}: {CERT_FILE} and {KEY_FILE} are not a usable "
                              f"certificate and key: {e.reason or e}") from None
        self._grpc_generation = 0

    @property
    def source(self) -> str:
        if not self.cert_path:
            return "self-signed"
        return f"{self.cert_path} ({'reloaded on change' if self.reload else 'read once'})"

    def _files(self) -> tuple[str, str]:
        assert self.cert_path
        return os.path.join(self.cert_path, CERT_FILE), os.path.join(self.cert_path, KEY_FILE)

    def _read(self) -> tuple[bytes, bytes]:
        out = []
        for path in self._files():
            try:
                with open(path, "rb") as f:
                    out.append(f.read())
            except OSError as e:
                raise ConfigError(f"--cert-path: cannot read {path}: {e.strerror}") from None
        return out[0], out[1]

    def ssl_context(self) -> ssl.SSLContext:
        """For asyncio servers (the h2 transport, grpclib): one context, updated in place on reload."""
        return self._ctx

    def grpc_credentials(self):
        """For grpc.aio: credentials that ask for the current pair on every new connection."""
        import grpc

        self._grpc_generation = self.generation
        return grpc.dynamic_ssl_server_credentials(
            grpc.ssl_server_certificate_configuration([(self.key_pem, self.cert_pem)]), self._grpc_fetch,
            require_client_authentication=False)

    def _grpc_fetch(self):
        # Called by gRPC's core (its own thread) before each handshake: None keeps the current pair.
        gen = self.generation
        if gen == self._grpc_generation:
            return None
        import grpc

        self._grpc_generation = gen
        return grpc.ssl_server_certificate_configuration([(self.key_pem, self.cert_pem)])

    def reload_now(self) -> bool:
        """Read the files again; install the pair if it is valid. False (and the old pair stays) if not."""
        try:
            cert_pem, key_pem = self._read()
            _load(_base_context(), cert_pem, key_pem)  # check first: the live context is never half-loaded
        except (ConfigError, ssl.SSLError) as e:
            log.error("tls certificate reload rejected; keeping the previous certificate",
                      extra={"cert_path": self.cert_path, "error": str(e)})
            return False
        if (cert_pem, key_pem) == (self.cert_pem, self.key_pem):
            return True
        _load(self._ctx, cert_pem, key_pem)
        self.cert_pem, self.key_pem = cert_pem, key_pem
        self.generation += 1
        log.info("tls certificate reloaded", extra={"cert_path": self.cert_path, "generation": self.generation})
        return True

    async def watch(self, interval: float = 1.0) -> None:
        """Poll the two files (a Secret volume swaps a symlink: the inode changes) and reload on change."""
        if not (self.cert_path and self.reload):
            return
        files = self._files()
        last = tuple(_stat(p) for p in files)
        while True:
            await asyncio.sleep(interval)
            cur = tuple(_stat(p) for p in files)
            if cur == last or None in cur:
                continue
            last = cur
            self.reload_now()
