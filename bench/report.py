"""Tables (Markdown), ratios, target checks and PNG plots from a run's raw JSON."""
from __future__ import annotations

import json
from pathlib import Path

UPSTREAM_LONG_CONTEXT_MS = {20: 158.0, 60: 426.0, 100: 723.0, 150: 1141.0}
TARGET_LOAD = 0.8
THROUGHPUT_TOLERANCE = 0.98


def load(out: Path) -> tuple[dict, list[dict]]:
    meta = json.loads((out / "meta.json").read_text())
    runs = [json.loads(p.read_text()) for p in sorted((out / "raw").glob("*.json"))]
    return meta, runs


def _ms(x) -> str:
    return "–" if x is None else f"{x * 1000:.0f}"


def _f(x, fmt="{:.2f}") -> str:
    return "–" if x is None else fmt.format(x)


def _pct(x) -> str:
    return "–" if x is None else f"{x * 100:.0f}%"


def _ratio(a, b) -> float | None:
    return a / b if a is not None and b else None


def by_key(runs: list[dict]) -> dict:
    return {(r["scenario"], r["router"], r["level"]): r for r in runs}


def scenario_table(runs: list[dict]) -> list[str]:
    lines = ["| router | load | req/s | TTFT p50 | p90 | p99 (ms) | ITL p50 | p90 (ms) | e2e p90 (s) "
             "| out tok/s | prefix hit | ok / err / shed | cores: loadgen / sims / router / machine "
             "| picker CPU (ms/req) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(runs, key=lambda r: (r["level"], r["router"])):
        s, c = r["summary"], r["cores"]
        lines.append(
            f"| {r['router']} | {r['level']:g}{'x' if r['mode'] == 'open' else ' conc.'} | {_f(r['rate_per_s'])} "
            f"| {_ms(s['ttft_p50'])} | {_ms(s['ttft_p90'])} | {_ms(s['ttft_p99'])} | {_ms(s['itl_p50'])} "
            f"| {_ms(s['itl_p90'])} | {_f(s['e2e_p90'])} | {_f(s['output_tokens_per_s'], '{:.0f}')} "
            f"| {_pct(s.get('prefix_cache_hit_rate'))} | {s['ok']} / {s['errors']} / {s['shed']} "
            f"| {c['loadgen']:.2f} / {c['sims']:.2f} / {c['router']:.2f} / {c['machine_busy']:.2f} "
            f"| {_f(s.get('picker_cpu_ms_per_request'))} |")
    return lines


def criticality_table(runs: list[dict]) -> list[str]:
    lines = ["| router | load | class | requests | ok | shed | errors | TTFT p50 (ms) | TTFT p90 (ms) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(runs, key=lambda r: (r["level"], r["router"])):
        for cls, c in sorted(r["summary"].get("by_criticality", {}).items()):
            lines.append(f"| {r['router']} | {r['level']:g}x | {cls} | {c['requests']} | {c['ok']} | {c['shed']} "
                         f"| {c['errors']} | {_ms(c['ttft_p50'])} | {_ms(c['ttft_p90'])} |")
    return lines


def ratio_table(runs: list[dict], subject: str = "infershift") -> list[str]:
    """infershift / other for TTFT p90 (lower is better) and output tokens/s (higher is better)."""
    lines = [f"| scenario | load | vs router | TTFT p90 ratio ({subject} / other) | out tok/s ratio |",
             "|---|---|---|---|---|"]
    k = by_key(runs)
    for (scn, router, level), r in sorted(k.items()):
        if router == subject or r["mode"] != "open":
            continue
        me = k.get((scn, subject, level))
        if not me:
            continue
        tr = _ratio(me["summary"]["ttft_p90"], r["summary"]["ttft_p90"])
        th = _ratio(me["summary"]["output_tokens_per_s"], r["summary"]["output_tokens_per_s"])
        lines.append(f"| {scn} | {level:g}x | {router} | {_f(tr)} | {_f(th)} |")
    return lines


def long_context(runs: list[dict]) -> tuple[list[str], dict]:
    k = by_key(runs)
    lc = [r for r in runs if r["scenario"] == "long-context"]
    levels = sorted({r["level"] for r in lc})
    added: dict = {}
    lines = ["| router | concurrency | TTFT mean (ms) | TTFT p90 (ms) | added mean vs direct (ms) "
             "| upstream picker TTFT mean (ms) | upstream / added | ok / err | router cores | picker CPU (ms/req) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(lc, key=lambda r: (r["level"], r["router"])):
        s = r["summary"]
        d = k.get(("long-context", "direct", r["level"]))
        add = None
        if d and r["router"] != "direct" and s["ttft_mean"] is not None and d["summary"]["ttft_mean"] is not None:
            add = s["ttft_mean"] - d["summary"]["ttft_mean"]
            added[(r["router"], r["level"])] = add
        up = UPSTREAM_LONG_CONTEXT_MS.get(int(r["level"]))
        better = (up / 1000) / add if up and add and add > 0 else None
        lines.append(f"| {r['router']} | {r['level']:g} | {_ms(s['ttft_mean'])} | {_ms(s['ttft_p90'])} | {_ms(add)} "
                     f"| {_f(up, '{:.0f}')} | {_f(better, '{:.1f}x')} | {s['ok']} / {s['errors']} "
                     f"| {r['cores']['router']:.2f} | {_f(s.get('picker_cpu_ms_per_request'))} |")
    del levels
    return lines, added


def targets(runs: list[dict], added: dict) -> list[str]:
    k = by_key(runs)
    out = []

    def get(router):
        r = k.get(("shared-prefix", router, TARGET_LOAD))
        return r["summary"] if r else None

    me = get("infershift")
    if me is None:
        return [f"- shared-prefix at {TARGET_LOAD:g}x capacity was not run for infershift: targets not evaluated."]

    def check(label, mine, other, limit, lower_better=True):
        if other is None or mine is None:
            out.append(f"- {label}: not measured (router missing from this run)")
            return
        r = mine / other
        ok = r <= limit if lower_better else r >= limit
        out.append(f"- {label}: ratio {r:.2f} (target {'<=' if lower_better else '>='} {limit}) — "
                   f"**{'met' if ok else 'MISSED'}**" + ("" if ok else f" by {abs(r - limit):.2f}"))

    lr = get("envoy-lr")
    check("TTFT p90 infershift / Envoy least-request", me["ttft_p90"], lr and lr["ttft_p90"], 0.5)
    others = [s for s in (get("sglang-cache-aware"), get("sglang-power-of-two"), get("vllm-cache-aware"),
                          get("vllm-power-of-two")) if s and s["ttft_p90"] is not None]
    best = min((s["ttft_p90"] for s in others), default=None)
    check("TTFT p90 infershift / best of SGLang and vLLM routers", me["ttft_p90"], best, 0.8)
    lim = get("omniscient")
    check("TTFT p90 infershift / omniscient limit", me["ttft_p90"], lim and lim["ttft_p90"], 1.2)
    tp = [(n, get(n)) for n in ("envoy-rr", "envoy-lr", "sglang-cache-aware", "sglang-power-of-two",
                                "vllm-cache-aware", "vllm-power-of-two", "omniscient")]
    for n, s in tp:
        if s and s["output_tokens_per_s"]:
            # Open loop: every router that keeps up delivers the offered rate, so equal within 2% (the
            # run's tail in the wall time) counts as "no lower".
            check(f"output tokens/s infershift / {n}", me["output_tokens_per_s"], s["output_tokens_per_s"],
                  THROUGHPUT_TOLERANCE, lower_better=False)
    for (router, level), add in sorted(added.items()):
        if router != "infershift":
            continue
        up = UPSTREAM_LONG_CONTEXT_MS.get(int(level))
        if up is None:
            out.append(f"- long context, concurrency {level:g}: added {add * 1000:.0f} ms (no upstream figure)")
            continue
        ok = add * 1000 <= up / 10
        out.append(f"- long context, concurrency {level:g}: infershift adds {add * 1000:.0f} ms vs upstream "
                   f"{up:.0f} ms (target <= {up / 10:.0f} ms) — **{'met' if ok else 'MISSED'}**")
    return out


def plot(runs: list[dict], out: Path) -> list[Path]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    made = []
    (out / "plots").mkdir(exist_ok=True)
    for scn in sorted({r["scenario"] for r in runs}):
        rs = [r for r in runs if r["scenario"] == scn]
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for router in sorted({r["router"] for r in rs}):
            pts = sorted((r["level"], r["summary"]["ttft_p90"]) for r in rs
                         if r["router"] == router and r["summary"]["ttft_p90"] is not None)
            if pts:
                ax.plot([p[0] for p in pts], [p[1] * 1000 for p in pts], marker="o",
                        linewidth=2.5 if router.startswith("infershift") else 1.2, label=router)
        closed = rs[0]["mode"] == "closed"
        ax.set_xlabel("concurrency" if closed else "offered load (fraction of measured capacity)")
        ax.set_ylabel("TTFT p90 (ms, log scale)")
        ax.set_yscale("log")   # routers differ by orders of magnitude once one of them queues
        ax.set_title(f"{scn}: TTFT p90 vs load")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        p = out / "plots" / f"{scn}-ttft-p90.png"
        fig.tight_layout()
        fig.savefig(p, dpi=90)
        plt.close(fig)
        made.append(p)
    return made


def render(meta: dict, runs: list[dict], plots: list[Path], out: Path) -> str:
    runs_meta = meta.get("runs") or [{"started": meta["started"], "argv": meta.get("argv"),
                                      "wall_s": meta.get("wall_s")}]
    L = [f"# Bench report ({'quick' if meta.get('quick') else 'full'} run)", "",
         "Commands (in order; a later one replaces the scenarios x routers it ran):", ""]
    for r in runs_meta:
        wall = f"{r['wall_s'] / 60:.1f} min" if r.get("wall_s") else "time not recorded"
        note = f" — {r['note']}" if r.get("note") else ""
        at = f" at commit {r['commit']}" if r.get("commit") else ""
        L.append(f"- {r.get('started')}{at}: `python -m bench {' '.join(r.get('argv') or [])}` ({wall}){note}")
    L += ["",
         f"Machine: {meta['machine']['cpus']} CPUs, {meta['machine']['memory_gb']} GB, "
         f"Python {meta['machine']['python']}, {meta['machine']['platform']}.", ""]
    if meta.get("failures"):
        L += ["## Routers that could not run", ""]
        L += [f"- {f['scenario']} / {f['router']}: `{f['error'][:300].strip()}`" for f in meta["failures"]]
        L.append("")
    if meta.get("skipped"):
        L += ["## Routers left out (a part not built on this machine; not a failure)", ""]
        L += [f"- {k['scenario']} / {k['router']}: {k['reason']}" for k in meta["skipped"]]
        L.append("")
    if meta.get("checks"):
        L += ["## Routing-quality check (prefix-cache hit rate; fails the run)", ""]
        L += [f"- {c['message']}" for c in meta["checks"]]
        L.append("")
    L += ["## Targets (shared-prefix at 0.8x capacity; long context)", ""]
    lc_lines, added = long_context(runs)
    L += targets(runs, added) + [""]
    for scn, info in meta["scenarios"].items():
        rs = [r for r in runs if r["scenario"] == scn]
        L += [f"## {scn}", "", f"{info['notes']}. {info['servers']} simulated servers ({info['profile']}, "
              f"time scale {info['time_scale']:g}) in {info['sim_processes']} process(es).", ""]
        if info.get("capacity"):
            c = info["capacity"]
            L += [f"Capacity: {c['requests_per_s']:.2f} req/s ({c['method']}).", ""]
        if scn == "long-context":
            L += lc_lines + [""]
        else:
            L += scenario_table(rs) + [""]
        if rs:
            lag = max(r.get("loadgen_max_send_lag_s") or 0.0 for r in rs)
            cores = max(r["cores"]["loadgen"] for r in rs)
            L += [f"Load generator: at most {cores:.2f} cores; worst send lag behind the Poisson schedule "
                  f"{lag * 1000:.0f} ms.", ""]
        if any(r["summary"].get("by_criticality") for r in rs):
            L += criticality_table(rs) + [""]
        p = out / "plots" / f"{scn}-ttft-p90.png"
        if p in plots:
            L += [f"![{scn}](plots/{p.name})", ""]
    L += ["## Ratios: infershift against each router", "", *ratio_table(runs), ""]
    L += ["## Routers", ""]
    descs = {}
    for info in meta["scenarios"].values():
        descs.update(info.get("descriptions", {}))
    L += [f"- **{n}**: {d}" for n, d in sorted(descs.items())]
    L += ["- **direct**: no router; the load generator spreads requests round robin over the servers", ""]
    L += ["Cores columns: process CPU seconds / wall seconds of the run, for the load generator, all "
          "simulator processes, the router's processes (Envoy + picker for infershift and upstream-epp), and "
          "the whole machine (includes other users' work). Picker CPU: CPU seconds of the picker process "
          "alone (infershift's picker, the upstream EPP) over the run, per request sent.", ""]
    return "\n".join(L)


def write(out: Path) -> Path:
    meta, runs = load(out)
    plots = plot(runs, out) if runs else []
    path = out / "REPORT.md"
    path.write_text(render(meta, runs, plots, out))
    return path
