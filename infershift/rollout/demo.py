"""`make rollout-demo`: two rollouts on the local stack (real Envoy, pickers, simulators), on a
copy of stacks/Pulumi.local.yaml with two `rollouts:` added:

- `base-model`, the base-model canary (route inference-route: mymodel-pool-v1 -> mymodel-pool-v2),
  healthy: a shadow phase first (the route's requests mirrored to the canary, both pools' answers
  paired and compared), a pinned step, then promoted step by step to 100 %, no client request failing;
- `base-model-slow`, the same canary whose servers get the simulator's fault from the second step
  (every request's first token delayed 100 ms, several times the stable's): rolled back
  automatically.

Each prints a table per step; the reports (Markdown, PNG timeline) go to --out. Then the stack's
mirror (llama2-mirror: llama2-pool's traffic copied to llama2-candidate-pool) gets requests and its
shadow report is printed (infershift/shadow: primary and shadow answers paired by request id),
written to --out/shadow and judged by a pre-check gate. Exits 0 when the healthy one was promoted
without a failed request, the faulty one rolled back and the shadow gate passed.
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
        "shadowFirst": {"minPairs": 40, "minExactMatch": 0.9, "minOverlap": 0.9, "maxErrorRateDelta": 0.02,
                        "maxUnpairedShare": 0.05},
        "gates": _GATES, "onFailure": "rollback"},
    "base-model-slow": {
        "route": "inference-route", "stable": "mymodel-pool-v1", "canary": "mymodel-pool-v2",
        "steps": [10, 50, 100], "dwell": "2s", "minRequests": 40, "gates": _GATES, "onFailure": "rollback"},
}


def demo_stack(directory: Path) -> Path:
    """stacks/Pulumi.local.yaml with the two rollouts (and their starting weights) added, and the
    canary's two pools logging answers (the shadow phase pairs them)."""
    doc = yaml.safe_load(stackspec.stack_path("local").read_text())
    config = doc["config"]
    config["infershift:rollouts"] = ROLLOUTS
    for pool in ("mymodel-pool-v1", "mymodel-pool-v2"):
        config["infershift:pools"][pool].setdefault("picker", {})["answerLog"] = True
    config["infershift:routes"]["inference-route"]["backends"] = {"mymodel-pool-v1": 100, "mymodel-pool-v2": 0}
    file = directory / "Pulumi.rollout-demo.yaml"
    file.write_text("# stacks/Pulumi.local.yaml with two rollouts (python -m infershift.rollout.demo)\n"
                    + yaml.safe_dump(doc, sort_keys=False))
    stackspec.load_file(file)
    return file


# Before a mirrored candidate gets weight: its answers like the primary's, no more errors, every
# copy answered. (No latency limit here: on 2 busy cores its noise is the machine's, not the model's.)
SHADOW_GATE_LIMITS = dict(min_exact_match=0.9, min_overlap=0.9, max_error_rate_delta=0.02, max_unpaired_share=0.05)


def shadow_report(console: Console, stack, out: Path, mirror: str = "llama2-mirror", requests: int = 60) -> bool:
    """Requests through the mirror, then its shadow report (table, report.md, shadow.png) and gate."""
    from infershift.shadow import compare, local
    from infershift.shadow.__main__ import show

    m = stack.spec.mirrors[mirror]
    console.rule(f"mirror {mirror}: shadow report")
    run = local.run(stack, mirror, requests, max_tokens=16)
    title = (f"Shadow report: mirror {mirror} ({m.percent}% of {m.backend} -> {m.mirror_to.kind} {m.mirror_to.name}), "
             f"{run.tally.total} requests ({run.tally.failed} failed)")
    return show(console, run.answers, title, run.sources, out, compare.Gate(min_pairs=40, **SHADOW_GATE_LIMITS), "all") \
        and run.tally.failed == 0


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
    from .shadow_gate import LogFiles
    from .traffic import PinnedSender

    console = Console()
    if not console.is_terminal:  # logs: wide enough for the shadow report's columns
        console = Console(width=130)
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

                answers = LogFiles([stack.picker_log(ro.stable), stack.picker_log(ro.canary)])
                controller = Controller(file, name, pages, LocalApply(stack), send_pinned=PinnedSender(spec, gateway),
                                        answers=answers, poll=0.5, step_timeout=90,
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
            shadow_ok = shadow_report(console, stack, ns.out / "shadow")
            console.print(f"rollout-demo: {'OK' if ok else 'UNEXPECTED'}: base-model {outcomes['base-model'][0]} "
                          f"({outcomes['base-model'][1]} failed requests), base-model-slow "
                          f"{outcomes['base-model-slow'][0]}; shadow gate {'passed' if shadow_ok else 'FAILED'}")
            ok &= shadow_ok
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
