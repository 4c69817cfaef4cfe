"""Wire the picker together: config, pool, scraper, gRPC servers, metrics, live config reload."""
from __future__ import annotations

import asyncio
import logging
import os
import random
import time
from dataclasses import dataclass
from typing import Any

import grpc
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as pb_grpc

from .config import PickerConfig, load_config
from .errors import ConfigError
from .extproc import ExtProc
from .health import Health
from .pool import Pool
from .scraper import Scraper
from .telemetry import Telemetry
from .tls import ServerTLS

log = logging.getLogger("picker")


@dataclass
class Options:
    config: str
    host: str = "127.0.0.1"
    grpc_port: int = 9002
    health_port: int = 9003
    metrics_port: int = 9090
    pool_name: str | None = None
    pool_namespace: str | None = None
    poll_interval: float | None = None
    stale_after: float | None = None
    endpoints_file: str | None = None
    routing_objects: str | None = None
    fallbacks: int = 0
    config_check_interval: float = 1.0
    seed: int | None = None
    loop: str = "asyncio"
    kubeconfig: str | None = None
    kube_context: str | None = None
    grpc_server: str = "h2"  # or "grpcio", "grpclib"
    secure_serving: bool = True  # TLS on the ext_proc port (upstream's --secure-serving, default on)
    cert_path: str | None = None  # a directory with tls.crt and tls.key; else a self-signed certificate
    enable_cert_reload: bool = False  # reload cert_path's pair when the files change
    shutdown_delay: float = 0.0  # after SIGTERM: keep serving, not ready, this long (endpoints to drop us)
    drain_timeout: float = 20.0  # then: streams in flight get this long to finish
    # leader election on a Lease (picker/leader.py): only the holder is ready; off by default
    leader_elect: bool = False
    leader_elect_lease_duration: float = 15.0
    leader_elect_renew_deadline: float = 10.0
    leader_elect_retry_period: float = 2.0
    leader_elect_lease_name: str | None = None  # default: contract.picker_lease_name(namespace, pool)


def load(opts: Options) -> PickerConfig:
    from dataclasses import replace

    from .config import StaticEndpoint, parse_address

    cfg = load_config(opts.config)
    over: dict[str, Any] = {}
    if opts.pool_name:
        over["pool_name"] = opts.pool_name
    if opts.pool_namespace:
        over["pool_namespace"] = opts.pool_namespace
    if opts.poll_interval:
        over["poll_interval"] = opts.poll_interval
    if opts.stale_after:
        over["stale_after"] = opts.stale_after
    if opts.endpoints_file:  # one "ip:port [name]" per line, for quick local runs
        eps = []
        with open(opts.endpoints_file, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                parts = line.split("#", 1)[0].split()
                if parts:
                    addr = parse_address(parts[0], f"{opts.endpoints_file}:{n}")
                    eps.append(StaticEndpoint(addr, parts[1] if len(parts) > 1 else addr, None))
        over["endpoints"] = tuple(eps)
    cfg = replace(cfg, **over) if over else cfg
    if opts.routing_objects:
        cfg = merge_routing_file(cfg, opts.routing_objects)
    return cfg


def merge_routing_file(cfg: PickerConfig, path: str) -> PickerConfig:
    """Model routing from a file of the objects the API server would hold (InferenceModel,
    InferenceObjective, InferenceModelRewrite; multi-document YAML), merged by the same code as
    the cluster's objects: a local run routes exactly as the cluster does."""
    import yaml

    from .k8s import merge_routing

    try:
        with open(path, encoding="utf-8") as f:
            docs = [d for d in yaml.safe_load_all(f) if d is not None]
    except OSError as e:
        raise ConfigError(f"cannot read routing objects {path}: {e.strerror}") from e
    except yaml.YAMLError as e:
        raise ConfigError(f"routing objects {path} are not valid YAML: {e}") from e
    by_kind: dict[str, list[dict]] = {"InferenceModel": [], "InferenceModelRewrite": [], "InferenceObjective": []}
    for i, d in enumerate(docs):
        kind = d.get("kind") if isinstance(d, dict) else None
        if kind not in by_kind:
            raise ConfigError(f"routing objects {path} document {i + 1}: expected one of {', '.join(by_kind)}, "
                              f"got {kind!r}")
        by_kind[kind].append(d)
    return merge_routing(cfg, by_kind["InferenceModel"], by_kind["InferenceModelRewrite"],
                         by_kind["InferenceObjective"])


def _stat(path: str):
    try:
        s = os.stat(path)
        return (s.st_ino, s.st_mtime_ns, s.st_size)
    except OSError:
        return None


async def watch_config(opts: Options, pool: Pool, kube=None) -> None:
    """Reload on change (atomic replace or in-place write); a bad file keeps the old config running."""
    def state():
        cur = _stat(opts.config)
        if cur is None:
            return None
        return (cur, _stat(opts.routing_objects)) if opts.routing_objects else cur

    last = state()
    while True:
        await asyncio.sleep(opts.config_check_interval)
        cur = state()
        if cur == last or cur is None:
            continue
        last = cur
        try:
            cfg = load(opts)
            if kube is not None:
                cfg = kube.merge(cfg)
            pool.apply_config(cfg)
            log.info("config reloaded", extra={"config": opts.config, "endpoints": len(pool.endpoints)})
        except (ConfigError, OSError) as e:
            log.error("config reload rejected; keeping the previous config", extra={"error": str(e)})


class GrpcAioServer:
    """grpc.aio behind the same start(host, port, tls) / stop(grace) as the other ext_proc transports."""

    def __init__(self, servicer, max_message: int):
        self.server = grpc.aio.server(options=[
            ("grpc.max_receive_message_length", max_message), ("grpc.max_send_message_length", max_message),
            ("grpc.so_reuseport", 0),
            # big bodies: let Envoy send a whole buffered body without waiting on window updates
            ("grpc.http2.lookahead_bytes", 16 * 1024 * 1024)])
        pb_grpc.add_ExternalProcessorServicer_to_server(servicer, self.server)

    async def start(self, host: str, port: int, tls: ServerTLS | None = None) -> None:
        if tls is None:
            self.server.add_insecure_port(f"{host}:{port}")
        else:
            self.server.add_secure_port(f"{host}:{port}", tls.grpc_credentials())
        await self.server.start()

    async def stop(self, grace: float) -> None:
        # GOAWAY: no new streams; the ones in flight finish (up to grace), as upstream's GracefulStop
        await self.server.stop(grace=grace)


def ext_proc_server(kind: str, servicer, max_message: int):
    """The ext_proc transport named by --grpc-server."""
    if kind == "h2":
        from .h2_server import ExtProcServer

        return ExtProcServer(servicer, max_message=max_message)
    if kind == "grpclib":
        from .grpclib_server import GrpclibServer

        return GrpclibServer(servicer)
    return GrpcAioServer(servicer, max_message)


def server_tls(opts: Options) -> ServerTLS | None:
    """The ext_proc port's TLS (None: plaintext), checked before anything starts."""
    if not opts.secure_serving:
        if opts.cert_path or opts.enable_cert_reload:
            raise ConfigError("--cert-path / --enable-cert-reload need secure serving (drop --secure-serving=false)")
        return None
    return ServerTLS(opts.cert_path, opts.enable_cert_reload)


def election_for(opts: Options, cfg: PickerConfig, creds):
    """The leader election --leader-elect asks for (None: off): its Lease in the pool's namespace,
    timings checked, credentials the kubeconfig's or else the in-cluster service account's."""
    if not opts.leader_elect:
        return None
    from infershift import contract

    from .kube_auth import TokenSource, in_cluster
    from .leader import Election, ElectionConfig, default_identity

    ecfg = ElectionConfig(namespace=cfg.pool_namespace,
                          name=opts.leader_elect_lease_name or contract.picker_lease_name(cfg.pool_namespace,
                                                                                          cfg.pool_name),
                          identity=default_identity(), lease_duration=opts.leader_elect_lease_duration,
                          renew_deadline=opts.leader_elect_renew_deadline, retry_period=opts.leader_elect_retry_period)
    ecfg.check()
    if creds is None:
        try:
            creds = in_cluster(dict(os.environ))
        except ConfigError as e:
            raise ConfigError(f"--leader-elect needs the Kubernetes API: {e}") from None
    return Election(creds, TokenSource(creds), ecfg)


async def run(opts: Options, stop: asyncio.Event | None = None) -> None:
    cfg = load(opts)
    if opts.kube_context and not opts.kubeconfig:
        raise ConfigError("--kube-context needs --kubeconfig")
    creds = None  # Kubernetes credentials: a kubeconfig's, checked before anything starts; else in-cluster
    discovery = cfg.kubernetes is not None and cfg.endpoints is None
    if opts.kubeconfig and (discovery or opts.leader_elect):
        from .kube_auth import from_kubeconfig, ssl_context

        creds = from_kubeconfig(opts.kubeconfig, opts.kube_context)
        ssl_context(creds)  # unreadable CA / key pair: fail now, naming it
    election = election_for(opts, cfg, creds)  # None unless --leader-elect; checked before anything starts
    if election is not None:
        creds = election.creds
    tls = server_tls(opts)
    rng = random.Random(opts.seed)
    pool = Pool(cfg, clock=time.monotonic, rng=rng, fallbacks=opts.fallbacks)
    from infershift import contract

    telemetry = Telemetry(build=(os.environ.get("INFERSHIFT_COMMIT", ""), getattr(contract, "PACKAGE_VERSION", "")))
    telemetry.attach_pool(pool)  # the pool gauges (inference_pool_*, llm_d_epp_*) read its endpoints
    if election is not None:  # leader_election_master_status and the leader transitions (before election.start())
        telemetry.attach_election(election, cfg.pool_name)
    scraper = Scraper(pool, telemetry)
    health = Health()
    await health.set(live=True, ready=False)

    ext_proc = ext_proc_server(opts.grpc_server, ExtProc(pool, telemetry),
                               max_message=max(64 * 1024 * 1024, cfg.max_body_bytes * 2))
    # Health and metrics stay plaintext, as upstream's: Kubernetes' gRPC probes speak no TLS.
    hserver = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    health.add_to(hserver)
    hserver.add_insecure_port(f"{opts.host}:{opts.health_port}")
    metrics_server = telemetry.serve(opts.host, opts.metrics_port)

    kube = None
    tasks = []
    if cfg.kubernetes is not None and cfg.endpoints is None:
        from .k8s import KubeDiscovery

        kube = KubeDiscovery(pool, cfg, creds)
        if election is not None:
            kube.auth = election.auth  # one token source: an exec plugin runs once for both
        tasks.append(asyncio.create_task(kube.run()))
    election_task = None
    if election is not None:
        await election.start()
        election_task = asyncio.create_task(election.run())
    await scraper.start()
    await ext_proc.start(opts.host, opts.grpc_port, tls)
    await hserver.start()
    tasks.append(asyncio.create_task(watch_config(opts, pool, kube)))
    if tls is not None:
        tasks.append(asyncio.create_task(tls.watch()))
    log.info("picker started", extra={"pool": cfg.pool_name, "grpc": f"{opts.host}:{opts.grpc_port}",
                                      "tls": tls.source if tls else "off (plaintext)",
                                      "health": f"{opts.host}:{opts.health_port}",
                                      "metrics": f"{opts.host}:{opts.metrics_port}", "endpoints": len(pool.endpoints)})
    await scraper.first_round.wait()
    # Readiness from here on: SERVING while some endpoint is ready (fresh metrics), until SIGTERM.
    # With leader election, only while this replica holds the Lease; the others keep discovering
    # and scraping (warm standbys) and serve ext_proc to a gateway that still reaches them.
    readiness = asyncio.create_task(health.follow(
        lambda: bool(pool.ready()), leader=(lambda: election.leading) if election is not None else None,
        leader_status=election.status if election is not None else None))
    log.info("picker ready", extra={"ready_endpoints": len(pool.ready())})
    stop = stop or asyncio.Event()
    try:
        await stop.wait()
    finally:
        # Draining: not ready at once (the pod leaves the Service's endpoints), still serving for
        # shutdown_delay (a gateway may still open streams here meanwhile), then no new streams
        # (GOAWAY) and the ones in flight finish, up to drain_timeout. Health answers throughout.
        readiness.cancel()
        await health.set(live=True, ready=False)
        if election_task is not None and election is not None:
            # stop campaigning, then give the Lease up: a standby takes over within a retry period
            election_task.cancel()
            await asyncio.gather(election_task, return_exceptions=True)
            await election.close()
        log.info("picker draining", extra={"shutdown_delay_s": opts.shutdown_delay,
                                           "drain_timeout_s": opts.drain_timeout})
        if opts.shutdown_delay > 0:
            await asyncio.sleep(opts.shutdown_delay)
        await ext_proc.stop(grace=opts.drain_timeout)
        await hserver.stop(grace=0)
        for t in tasks:
            t.cancel()
        await scraper.close()
        if isinstance(metrics_server, tuple):
            metrics_server[0].shutdown()
        log.info("picker stopped")
