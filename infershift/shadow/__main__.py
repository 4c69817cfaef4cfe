"""python -m infershift.shadow report (--logs FILE... | --stack STACK) [--out DIR] [gate limits]

Pairs a mirror's primary and shadow answers by request id (the pickers' answer lines, picker
config `answerLog`) and compares them per target model: TTFT and end-to-end deltas, error rates,
output-length ratio, exact match and token overlap. `--logs` reads JSON-lines files (the local
stack's picker logs, or `kubectl logs` of a cluster's pickers); `--stack` starts the local stack
(real Envoy, pickers, simulators) on a copy of the stack file, sends requests through the
mirror's route, reports and stops everything. With gate limits (`--min-exact-match` ...) it exits
1 when a model (or all of them, `--gate-on all`) fails one: a pre-check before a mirrored
candidate gets weight.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

from rich.console import Console

from . import compare, report


def _gate(ns) -> compare.Gate | None:
    limits = {k: getattr(ns, k) for k in ("min_exact_match", "min_overlap", "max_ttft_delta_p90",
                                          "max_e2e_delta_p90", "max_error_rate_delta", "max_unpaired_share")}
    if all(v is None for v in limits.values()):
        return None
    return compare.Gate(min_pairs=ns.min_pairs, **limits)


def verdicts(stats: dict[str, compare.ModelStats], gate: compare.Gate, on: str) -> dict[str, list[str]]:
    names = [compare.ALL] if on == "all" else [m for m in stats if m != compare.ALL]
    return {m: gate.check(stats[m]) for m in names}


def show(console: Console, answers: list[compare.Answer], title: str, sources: list[str], out: Path | None,
         gate: compare.Gate | None = None, gate_on: str = "models") -> bool:
    """Print the table (and write the files); True unless a gate failed."""
    pairing = compare.pair(answers)
    stats = compare.compare(pairing)
    v = verdicts(stats, gate, gate_on) if gate is not None else None
    console.print(report.table(stats, title, v))
    console.print(f"{len(pairing.pairs)} pairs, {len(pairing.primaries)} primary-only, "
                  f"{len(pairing.shadows)} shadow-only request ids"
                  + (f", {pairing.duplicates} duplicates" if pairing.duplicates else ""), highlight=False)
    if out is not None:
        md = report.write(out, stats, title, pairing, sources, v, gate)
        console.print(f"report {md}, {out / 'shadow.png'}, {out / 'summary.json'}", highlight=False)
    if v is None:
        return True
    for m, failed in v.items():
        if failed:
            console.print(f"[red]gate failed[/] for {m}: {'; '.join(failed)}")
    ok = not any(v.values())
    if ok:
        console.print("[green]gate passed[/]")
    return ok


def _local(ns, console: Console) -> tuple[list[compare.Answer], list[str], str]:
    from infershift.devstack.stack import LocalStack, Options, resolve_stack

    from . import local

    directory = Path(tempfile.mkdtemp(prefix="shadow-report-"))
    try:
        src = resolve_stack(ns.stack)
        file = directory / src.name
        shutil.copyfile(src, file)
        stack = LocalStack(file, Options(auto_ports=True, time_scale=ns.time_scale, poll_interval="200ms",
                                         workdir=directory / "work"), log=lambda m: None)
        with console.status(f"starting the local stack ({src.name}) ..."):
            stack.start()
        try:
            assert stack.spec is not None
            mirrors = list(stack.spec.mirrors)
            if not mirrors:
                raise SystemExit(f"shadow: stack {ns.stack} has no mirrors")
            name = ns.mirror or mirrors[0]
            if name not in stack.spec.mirrors:
                raise SystemExit(f"shadow: no mirror {name!r} (mirrors: {', '.join(mirrors)})")
            with console.status(f"{ns.requests} requests through mirror {name} ..."):
                r = local.run(stack, name, ns.requests, stream=ns.stream, max_tokens=ns.max_tokens)
            m = stack.spec.mirrors[name]
            title = (f"Shadow report: mirror {name} ({m.percent}% of {m.backend} -> {m.mirror_to.kind} "
                     f"{m.mirror_to.name}), local stack, {r.tally.total} requests ({r.tally.failed} failed)")
            return r.answers, r.sources, title
        finally:
            stack.stop()
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m infershift.shadow", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("report", help="pair primary and shadow answers, compare them per target model")
    src = r.add_mutually_exclusive_group(required=True)
    src.add_argument("--logs", nargs="+", type=Path, metavar="FILE", help="JSON-lines files with answer lines")
    src.add_argument("--stack", help="run the local stack of this stack (name or file) and send traffic")
    r.add_argument("--mirror", help="--stack: the mirror (default: the first)")
    r.add_argument("--requests", type=int, default=100, help="--stack: requests through the mirror")
    r.add_argument("--stream", action="store_true", help="--stack: streamed (SSE) requests")
    r.add_argument("--max-tokens", type=int, default=16)
    r.add_argument("--time-scale", type=float, default=50.0, help="--stack: simulators run this much faster")
    r.add_argument("--out", type=Path, help="write report.md, shadow.png and summary.json here")
    r.add_argument("--title", default="Shadow report")
    g = r.add_argument_group("gate (exit 1 when a limit fails)")
    g.add_argument("--min-pairs", type=int, default=1, help="compared pairs needed for a verdict")
    g.add_argument("--min-exact-match", type=float)
    g.add_argument("--min-overlap", type=float)
    g.add_argument("--max-ttft-delta-p90", type=float, metavar="SECONDS")
    g.add_argument("--max-e2e-delta-p90", type=float, metavar="SECONDS")
    g.add_argument("--max-error-rate-delta", type=float)
    g.add_argument("--max-unpaired-share", type=float)
    g.add_argument("--gate-on", choices=["models", "all"], default="models",
                   help="judge every target model (default) or the totals")
    ns = ap.parse_args(argv)
    console = Console() if Console().is_terminal else Console(width=160)
    if ns.logs:
        missing = [str(p) for p in ns.logs if not p.exists()]
        if missing:
            print(f"shadow: no such file: {', '.join(missing)}", file=sys.stderr)
            return 2
        answers, sources, title = compare.read(ns.logs), [str(p) for p in ns.logs], ns.title
    else:
        answers, sources, title = _local(ns, console)
    if not answers:
        console.print("shadow: no answer lines (is the pickers' answerLog on?)")
    return 0 if show(console, answers, title, sources, ns.out, _gate(ns), ns.gate_on) else 1


if __name__ == "__main__":
    sys.exit(main())
