"""What a rollout shows: a table per step (weights, canary vs stable for every gate, requests
seen, verdict), and at the end a Markdown report and a PNG timeline of weights and SLIs."""
from __future__ import annotations

import json
from pathlib import Path

from rich.table import Table

from infershift.spec.rollouts import Rollout

from .controller import Outcome, Step
from .decide import LABELS, GateResult


def _value(gate: str, v: float | None) -> str:
    if v is None:
        return "-"
    if gate.endswith("_p90"):
        return f"{v * 1000:.1f} ms"
    if gate.endswith("_rate"):
        return f"{v:.2%}"
    return f"{v:.0f} tok/s"


def _limit(g: GateResult) -> str:
    if g.limit is None:
        return "-"
    return ("≥ " if g.gate == "output_tokens_per_second" else "≤ ") + _value(g.gate, g.limit)


def _step_name(ro: Rollout, entry: Step) -> str:
    return "pinned" if entry.step < 0 else f"{entry.step + 1}/{len(ro.steps)}"


def step_table(name: str, ro: Rollout, entry: Step) -> Table:
    r = entry.result
    t = Table(title=f"rollout {name}: step {_step_name(ro, entry)}, canary {entry.canary_percent}% / stable "
                    f"{100 - entry.canary_percent}%: {r.verdict.upper()} ({r.canary_requests:.0f} canary, "
                    f"{r.stable_requests:.0f} stable responses)", title_justify="left")
    for col in ("gate", "canary", "stable", "limit", "verdict"):
        t.add_column(col, justify="left" if col in ("gate", "verdict") else "right")
    colour = {"pass": "green", "fail": "red", "wait": "yellow"}
    for g in r.gates:
        t.add_row(g.label, _value(g.gate, g.canary), _value(g.gate, g.stable), _limit(g),
                  f"[{colour[g.verdict]}]{g.verdict}[/]" + (f" {g.reason}" if g.verdict == "fail" else ""))
    return t


def _last_per_step(history: list[Step]) -> list[Step]:
    out: dict[int, Step] = {}
    for h in history:
        out[h.step] = h
    return [out[k] for k in sorted(out)]


def markdown(name: str, ro: Rollout, outcome: Outcome, queries: dict[str, list[str]], source: str,
             png: str | None = None) -> str:
    what = f"route `{ro.route}`: pool `{ro.stable}` → `{ro.canary}`" if ro.route else \
        f"pool `{ro.pool}`, model `{ro.model}`: target `{ro.stable}` → `{ro.canary}`"
    lines = [f"# Rollout `{name}`: {outcome.phase}", "", f"{what}; steps {ro.steps} (canary %), dwell {ro.dwell}, "
             f"at least {ro.min_requests} canary responses per step, on failure: {ro.on_failure}.", "",
             f"**Result:** {outcome.phase}: {outcome.message}", ""]
    if png:
        lines += [f"![timeline]({png})", ""]
    if outcome.shadow is not None and ro.shadow_first is not None:
        lines += shadow_markdown(ro, outcome.shadow)
    lines += ["| step | canary % | canary resp. | stable resp. | " + " | ".join(
        LABELS[g] for g in _gate_names(outcome)) + " | verdict |",
              "|---|---|---|---|" + "---|" * len(_gate_names(outcome)) + "---|"]
    for entry in _last_per_step(outcome.history):
        by = {g.gate: g for g in entry.result.gates}
        cells = []
        for gate in _gate_names(outcome):
            g = by.get(gate)
            cells.append("-" if g is None else f"{_value(gate, g.canary)} vs {_value(gate, g.stable)} "
                                               f"({_limit(g)}) {g.verdict}")
        lines.append(f"| {_step_name(ro, entry)} | {entry.canary_percent} | {entry.result.canary_requests:.0f} | "
                     f"{entry.result.stable_requests:.0f} | " + " | ".join(cells) + f" | {entry.result.verdict} |")
    lines += ["", f"Metrics: {source}. The queries showing the same numbers (`$window`: the step's length):", ""]
    for side, qs in queries.items():
        lines.append(f"- {side}:")
        lines += [f"  - `{q}`" for q in qs]
    lines += ["", "Decisions: no verdict before the minimum sample count; p90 gates fail only when the Wilson "
              "lower bound of the canary's share of requests over the limit exceeds 10 %; rate gates only when "
              "the lower bound of the canary's rate exceeds stable's upper bound + tolerance (or `max`), at "
              f"{ro.gates.confidence:.0%} confidence (infershift/rollout/decide.py).", ""]
    return "\n".join(lines)


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v * 1000:+.1f} ms"


def _share(v: float | None) -> str:
    return "-" if v is None else f"{v:.1%}"


def shadow_markdown(ro: Rollout, result) -> list[str]:
    """The shadow phase: the route's requests mirrored to the canary, answers paired by request id."""
    sf = ro.shadow_first
    assert sf is not None
    fields = type(sf).model_fields
    limits = ", ".join(f"{fields[k].alias or k} {v:g}" for k, v in sf.limits().items() if v is not None)
    lines = ["## Shadow phase", "",
             f"{sf.percent}% of route `{ro.route}`'s requests mirrored to `{ro.canary}` before any weight; the "
             f"stable pool's and the canary's answers paired by request id (infershift/shadow). Limits "
             f"({'totals' if sf.gate_on == 'all' else 'per target model'}, at least {sf.min_pairs} compared "
             f"pairs): {limits}.", "",
             f"**Verdict:** {result.verdict}: {result.reason}", "",
             "| model | pairs | compared | stable-only / canary-only | errors stable / canary | TTFT Δ p90 | "
             "e2e Δ p90 | length ratio | exact match | overlap |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for m, st in result.stats.items():
        ratio = "-" if st.length_ratio is None else f"{st.length_ratio:.2f}"
        overlap = "-" if st.overlap is None else f"{st.overlap:.3f}"
        lines.append(f"| {m} | {st.pairs} | {st.compared} | {st.unpaired_primary} / {st.unpaired_shadow} | "
                     f"{_share(st.primary_error_rate)} / {_share(st.shadow_error_rate)} | {_ms(st.ttft_delta(0.9))} | "
                     f"{_ms(st.e2e_delta(0.9))} | {ratio} | {_share(st.exact_match)} | {overlap} |")
    return lines + [""]


def _gate_names(outcome: Outcome) -> list[str]:
    names: list[str] = []
    for h in outcome.history:
        for g in h.result.gates:
            if g.gate not in names:
                names.append(g.gate)
    return names


def timeline_png(name: str, outcome: Outcome, path: Path) -> None:
    """Weights and each gate's canary/stable values over time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    history = outcome.history
    if not history:
        return
    t0 = history[0].at
    xs = [h.at - t0 for h in history]
    gates = _gate_names(outcome)
    fig, axes = plt.subplots(1 + len(gates), 1, figsize=(8, 2.0 * (1 + len(gates))), sharex=True)
    axes = list(axes) if len(gates) else [axes]
    axes[0].step(xs, [h.canary_percent for h in history], where="post", label="canary %")
    axes[0].step(xs, [100 - h.canary_percent for h in history], where="post", label="stable %")
    axes[0].set_ylabel("weight %")
    axes[0].set_title(f"rollout {name}: {outcome.phase}")
    axes[0].legend(loc="center right", fontsize=8)
    for ax, gate in zip(axes[1:], gates):
        def series(attr: str, gate: str = gate) -> list[float]:
            vals = []
            for h in history:
                g = next((x for x in h.result.gates if x.gate == gate), None)
                v = getattr(g, attr) if g is not None else None
                scale = 1000 if gate.endswith("_p90") else (100 if gate.endswith("_rate") else 1)
                vals.append(float("nan") if v is None else v * scale)
            return vals
        ax.plot(xs, series("canary"), label="canary")
        ax.plot(xs, series("stable"), label="stable")
        ax.plot(xs, series("limit"), linestyle="--", label="limit")
        ax.set_ylabel(LABELS[gate] + (" (ms)" if gate.endswith("_p90") else " (%)" if gate.endswith("_rate") else ""),
                      fontsize=8)
        ax.legend(loc="upper left", fontsize=7)
    axes[-1].set_xlabel("seconds")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def write(directory: Path, name: str, ro: Rollout, outcome: Outcome, queries: dict[str, list[str]],
          source: str) -> Path:
    """report.md, timeline.png and history.json (every poll, and each step's windows) in `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    png = directory / "timeline.png"
    timeline_png(name, outcome, png)
    md = directory / "report.md"
    md.write_text(markdown(name, ro, outcome, queries, source, png.name if png.exists() else None))
    (directory / "history.json").write_text(json.dumps(
        {"rollout": name, "phase": outcome.phase, "message": outcome.message,
         "polls": [h.to_json() for h in outcome.history], "windows": outcome.windows,
         "shadow": outcome.shadow.to_json() if outcome.shadow is not None else None}, indent=1))
    return md
