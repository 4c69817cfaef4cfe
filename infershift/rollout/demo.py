"""`make rollout-demo`: two rollouts on the local stack (real Envoy, pickers, simulators), on a
copy of stacks/Pulumi.local.yaml with two `rollouts:` added:

- `base-model`, the base-model canary (route inference-route: mymodel-pool-v1 -> mymodel-pool-v2),
  healthy: a pinned first step, then promoted step by step to 100 %, no client request failing;
- `base-model-slow`, the same canary whose servers get the simulator's fault from the second step
  (every request's first token delayed 100 ms, several times the stable's): rolled back
  automatically.

Each prints a table per step; the reports (Markdown, PNG timeline) go to --out. Exits 0 when the
healthy one was promoted without a failed request and the faulty one rolled back.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

import yaml
from rich.console import Console

from infershift import spec as stackspec
from infershift.spec.config_path import set_many_in_file

_GATES = {"ttftP90": {"tolerance": 0.5}, "e2eP90": {"tolerance": 0.5}, "errorRate": {"tolerance": 0.02},
          "shedRate": {"max": 0.1}, "outputTokensPerSecond": {"tolerance": 0.5}}
ROLLOUTS = {
    # the same base-model canary twice: healthy, then with its servers slowed from the second step
    "base-model": {
        "route": "inference-route", "stable": "mymodel-pool-v1", "canary": "mymodel-pool-v2",
        "steps": [10, 50, 100], "dwell": "2s", "minRequests": 40, "pinFirst": {"requests": 40},
        "gates": _GATES, "onFailure": "rollback"},
    "base-model-slow": {
        "route": "inference-route", "stable": "mymodel-pool-v1", "canary": "mymodel-pool-v2",
        "steps": [10, 50, 100], "dwell": "2s", "minRequests": 40, "gates": _GATES, "onFailure": "rollback"},
}


def demo_stack(directory: Path) -> Path:
    """stacks/Pulumi.local.yaml with the two rollouts (and their starting weights) added."""
    doc = yaml.safe_load(stackspec.stack_path("local").read_text())
    config = doc["config"]
    config["infershift:rollouts"] = ROLLOUTS
    config["infershift:routes"]["inference-route"]["backends"] = {"mymodel-pool-v1": 100, "mymodel-pool-v2": 0}
    file = directory / "Pulumi.rollout-demo.yaml"
    file.write_text("# stacks/Pulumi.local.yaml with two rollouts (python -m infershift.rollout.demo)\n"
                    + yaml.safe_dump(doc, sort_keys=False))
    stackspec.load_file(file)
    return file


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m infershift.rollout.demo", description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path("out/rollout-demo"), help="reports go here")
    ap.add_argument("--time-scale", type=float, default=50.0)
    ns = ap.parse_args(argv)

    from infershift.devstack.stack import LocalStack, Options
    from infershift.devstack.traffic import Load, chat_body

    from . import report
    from .__main__ import Progress
    from .controller import Controller, LocalApply, status
    from .metrics import MetricsPages
    from .traffic import PinnedSender

    console = Console()
    directory = Path(tempfile.mkdtemp(prefix="rollout-demo-"))
    ok = True
    try:
        file = demo_stack(directory)
        stack = LocalStack(file, Options(auto_ports=True, time_scale=ns.time_scale, poll_interval="200ms",
                                         workdir=directory / "work"),
                           log=lambda m: console.print(f"devstack: {m}", markup=False, highlight=False)
                           if not m.startswith(("applied", "warning")) else None)
        console.print(f"rollout-demo: starting the local stack ({file.name}) ...")
        stack.start()
        try:
            pages = MetricsPages({p: [f"http://127.0.0.1:{proc.metrics_port}/metrics"]
                                  for p, proc in stack.pools.items()})
            gateway = stack.url("llm-gw")
            url = gateway + "/v1/chat/completions"
            spec = stackspec.load_file(file)
            outcomes = {}
            for name, fault in (("base-model", None), ("base-model-slow", {"delay_seconds": 0.1})):
                ro = spec.rollouts[name]
                if fault:
                    # a person puts the route back on the stable pool before the second candidate
                    set_many_in_file(file, {"routes.inference-route.backends.mymodel-pool-v1": 100,
                                            "routes.inference-route.backends.mymodel-pool-v2": 0})
                    stack.apply()
                console.rule(f"rollout {name}")
                injected: list[str] = []
                progress = Progress(console, name, ro)

                def inject(entry, fault=fault, injected=injected, progress=progress) -> None:
                    progress(entry)
                    if fault and entry.step >= 1 and not injected:
                        for pod, group in stack.pod_service().items():
                            if group == "deepseek-r1":
                                stack.set_faults(pod, **fault)
                                injected.append(pod)
                        console.print(f"rollout-demo: fault {fault} on {', '.join(injected)} (the canary's servers)")

                controller = Controller(file, name, pages, LocalApply(stack), send_pinned=PinnedSender(spec, gateway),
                                        poll=0.5, step_timeout=90,
                                        log=lambda m: console.print(m, markup=False, highlight=False), on_poll=inject)
                with Load(url, chat_body("mymodel", max_tokens=16), concurrency=4) as load:
                    outcome = controller.run()
                progress.done()
                for pod in injected:
                    stack.set_faults(pod, delay_seconds=0.0)
                total, failed = load.snapshot().total, load.snapshot().failed
                queries = {s.label(): pages.queries(s) for s in (controller.canary, controller.stable)}
                md = report.write(ns.out / name, name, ro, outcome, queries, "the pickers' /metrics")
                console.print(f"rollout {name}: {outcome.phase}: {outcome.message}; clients: {total} requests, "
                              f"{failed} failed; report {md}", markup=False, highlight=False)
                outcomes[name] = (outcome.phase, failed)
            ok = outcomes["base-model"] == ("Promoted", 0) and outcomes["base-model-slow"][0] == "RolledBack"
            console.print(f"rollout-demo: {'OK' if ok else 'UNEXPECTED'}: base-model {outcomes['base-model'][0]} "
                          f"({outcomes['base-model'][1]} failed requests), base-model-slow "
                          f"{outcomes['base-model-slow'][0]}")
            console.print("rollout-demo: the stack file's rollouts now read:")
            for row in status(file):
                console.print(f"  {row['name']}: {row['phase']}: {row['message']} (weights {row['weights']})",
                              markup=False, highlight=False)
        finally:
            stack.stop()
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
