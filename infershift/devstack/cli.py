"""python -m infershift.devstack {up,config,render,demo}: see devstack/README.md."""
from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from pathlib import Path

from infershift import spec as stackspec
from infershift.spec import config_path

from .envoy_check import EnvoyConfigError, dump
from .ports import PortError
from .procs import ProcessError
from .stack import LocalStack, Options, StackError, resolve_stack


def _listener_port(text: str) -> tuple[str, int]:
    name, sep, port = text.partition("=")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"expected NAME=PORT (a gateway listener and a port), got {text!r}")
    return name, int(port)


def _stack_arg(p: argparse.ArgumentParser, manifests: bool = False) -> None:
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--stack", "-s", help="stack name: stacks/Pulumi.NAME.yaml")
    g.add_argument("--file", "-f", type=Path, help="path to a stack file")
    if manifests:
        g.add_argument("--manifests", "-m", nargs="+", type=Path, metavar="PATH",
                       help="Kubernetes YAML files or folders (as `kubectl apply -f`), instead of a stack")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m infershift.devstack",
                                 description="Run a stack's inference gateway locally.")
    sub = ap.add_subparsers(dest="command", required=True)

    up = sub.add_parser("up", help="start a stack's data plane (Envoy, pickers, simulators) until Ctrl-C")
    _stack_arg(up, manifests=True)
    up.add_argument("--port-offset", type=int, default=0, help="add N to every gateway listener port (80 -> 80+N)")
    up.add_argument("--listener-port", type=_listener_port, action="append", default=[], metavar="NAME=PORT",
                    help="put one gateway listener on another port (repeatable)")
    up.add_argument("--time-scale", type=float, default=1.0, help="simulator speed-up (default 1: real GPU timing)")
    up.add_argument("--seed", type=int, default=0)
    up.add_argument("--poll-interval", help="picker metrics-scrape interval override, e.g. 200ms")
    up.add_argument("--workdir", type=Path, help="keep configs and logs here (default: a temp dir, removed on exit)")
    up.add_argument("--no-watch", action="store_true", help="do not apply edits of the stack file live")
    up.add_argument("--picker-python", help="interpreter with the picker's dependencies (default: .venv-picker)")
    up.add_argument("--prometheus", action="store_true",
                    help="also run a Prometheus (Debian's `prometheus`) scraping every picker, simulator and Envoy")

    cfg = sub.add_parser("config", help="edit a stack file like `pulumi config set --path`")
    cfg_sub = cfg.add_subparsers(dest="config_command", required=True)
    cset = cfg_sub.add_parser("set", help="set one value: config set --path KEY.PATH VALUE -s NAME")
    cset.add_argument("key")
    cset.add_argument("value")
    cset.add_argument("--path", action="store_true", required=True, help="KEY is a path (as Pulumi's --path)")
    cset.add_argument("--type", default="auto", choices=["auto", "string", "int", "bool", "float"])
    _stack_arg(cset)

    rnd = sub.add_parser("render", help="print one stage of the translation (fixed port layout)")
    _stack_arg(rnd, manifests=True)
    rnd.add_argument("--stage", choices=["manifests", "ir", "envoy"], default="envoy",
                     help="the Kubernetes objects, the IR, or the Envoy configuration (default)")

    demo = sub.add_parser("demo", help="the README's demo: start `local`, split traffic, shift a weight, stop")
    demo.add_argument("--requests", type=int, default=200, help="requests per scenario (default 200)")
    demo.add_argument("--time-scale", type=float, default=50.0)
    return ap


def _up(args) -> int:
    options = Options(
        listener_ports=dict(args.listener_port), port_offset=args.port_offset, time_scale=args.time_scale,
        seed=args.seed, poll_interval=args.poll_interval, workdir=args.workdir, watch=not args.no_watch,
    )
    if args.picker_python:
        options.picker_python = args.picker_python
    stop = threading.Event()

    def on_signal(signum, frame):
        # First signal stops cleanly; it also interrupts a start still in progress.
        if stop.is_set():
            return
        stop.set()
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    if args.manifests:
        stack = LocalStack(None, options, manifests=args.manifests)
    else:
        stack = LocalStack(args.stack or args.file, options)
    print(f"devstack: starting {stack.source} ...", flush=True)
    try:
        stack.start()
        if args.prometheus:
            from . import prometheus

            try:
                prometheus.start(stack)
            except FileNotFoundError as e:
                print(f"devstack: {e}", file=sys.stderr, flush=True)
                return 2
        print("\n".join(stack.describe()), flush=True)
        print(_examples(stack), flush=True)
        print("devstack: ready; edit the stack file to change weights live. Ctrl-C stops everything.", flush=True)
        # the supervisor restarts and reports a child that exits (stack.log prints it)
        while not stop.wait(1.0):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        print("devstack: stopping ...", flush=True)
        stack.stop()
        print("devstack: stopped", flush=True)
    return 0


def _examples(stack: LocalStack) -> str:
    """The seeds' curl commands, pointed at this stack's listeners."""
    lines = ["try:"]
    for req in stack.sample_requests():
        host = "".join(f" -H '{k}: {v}'" for k, v in req["headers"].items())
        lines.append(f"  curl{host} {req['url']} -H 'Content-Type: application/json' "
                     f"-d '{json.dumps(req['body'])}'   # {req['route']}"
                     + ("" if set(req["routePools"]) <= set(req["pools"]) else
                        f" (routed only by {', '.join(req['pools'])}; the share sent elsewhere gets 404)"))
    return "\n".join(lines)


def _config_set(args) -> int:
    path = resolve_stack(args.stack or args.file)
    value = config_path.parse_value(args.value, args.type)
    config_path.set_in_file(path, args.key, value)
    try:
        stackspec.load_file(path)
    except stackspec.StackConfigError as e:
        print(f"warning: the stack file is now invalid; a running devstack keeps its config:\n{e}", file=sys.stderr)
        return 1
    return 0


def _render(args) -> int:
    import yaml

    from . import manifests, render, translate

    try:
        if args.manifests:
            objects = manifests.load(args.manifests)
        else:
            objects = manifests.render_stack_file(resolve_stack(args.stack or args.file))
    except manifests.ManifestError as e:
        raise StackError(str(e)) from None
    if args.stage == "manifests":
        print(yaml.safe_dump_all(objects.items, sort_keys=False, width=120), end="")
        return 0
    gw = translate.translate(objects.items)
    for line in [*objects.warnings, *gw.warnings]:
        print(f"warning: {line}", file=sys.stderr)
    if args.stage == "ir":
        print(render.dump_ir(gw), end="")
        return 0
    out = render.envoy(gw)
    print("# envoy bootstrap")
    print(dump(out["bootstrap"]))
    for name, doc in out["routes"].items():
        print(f"---\n# {name}")
        print(dump(doc))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "up":
            return _up(args)
        if args.command == "config":
            return _config_set(args)
        if args.command == "render":
            return _render(args)
        if args.command == "demo":
            from .demo import main as demo_main

            return demo_main(requests=args.requests, time_scale=args.time_scale)
    except (StackError, PortError, ProcessError, EnvoyConfigError, config_path.ConfigPathError,
            stackspec.StackConfigError) as e:
        print(f"devstack: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `render | head`
        sys.stderr.close()
        return 0
    return 1
