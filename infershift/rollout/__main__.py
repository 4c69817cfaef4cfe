"""python -m infershift.rollout run|status|abort NAME -s STACK

  run     drive rollouts.NAME: per step, set the weights (the edits `pulumi config set --path`
          makes), apply, judge the gates, advance / roll back / pause
  status  each rollout's phase, step, weights and last message, from the stack file
  abort   canary to 0 %, status Aborted (a running controller sees it and stops)

Apply (`--apply`): `local` starts the local stack (real Envoy, pickers, simulators) on the stack
file in this process and applies each edit live; `watch` leaves it to a local stack already
running on that file (`devstack up`); `automation` runs `pulumi up` through the Automation API.
Metrics: `--prometheus URL` (the HTTP query API; `--prometheus local` starts a real Prometheus for
the local stack), else the pickers' /metrics (`--metrics POOL=URL`, or the local stack's own).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rich.console import Console

from .controller import Applier, Controller, NoApply, RolloutError, abort, status
from .shadow_gate import AnswerSource


def _stack_file(stack: str) -> Path:
    from infershift.devstack.stack import StackError, resolve_stack

    try:
        return resolve_stack(stack)
    except StackError as e:
        raise RolloutError(str(e)) from None


def _pair(text: str) -> tuple[str, str]:
    pool, sep, url = text.partition("=")
    if not sep or not pool or not url:
        raise argparse.ArgumentTypeError(f"expected POOL=URL, got {text!r}")
    return pool, url


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m infershift.rollout", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    sub = ap.add_subparsers(dest="cmd", required=True)
    run = sub.add_parser("run", help="drive a rollout")
    run.add_argument("name")
    run.add_argument("-s", "--stack", required=True, help="stack name (stacks/Pulumi.NAME.yaml) or stack file")
    run.add_argument("--apply", choices=["local", "watch", "automation"], default="local")
    run.add_argument("--prometheus", help="Prometheus base URL, or 'local' (start one for the local stack)")
    run.add_argument("--pool-matcher", default='job="{pool}-epp"', help="PromQL label matcher of a pool's picker")
    run.add_argument("--metrics", type=_pair, action="append", default=[], metavar="POOL=URL",
                     help="a picker's /metrics URL (repeat per pool and replica)")
    run.add_argument("--gateway", help="base URL of the route's listener (pinned first step); local: the stack's")
    run.add_argument("--answers", nargs="+", type=Path, metavar="FILE",
                     help="shadowFirst: files the two pools' pickers' answer lines are appended to "
                          "(kubectl logs -f ... >> FILE); local: the stack's picker logs")
    run.add_argument("--answers-command", metavar="CMD",
                     help="shadowFirst: a command printing the answer lines, run every poll; {since} becomes "
                          "the phase's start (kubectl logs -l 'app in (a-epp,b-epp)' --since-time={since})")
    run.add_argument("--load", type=int, default=0, metavar="N",
                     help="local: N concurrent clients sending chat requests through the route while it runs")
    run.add_argument("--time-scale", type=float, default=20.0, help="local: simulator speed-up")
    run.add_argument("--poll", type=float, default=1.0, help="seconds between gate evaluations")
    run.add_argument("--step-timeout", type=float, help="pause a step without a verdict after this (default 10x dwell)")
    run.add_argument("--report", type=Path, help="write report.md, timeline.png and history.json here")
    run.add_argument("--pulumi-root", help="automation: directory holding the pulumi CLI (bin/pulumi)")
    st = sub.add_parser("status", help="show rollouts")
    st.add_argument("name", nargs="?")
    st.add_argument("-s", "--stack", required=True)
    st.add_argument("--json", action="store_true")
    ab = sub.add_parser("abort", help="canary to 0 %, status Aborted")
    ab.add_argument("name")
    ab.add_argument("-s", "--stack", required=True)
    return ap


class Progress:
    """A line per poll, the step's table when it ends (on_poll of Controller)."""

    def __init__(self, console: Console, name: str, ro):
        self.console, self.name, self.ro = console, name, ro
        self.last = None

    def __call__(self, entry) -> None:
        from . import report

        if self.last is not None and entry.step != self.last.step:
            self.console.print(report.step_table(self.name, self.ro, self.last))
        self.last = entry
        r = entry.result
        self.console.print(f"  {r.verdict:<4} canary {r.canary_requests:.0f} / stable {r.stable_requests:.0f} responses"
                           f"{': ' + r.reason if r.verdict != 'pass' else ''}", markup=False, highlight=False)

    def done(self) -> None:
        from . import report

        if self.last is not None:
            self.console.print(report.step_table(self.name, self.ro, self.last))


def _status(args) -> int:
    rows = status(_stack_file(args.stack), args.name)
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    for r in rows:
        weights = ", ".join(f"{k} {v}" for k, v in r["weights"].items())
        print(f"{r['name']}: {r['what']}: {r['phase']} (step {r['step'] + 1 if r['step'] >= 0 else '-'} of "
              f"{len(r['steps'])} {r['steps']}); weights {weights}; {r['message'] or '-'}"
              + (f" [{r['updated']}]" if r["updated"] else ""))
    return 0


def _run(args) -> int:
    import contextlib

    from infershift import spec as stackspec

    from . import report
    from .metrics import MetricsPages, Prometheus, Source

    console = Console()
    stack_file = _stack_file(args.stack)
    spec = stackspec.load_file(stack_file)
    if args.name not in spec.rollouts:
        raise RolloutError(f"{stack_file}: no rollout named {args.name!r} (rollouts: {', '.join(spec.rollouts) or 'none'})")
    ro = spec.rollouts[args.name]
    with contextlib.ExitStack() as stack_ctx:
        local = None
        applier: Applier
        if args.apply == "local":
            from infershift.devstack.stack import LocalStack, Options

            console.print(f"rollout: starting the local stack on {stack_file} ...")
            local = LocalStack(stack_file, Options(auto_ports=True, time_scale=args.time_scale, poll_interval="200ms"),
                               log=lambda m: console.print(f"devstack: {m}", markup=False, highlight=False))
            local.start()
            stack_ctx.callback(local.stop)
            from .controller import LocalApply

            applier = LocalApply(local)
        elif args.apply == "automation":
            from .automation import AutomationApply

            applier = AutomationApply(args.pulumi_root, log=lambda m: console.print(m, markup=False, highlight=False))
        else:
            applier = NoApply()
        source: Source
        if args.prometheus == "local":
            if local is None:
                raise RolloutError("--prometheus local needs --apply local")
            from infershift.devstack import prometheus

            source = Prometheus(prometheus.start(local), args.pool_matcher)
        elif args.prometheus:
            source = Prometheus(args.prometheus, args.pool_matcher)
        elif args.metrics:
            urls: dict[str, list[str]] = {}
            for pool, url in args.metrics:
                urls.setdefault(pool, []).append(url)
            source = MetricsPages(urls)
        elif local is not None:
            source = MetricsPages({p: [f"http://127.0.0.1:{proc.metrics_port}/metrics"] for p, proc in local.pools.items()})
        else:
            raise RolloutError("give --prometheus URL or --metrics POOL=URL (one per picker) to read the gates from")
        gateway = args.gateway
        route = spec.routes.get(ro.route) if ro.route else None
        if gateway is None and local is not None:
            gateway = local.url(route.listener if route is not None and route.listener else None)
        sender = None
        if ro.pin_first is not None:
            if gateway is None:
                raise RolloutError("the pinned first step sends requests through the gateway: give --gateway URL")
            from .traffic import PinnedSender

            sender = PinnedSender(spec, gateway)
        if args.load:
            if local is None or gateway is None:
                raise RolloutError("--load is for the local stack (--apply local)")
            from infershift.devstack.traffic import Load, chat_body

            model = ro.model or sorted(spec.pool_serves(ro.stable) & spec.pool_serves(ro.canary) or
                                       spec.pool_serves(ro.stable))[0]
            load = Load(gateway + "/v1/chat/completions", chat_body(model, max_tokens=16), concurrency=args.load)
            stack_ctx.enter_context(load)
        answers: AnswerSource | None = None
        if ro.shadow_first is not None:
            from . import shadow_gate

            if args.answers:
                answers = shadow_gate.LogFiles(args.answers)
            elif args.answers_command:
                answers = shadow_gate.LogCommand(args.answers_command)
            elif local is not None:
                # the two pickers' logs, and the shadow recorders' (the shadow phase via a Service)
                answers = shadow_gate.LogFiles([local.picker_log(ro.stable), local.picker_log(ro.canary),
                                                *local.recorder_logs()])
        progress = Progress(console, args.name, ro)
        controller = Controller(stack_file, args.name, source, applier, send_pinned=sender, answers=answers,
                                poll=args.poll,
                                step_timeout=args.step_timeout,
                                log=lambda m: console.print(m, markup=False, highlight=False), on_poll=progress)
        outcome = controller.run()
        progress.done()
        console.print(f"rollout {args.name}: {outcome.phase}: {outcome.message}", markup=False, highlight=False)
        if args.load:
            t = load.snapshot()
            console.print(f"clients: {t.total} requests, {t.failed} failed {dict(t.statuses)}", markup=False)
        if args.report:
            queries = {s.label(): source.queries(s) for s in (controller.canary, controller.stable)}
            md = report.write(args.report, args.name, ro, outcome, queries,
                              "Prometheus" if isinstance(source, Prometheus) else "the pickers' /metrics")
            console.print(f"report: {md}")
    return {"Promoted": 0, "Paused": 3}.get(outcome.phase, 4)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.cmd == "status":
            return _status(args)
        if args.cmd == "abort":
            abort(_stack_file(args.stack), args.name)
            return 0
        return _run(args)
    except RolloutError as e:
        print(f"rollout: {e}", file=sys.stderr)
        return 2
    except Exception as e:
        from infershift.spec import StackConfigError

        if isinstance(e, StackConfigError):
            print(f"rollout: {e}", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    sys.exit(main())
