"""python -m bench [--quick] [--out DIR] [--routers a,b] [--scenarios a,b]: run, then write the report."""
from __future__ import annotations

import argparse
import json
import signal
import sys
from pathlib import Path

from . import checks, plan, procs, report, runner
from .routers import FACTORIES


def _stop_children(signum, frame) -> None:
    # Children run in their own sessions (so they can be killed as groups): stop them before exiting.
    procs.stop_all()
    sys.exit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    signal.signal(signal.SIGTERM, _stop_children)
    signal.signal(signal.SIGINT, _stop_children)
    argv = list(sys.argv[1:] if argv is None else argv)
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    ap.add_argument("--quick", action="store_true", help="smoke run: 3 servers, tiny counts, one load level")
    ap.add_argument("--out", default=None, help="output directory (default bench/results or bench/results-quick)")
    ap.add_argument("--routers", help=f"comma-separated subset of: direct, {', '.join(FACTORIES)}")
    ap.add_argument("--scenarios", help="comma-separated subset of: shared-prefix, multi-turn, lora-mix, "
                                        "overload, long-context")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    scs = plan.scenarios(a.quick)
    if a.scenarios:
        want = set(a.scenarios.split(","))
        unknown = want - {s.name for s in scs}
        if unknown:
            ap.error(f"--scenarios: unknown {', '.join(sorted(unknown))}")
        scs = [s for s in scs if s.name in want]
    only = None
    if a.routers:
        only = set(a.routers.split(","))
        unknown = only - set(FACTORIES) - {"direct"}
        if unknown:
            ap.error(f"--routers: unknown {', '.join(sorted(unknown))}")
    default = Path(__file__).parent / ("results-quick" if a.quick else "results")
    out = Path(a.out) if a.out else default
    meta = runner.run(scs, out, seed=a.seed, only_routers=only, quick=a.quick, argv=argv)
    # Routing quality (a behaviour, not a timing): infershift's prefix-cache hit rate against the
    # cache-aware references that ran now, recorded in meta.json and the report.
    # A run that reran neither infershift nor a reference on shared-prefix keeps the check recorded
    # by the one that did (its inputs are unchanged).
    failed = {(f["scenario"], f["router"]) for f in meta["failures"]}
    failed |= {(k["scenario"], k["router"]) for k in meta.get("skipped", [])}
    ran = {n for sc in scs if sc.name == checks.SCENARIO for n in sc.routers
           if (only is None or n in only) and (sc.name, n) not in failed}
    results = checks.prefix_affinity(report.load(out)[1], ran)
    if ran & {checks.SUBJECT, *checks.REFERENCES}:
        meta["checks"] = checks.as_json(results)
        (out / "meta.json").write_text(json.dumps(meta, indent=1))
    path = report.write(out)
    print(f"report: {path}")
    for r in results:
        print(f"routing-quality check: {r.message}", file=sys.stderr if r.ok is False else sys.stdout)
    for k in meta.get("skipped", []):  # not built on this machine: reported, not a failure
        print(f"SKIPPED {k['scenario']} / {k['router']}: {k['reason']}")
    for f in meta["failures"]:
        print(f"FAILED {f['scenario']} / {f['router']}: {f['error'][:300]}", file=sys.stderr)
    # A smoke run must fail when a router could not run (its figures would silently be missing)
    # and when infershift's routing loses the prefix affinity a cache-aware router keeps.
    return 1 if meta["failures"] or any(r.ok is False for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
