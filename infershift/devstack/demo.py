"""`python -m infershift.devstack demo` (the README's `make demo`): start the `local` stack on a copy
of its file, send traffic, show the observed splits next to the configured weights and
the mirror's counts, shift the base-model canary with a config edit, show the new split,
stop everything."""
from __future__ import annotations

import shutil
import tempfile
import time
from collections import Counter
from pathlib import Path

from rich.console import Console
from rich.table import Table

from infershift import spec as stackspec
from infershift.spec.config_path import set_in_file

from .stack import LocalStack, Options
from .traffic import burst, chat_body, served_count, settled_count, tolerance

STACK = "local"
ROUTE = "inference-route"
CANARY_PATH = "routes.inference-route.backends"


def _share_rows(table: Table, label: str, weights: dict[str, int], observed: Counter, total: int) -> bool:
    all_ok = True
    weight_sum = sum(weights.values()) or 1
    for i, (name, weight) in enumerate(weights.items()):
        p = weight / weight_sum
        n = observed.get(name, 0)
        share = n / total if total else 0.0
        ok = abs(share - p) <= tolerance(p, total)
        all_ok &= ok
        table.add_row(label if i == 0 else "", name, str(weight), f"{p:.0%}", str(n), f"{share:.1%}",
                      "[green]✓[/]" if ok else "[red]✗[/]")
    stray = sum(n for k, n in observed.items() if k not in weights)
    if stray:
        all_ok = False
        table.add_row("", "[red]elsewhere[/]", "-", "0%", str(stray), f"{stray / total:.1%}", "[red]✗[/]")
    return all_ok


def _split_table(title: str) -> Table:
    t = Table(title=title, title_justify="left")
    for col in ("route / model", "backend", "weight", "expected", "requests", "observed", ""):
        t.add_column(col, justify="right" if col in ("weight", "expected", "requests", "observed") else "left")
    return t


class Demo:
    def __init__(self, console: Console, requests: int, time_scale: float):
        self.console = console
        self.n = requests
        self.time_scale = time_scale
        self.ok = True

    def pool_of_pod(self, stack: LocalStack) -> dict[str, str]:
        svc_pool = {svc: pools[0] for svc, pools in stack.service_pools().items()}
        return {pod: svc_pool[svc] for pod, svc in stack.pod_service().items() if svc in svc_pool}

    def canary(self, stack: LocalStack, title: str) -> None:
        url = stack.url("llm-gw") + "/v1/chat/completions"
        with self.console.status(f"{self.n} requests for model mymodel on listener llm-gw ..."):
            tally = burst(url, chat_body("mymodel"), self.n)
        table = _split_table(title)
        weights = dict(_spec(stack).routes[ROUTE].backends)
        self.ok &= _share_rows(table, f"{ROUTE} (mymodel)", weights, tally.by(self.pool_of_pod(stack)), tally.ok)
        self.report(table, tally)

    def lora(self, stack: LocalStack) -> None:
        url = stack.url("llm-gw") + "/v1/chat/completions"
        with self.console.status(f"{self.n} requests for model travelhelper (LoRA canary) ..."):
            tally = burst(url, chat_body("travelhelper"), self.n)
        table = _split_table("LoRA canary: client model travelhelper -> adapters, per pool")
        per_pool = tally.targets_by(self.pool_of_pod(stack))
        for pool in _spec(stack).routes[ROUTE].backends:
            weights = dict(_spec(stack).pools[pool].models["travelhelper"].targets)
            observed = per_pool.get(pool, Counter())
            self.ok &= _share_rows(table, f"travelhelper @ {pool}", weights, observed, sum(observed.values()))
        self.report(table, tally)

    def in_pool_and_mirror(self, stack: LocalStack) -> None:
        mirror = _spec(stack).mirrors["llama2-mirror"]
        shadow_pool = mirror.mirror_to.name
        shadow = [e.address for svc in _spec(stack).pool_services(shadow_pool) for e in stack.endpoints[svc]]
        primary = [e.address for svc in _spec(stack).pool_services(mirror.backend) for e in stack.endpoints[svc]]
        before = (sum(served_count(a) for a in primary), sum(served_count(a) for a in shadow))
        url = stack.url("lora-gw") + "/v1/chat/completions"
        with self.console.status(f"{self.n} requests for model lora-request on listener lora-gw (mirrored) ..."):
            tally = burst(url, chat_body("lora-request"), self.n)
            expected_shadows = before[1] + self.n * mirror.percent // 100
            shadow_served = settled_count(shadow, expected_shadows) - before[1]
        table = _split_table(f"In-pool split: lora-request -> adapters of {mirror.backend}")
        weights = dict(_spec(stack).pools[mirror.backend].models["lora-request"].targets)
        self.ok &= _share_rows(table, "lora-request", weights, tally.targets, tally.ok)
        self.report(table, tally)
        served = (sum(served_count(a) for a in primary) - before[0], shadow_served)
        m = Table(title=f"Mirror llama2-mirror: {mirror.percent}% of {mirror.backend} -> "
                        f"{mirror.mirror_to.kind} {shadow_pool}", title_justify="left")
        for col in ("", "requests served", "seen by the client"):
            m.add_column(col)
        m.add_row(f"primary ({mirror.backend})", str(served[0]), str(tally.ok))
        m.add_row(f"shadow ({shadow_pool}, through its own picker)", str(served[1]), "0")
        expected = mirror.percent / 100
        self.ok &= abs(served[1] / max(served[0], 1) - expected) <= tolerance(expected, max(served[0], 1))
        self.console.print(m)

    def report(self, table: Table, tally) -> None:
        self.console.print(table)
        if tally.failed:
            self.ok = False
            self.console.print(f"[red]{tally.failed} failed requests[/]: {tally.errors[:3]}")

    def run(self) -> int:
        started = time.monotonic()
        tmp = Path(tempfile.mkdtemp(prefix="infershift-demo-"))
        stack_file = tmp / f"Pulumi.{STACK}.yaml"
        shutil.copyfile(stackspec.stack_path(STACK), stack_file)  # never edit the committed stack
        options = Options(auto_ports=True, time_scale=self.time_scale, poll_interval="200ms",
                          workdir=tmp / "run", watch=True)
        messages: list[str] = []
        stack = LocalStack(stack_file, options, log=messages.append)
        try:
            with self.console.status("Starting the local stack: simulators, a picker per pool, Envoy ..."):
                stack.start()
            self.console.print(f"[bold]Local stack up[/] in {time.monotonic() - started:.1f}s")
            for line in stack.describe():
                self.console.print("  " + line, highlight=False)
            self.canary(stack, "Base-model canary: HTTPRoute inference-route -> InferencePools")
            self.lora(stack)
            self.in_pool_and_mirror(stack)

            self.console.rule("Shift the canary: pulumi config set --path "
                              f"'{CANARY_PATH}.mymodel-pool-v2' 50 (and v1 50) -s {STACK}")
            t0 = time.monotonic()
            with self.console.status("Editing the stack file; devstack applies it live ..."):
                for pool in ("mymodel-pool-v2", "mymodel-pool-v1"):
                    seen = len(stack.applied)
                    set_in_file(stack_file, f"{CANARY_PATH}.{pool}", 50)
                    while len(stack.applied) == seen:
                        time.sleep(0.02)
            self.console.print(f"applied in {time.monotonic() - t0:.2f}s: "
                               + "; ".join(a.message for a in stack.applied[-2:]), highlight=False)
            self.ok &= all(a.ok for a in stack.applied)
            self.canary(stack, "Base-model canary after the shift")
        finally:
            with self.console.status("Stopping everything ..."):
                stack.stop()
                shutil.rmtree(tmp, ignore_errors=True)
        verdict = "[green]all splits within tolerance[/]" if self.ok else "[red]a split is off[/]"
        self.console.print(f"[bold]Done[/] in {time.monotonic() - started:.1f}s; every process stopped; {verdict}")
        return 0 if self.ok else 1


def main(requests: int = 200, time_scale: float = 50.0) -> int:
    console = Console()
    if not console.is_terminal:  # CI logs: wide enough that pool names are not cut
        console = Console(width=120)
    return Demo(console, requests, time_scale).run()


def _spec(stack: LocalStack):
    """The demo runs the `local` stack file, so its typed spec is there."""
    assert stack.spec is not None, "the demo runs a stack file"
    return stack.spec
