"""TLS between the gateway and the picker, through a real Envoy, on every transport: TLS by default
(self-signed), a certificate from files reloaded when they change, plaintext only when configured,
and a gateway whose side does not match fails the request (FailClose)."""
from __future__ import annotations

import json
import os
import socket
import ssl
import subprocess
import sys
import time

import pytest
import yaml

from bench.pickerbench.procs import REPO, free_port, http_get, start_envoy, start_picker, wait_until
from infershift.picker.envoy_config import gateway_config
from infershift.picker.tls import self_signed
from pickertest import base_config, complete

TRANSPORTS = ["h2", "grpcio", "grpclib"]


def handshake(port: int) -> tuple[str | None, str | None, bytes]:
    """(TLS version, ALPN, the server's certificate DER) as a gateway sees them: ALPN h2, no verification."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    ctx.set_alpn_protocols(["h2"])
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, ctx.wrap_socket(raw) as s:
        return s.version(), s.selected_alpn_protocol(), s.getpeercert(binary_form=True)


def der(cert_pem: bytes) -> bytes:
    return ssl.PEM_cert_to_DER_cert(cert_pem.decode())


def envoy_stats(admin_port: int) -> dict[str, int]:
    out = {}
    for line in http_get(f"http://127.0.0.1:{admin_port}/stats?filter=^cluster\\.picker\\.")[1].splitlines():
        k, _, v = line.partition(": ")
        if v.strip().isdigit():
            out[k] = int(v)
    return out


class Gateways:
    """Envoys in front of one picker port; stopped at the end of the test."""

    def __init__(self, servers, workdir):
        self.servers, self.workdir, self.procs = servers, workdir, []

    def start(self, picker_port: int, **kw) -> tuple[int, int]:
        lp, ap = free_port(), free_port()
        cfg = gateway_config(listen_port=lp, admin_port=ap, picker_port=picker_port,
                             pool=[self.servers.addr(k) for k in self.servers.ports], **kw)
        self.procs.append(start_envoy(cfg, self.workdir, ap))
        return lp, ap

    def stop(self):
        for p in self.procs:
            p.stop()


@pytest.fixture
def gateways(servers, workdir):
    g = Gateways(servers, workdir)
    yield g
    g.stop()


def picker(servers, workdir, transport: str, *flags: str):
    path = os.path.join(workdir, f"tls-{transport}-{free_port()}.yaml")
    with open(path, "w") as f:
        yaml.safe_dump(base_config(servers), f)
    gp, hp, mp = free_port(), free_port(), free_port()
    return start_picker(path, workdir, grpc_port=gp, health_port=hp, metrics_port=mp,
                        extra=["--grpc-server", transport, "--seed", "5", *flags]), gp


def works_through(port: int, servers) -> None:
    """Requests routed by the picker: a rewritten model (its body answer), a stream, a 200 KB prompt."""
    r = complete(port, "sql", "tls", {"x-gateway-model-name-rewrite": "sql-v2", "x-test-subset": servers.addr("b")})
    assert r.status == 200, r.body
    assert r.json()["model"] == "sql" and r.headers["x-infershift-target-model"] == "sql-v2"
    assert int(r.headers["x-served-port"]) == servers.ports["b"]
    events = [json.loads(x[6:]) for x in complete(port, "sql", "s", stream=True).body.decode().splitlines()
              if x.startswith("data: {")]
    assert len(events) == 3 and {e["model"] for e in events} == {"sql"}
    big = complete(port, "llama", "lorem ipsum " * 17000)
    assert big.status == 200, big.body


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_tls_by_default_through_envoy(servers, workdir, gateways, transport):
    proc, gp = picker(servers, workdir, transport)
    try:
        version, alpn, _ = handshake(gp)
        assert version in ("TLSv1.2", "TLSv1.3") and alpn == "h2"
        assert '"tls": "self-signed"' in proc.output()
        port, admin = gateways.start(gp)  # picker_tls defaults to True, as a cluster's gateway
        works_through(port, servers)
        stats = envoy_stats(admin)
        assert stats.get("cluster.picker.ssl.handshake", 0) >= 1, stats  # it really was TLS
        port, _ = gateways.start(gp, classic=True)
        works_through(port, servers)
    finally:
        proc.stop()


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_plaintext_only_when_configured(servers, workdir, gateways, transport):
    proc, gp = picker(servers, workdir, transport, "--secure-serving=false")
    try:
        assert '"tls": "off (plaintext)"' in proc.output()
        with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
            handshake(gp)
        port, admin = gateways.start(gp, picker_tls=False)
        works_through(port, servers)
        assert "cluster.picker.ssl.handshake" not in envoy_stats(admin)
    finally:
        proc.stop()


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_gateway_on_the_other_side_fails_closed(servers, workdir, gateways, transport):
    """Plaintext gateway -> TLS picker (the default picker), and TLS gateway -> plaintext picker: the
    ext_proc call fails, and with FailClose the request gets Envoy's 5xx, never a model server."""
    tls_picker, tls_port = picker(servers, workdir, transport)
    plain_picker, plain_port = picker(servers, workdir, transport, "--secure-serving=false")
    try:
        for picker_port, picker_tls in ((tls_port, False), (plain_port, True)):
            port, admin = gateways.start(picker_port, picker_tls=picker_tls, fail_open=False)
            r = complete(port, "llama", "mismatch")
            assert 500 <= r.status < 600, (picker_tls, r.status, r.body)
            assert "x-served-port" not in r.headers  # no model server saw it
            stats = envoy_stats(admin)
            if picker_tls:  # Envoy's ClientHello met an h2c server: the handshake failed
                assert stats["cluster.picker.ssl.connection_error"] >= 1 and stats["cluster.picker.ssl.handshake"] == 0
            else:  # Envoy's h2c preface met a TLS server, which hung up
                assert stats["cluster.picker.upstream_cx_destroy_remote_with_active_rq"] >= 1, stats
        # the same pickers answer a matching gateway
        for picker_port, picker_tls in ((tls_port, True), (plain_port, False)):
            port, _ = gateways.start(picker_port, picker_tls=picker_tls, fail_open=False)
            assert complete(port, "llama", "match").status == 200
    finally:
        tls_picker.stop()
        plain_picker.stop()


def _secret_volume(root: str, name: str, cert_pem: bytes, key_pem: bytes) -> None:
    """What the kubelet does to a Secret volume: files in a timestamped directory, `..data` a symlink
    to it (swapped atomically on update), tls.crt / tls.key symlinks through `..data`."""
    d = os.path.join(root, f"..{name}")
    os.makedirs(d)
    for f, data in (("tls.crt", cert_pem), ("tls.key", key_pem)):
        with open(os.path.join(d, f), "wb") as fh:
            fh.write(data)
    tmp = os.path.join(root, "..data_tmp")
    os.symlink(f"..{name}", tmp)
    os.replace(tmp, os.path.join(root, "..data"))
    for f in ("tls.crt", "tls.key"):
        link = os.path.join(root, f)
        if not os.path.islink(link):
            os.symlink(f"..data/{f}", link)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_certificate_from_a_secret_volume_reloaded(servers, workdir, gateways, transport, tmp_path):
    a, b = self_signed("picker-a"), self_signed("picker-b")
    vol = str(tmp_path / "tls")
    os.makedirs(vol)
    _secret_volume(vol, "2026_01", *a)
    proc, gp = picker(servers, workdir, transport, "--cert-path", vol, "--enable-cert-reload")
    try:
        assert handshake(gp)[2] == der(a[0])
        port, _ = gateways.start(gp)
        works_through(port, servers)
        _secret_volume(vol, "2026_02", *b)  # rotation: new handshakes get the new pair
        wait_until(lambda: handshake(gp)[2] == der(b[0]), 10, "the rotated certificate", proc)
        assert '"msg": "tls certificate reloaded"' in proc.output()
        works_through(port, servers)  # the gateway's connection made before the rotation keeps working
        port2, _ = gateways.start(gp)  # and a new one handshakes with the new certificate
        works_through(port2, servers)
        _secret_volume(vol, "2026_03", a[0], b[1])  # a certificate with the wrong key: rejected
        wait_until(lambda: "tls certificate reload rejected" in proc.output(), 10, "the rejection", proc)
        assert handshake(gp)[2] == der(b[0])  # the previous pair stays
        works_through(port2, servers)
    finally:
        proc.stop()


def test_certificate_read_once_without_reload(servers, workdir, tmp_path):
    a, b = self_signed("picker-a"), self_signed("picker-b")
    vol = str(tmp_path / "tls")
    os.makedirs(vol)
    _secret_volume(vol, "1", *a)
    proc, gp = picker(servers, workdir, "h2", "--cert-path", vol)
    try:
        _secret_volume(vol, "2", *b)
        time.sleep(2.5)  # past two polls of a reloading picker
        assert handshake(gp)[2] == der(a[0])
    finally:
        proc.stop()


def _run_picker(args: list[str], tmp_path) -> subprocess.CompletedProcess:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("endpoints: [{address: '127.0.0.1:9'}]\n")
    return subprocess.run([sys.executable, "-m", "infershift.picker", "--config", str(cfg), "--grpc-port", "0",
                           "--health-port", "0", "--metrics-port", "0", *args], capture_output=True, text=True,
                          timeout=60, cwd=str(REPO), env=dict(os.environ, PYTHONPATH=str(REPO)))


@pytest.mark.parametrize("args, message", [
    (["--cert-path", "/nonexistent"], "cannot read /nonexistent/tls.crt"),
    (["--secure-serving=false", "--cert-path", "/x"], "need secure serving"),
    (["--enable-cert-reload"], "--enable-cert-reload needs --cert-path"),
    (["--secure-serving=maybe"], "expected true or false"),
])
def test_bad_tls_flags_exit_2(tmp_path, args, message):
    r = _run_picker(args, tmp_path)
    assert r.returncode == 2 and message in r.stderr, r.stderr


def test_a_key_that_does_not_match_exits_2(tmp_path):
    a, b = self_signed(), self_signed()
    (tmp_path / "tls.crt").write_bytes(a[0])
    (tmp_path / "tls.key").write_bytes(b[1])
    r = _run_picker(["--cert-path", str(tmp_path)], tmp_path)
    assert r.returncode == 2 and "not a usable certificate and key" in r.stderr, r.stderr


def test_secure_serving_flag_spellings():
    from infershift.picker.__main__ import parse_args

    for argv, want in (([], True), (["--secure-serving"], True), (["--secure-serving=false"], False),
                       (["--secure-serving", "false"], False), (["--secure-serving=true"], True)):
        assert parse_args(["--config", "x", *argv]).secure_serving is want, argv
