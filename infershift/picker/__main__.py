"""Command line: python -m infershift.picker --config FILE [...]. See picker/README.md for every flag."""
from __future__ import annotations

import argparse
import asyncio
import signal
import sys

from .app import Options, run
from .config import parse_duration
from .errors import ConfigError
from .logsetup import setup_logging


def _duration(v: str) -> float:
    try:
        return parse_duration(v, "duration")
    except ConfigError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _delay(v: str) -> float:
    """A duration that may be zero."""
    if v.strip() in ("0", "0s", "0ms"):
        return 0.0
    return _duration(v)


def _bool(v: str) -> bool:
    """Go flag style, as upstream's `--secure-serving=false`."""
    low = v.strip().lower()
    if low in ("1", "t", "true", "yes", "on"):
        return True
    if low in ("0", "f", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {v!r}")


def parse_args(argv: list[str]) -> Options:
    p = argparse.ArgumentParser(prog="python -m infershift.picker", description="infershift endpoint picker (Envoy ext_proc)")
    p.add_argument("--config", required=True, help="picker config YAML (reloaded live when it changes)")
    p.add_argument("--pool-name", help="InferencePool name (overrides pool.name)")
    p.add_argument("--pool-namespace", help="InferencePool namespace (overrides pool.namespace)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind every port on (0.0.0.0 in the image)")
    p.add_argument("--grpc-port", type=int, default=9002, help="ext_proc gRPC port")
    p.add_argument("--health-port", type=int, default=9003, help="gRPC health port")
    p.add_argument("--metrics-port", type=int, default=9090, help="Prometheus metrics HTTP port")
    p.add_argument("--poll-interval", type=_duration, help="model-server /metrics poll interval, e.g. 50ms")
    p.add_argument("--stale-after", type=_duration, help="drop an endpoint whose metrics are older than this, e.g. 1s")
    p.add_argument("--endpoints-file", help="static endpoints, one 'ip:port [name]' per line (overrides endpoints)")
    p.add_argument("--routing-objects",
                   help="model routing from a YAML file of InferenceModel / InferenceObjective / InferenceModelRewrite "
                        "objects (as the cluster holds them), reloaded live with the config")
    p.add_argument("--fallbacks", type=int, default=0,
                   help="fallback endpoints appended to the destination (needs an Envoy LB that takes a list)")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    p.add_argument("--seed", type=int, help="random seed (tests and benchmarks)")
    p.add_argument("--grpc-server", choices=["h2", "grpcio", "grpclib"], default="h2",
                   help="ext_proc transport: the picker's own HTTP/2 server (default), grpc.aio, or grpclib "
                        "(see BENCH.md for what each costs)")
    p.add_argument("--kubeconfig", help="kubeconfig file for Kubernetes discovery (default: in-cluster service account)")
    p.add_argument("--kube-context", help="kubeconfig context to use (default: its current-context)")
    p.add_argument("--loop", choices=["asyncio", "uvloop"], default="asyncio",
                   help="event loop; grpc.aio measured no faster on uvloop (see BENCH.md)")
    # TLS on the ext_proc port, named and defaulted as upstream's endpoint picker (picker/tls.py)
    p.add_argument("--secure-serving", type=_bool, nargs="?", const=True, default=True, metavar="BOOL",
                   help="serve ext_proc over TLS (default true); --secure-serving=false for plaintext (h2c)")
    p.add_argument("--cert-path", help="directory with tls.crt and tls.key (e.g. a Secret volume); "
                                       "default: a self-signed certificate made at start")
    p.add_argument("--enable-cert-reload", type=_bool, nargs="?", const=True, default=False, metavar="BOOL",
                   help="reload --cert-path's files when they change (new connections get the new pair)")
    p.add_argument("--shutdown-delay", type=_delay, default=0.0,
                   help="after SIGTERM, keep serving (readiness NOT_SERVING) this long before draining, e.g. 5s")
    p.add_argument("--drain-timeout", type=_duration, default=20.0,
                   help="after that, how long streams in flight may take to finish (no new ones), e.g. 20s")
    # Leader election (picker/leader.py), named as Kubernetes' own components' flags (kube-scheduler
    # --leader-elect*), with upstream EPP's --ha-enable-leader-election as an alias; client-go's defaults.
    p.add_argument("--leader-elect", "--ha-enable-leader-election", dest="leader_elect", type=_bool, nargs="?",
                   const=True, default=False, metavar="BOOL",
                   help="active-passive replicas: elect a leader on a Lease; only the leader is ready (default false)")
    p.add_argument("--leader-elect-lease-duration", type=_duration, default=15.0,
                   help="how long standbys wait after the last renewal they saw before taking over (default 15s)")
    p.add_argument("--leader-elect-renew-deadline", type=_duration, default=10.0,
                   help="the leader steps down (not ready) if it cannot renew within this (default 10s)")
    p.add_argument("--leader-elect-retry-period", type=_duration, default=2.0,
                   help="how often the leader renews and standbys try (default 2s)")
    p.add_argument("--leader-elect-resource-name",
                   help="the Lease's name (default epp-<namespace>-<pool>.llm-d.ai, upstream's)")
    a = p.parse_args(argv)
    setup_logging(a.log_level)
    return Options(config=a.config, host=a.host, grpc_port=a.grpc_port, health_port=a.health_port,
                   metrics_port=a.metrics_port, pool_name=a.pool_name, pool_namespace=a.pool_namespace,
                   poll_interval=a.poll_interval, stale_after=a.stale_after, endpoints_file=a.endpoints_file,
                   routing_objects=a.routing_objects,
                   fallbacks=a.fallbacks, seed=a.seed, loop=a.loop, kubeconfig=a.kubeconfig,
                   kube_context=a.kube_context, grpc_server=a.grpc_server, secure_serving=a.secure_serving,
                   cert_path=a.cert_path, enable_cert_reload=a.enable_cert_reload,
                   shutdown_delay=a.shutdown_delay, drain_timeout=a.drain_timeout,
                   leader_elect=a.leader_elect, leader_elect_lease_duration=a.leader_elect_lease_duration,
                   leader_elect_renew_deadline=a.leader_elect_renew_deadline,
                   leader_elect_retry_period=a.leader_elect_retry_period,
                   leader_elect_lease_name=a.leader_elect_resource_name)


def main(argv: list[str] | None = None) -> int:
    opts = parse_args(sys.argv[1:] if argv is None else argv)
    if opts.loop == "uvloop":
        import uvloop

        uvloop.install()

    async def _main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await run(opts, stop)

    try:
        asyncio.run(_main())
    except ConfigError as e:
        print(f"picker: invalid configuration: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
