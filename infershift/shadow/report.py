"""The shadow report's outputs: a rich table, Markdown, a PNG and the numbers as JSON."""
from __future__ import annotations

import json
from pathlib import Path

from rich.table import Table

from .compare import ALL, Gate, ModelStats, Pairing

COLUMNS = ("target model", "pairs", "unpaired p/s", "errors p/s", "TTFT Δ ms p50/p90", "e2e Δ ms p50/p90",
           "length ratio", "exact match", "overlap")


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v * 1000:+.1f}"


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{v:.1%}"


def _num(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}"


def row(st: ModelStats) -> list[str]:
    return [st.model, str(st.pairs), f"{st.unpaired_primary}/{st.unpaired_shadow}",
            f"{_pct(st.primary_error_rate)}/{_pct(st.shadow_error_rate)}",
            f"{_ms(st.ttft_delta(0.5))}/{_ms(st.ttft_delta(0.9))}", f"{_ms(st.e2e_delta(0.5))}/{_ms(st.e2e_delta(0.9))}",
            _num(st.length_ratio), _pct(st.exact_match), _num(st.overlap)]


def table(stats: dict[str, ModelStats], title: str, verdicts: dict[str, list[str]] | None = None) -> Table:
    t = Table(title=title, title_justify="left")
    for c in COLUMNS:
        t.add_column(c, justify="left" if c == "target model" else "right")
    if verdicts is not None:
        t.add_column("gate")
    for name, st in stats.items():
        cells = row(st)
        if verdicts is not None:
            failed = verdicts.get(name)
            cells.append("-" if failed is None else ("[green]pass[/]" if not failed else "[red]fail[/]"))
        t.add_row(*cells, style="bold" if name == ALL else None)
    return t


def markdown(stats: dict[str, ModelStats], title: str, pairing: Pairing, sources: list[str],
             verdicts: dict[str, list[str]] | None = None, gate: Gate | None = None) -> str:
    lines = [f"# {title}", "",
             f"{len(pairing.pairs)} request ids with both answers, {len(pairing.primaries)} with only the "
             f"primary's, {len(pairing.shadows)} with only the shadow's"
             + (f", {pairing.duplicates} duplicate answers ignored" if pairing.duplicates else "") + ".",
             "Deltas are shadow minus primary; errors are answers other than 200 (primary / shadow); length "
             "ratio is the median shadow/primary output tokens; overlap is the mean token-set Jaccard "
             "index (infershift/shadow/README.md).", ""]
    cols = list(COLUMNS) + (["gate"] if verdicts is not None else [])
    lines += ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for name, st in stats.items():
        cells = row(st)
        if verdicts is not None:
            failed = verdicts.get(name)
            cells.append("-" if failed is None else ("pass" if not failed else "fail: " + "; ".join(failed)))
        lines.append("| " + " | ".join(cells) + " |")
    if gate is not None:
        lines += ["", "Gate: " + ", ".join(f"{k} {v}" for k, v in vars(gate).items() if v is not None)]
    lines += ["", "Sources: " + ", ".join(f"`{s}`" for s in sources), ""]
    return "\n".join(lines)


def png(stats: dict[str, ModelStats], title: str, path: Path) -> None:
    """Per target model: TTFT and e2e deltas (box plots), exact match and overlap (bars)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = [m for m in stats if m != ALL] or [ALL]
    fig, axes = plt.subplots(1, 3, figsize=(13, 4.2))
    for ax, attr, label in ((axes[0], "ttft_deltas", "TTFT delta (ms)"), (axes[1], "e2e_deltas", "e2e delta (ms)")):
        data = [[v * 1000 for v in getattr(stats[m], attr)] or [0.0] for m in models]
        ax.boxplot(data)
        ax.set_xticks(range(1, len(models) + 1), models, rotation=20, fontsize=8)
        ax.axhline(0, color="grey", linewidth=0.8)
        ax.set_title(label + ", shadow − primary", fontsize=10)
    ax = axes[2]
    xs = range(len(models))
    ax.bar([x - 0.2 for x in xs], [stats[m].exact_match or 0 for m in models], width=0.4, label="exact match")
    ax.bar([x + 0.2 for x in xs], [stats[m].overlap or 0 for m in models], width=0.4, label="overlap (Jaccard)")
    ax.set_xticks(list(xs), models, rotation=20, fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=8, loc="lower center")
    ax.set_title("answers alike", fontsize=10)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write(out: Path, stats: dict[str, ModelStats], title: str, pairing: Pairing, sources: list[str],
          verdicts: dict[str, list[str]] | None = None, gate: Gate | None = None) -> Path:
    """report.md, shadow.png and summary.json in `out`; returns the Markdown's path."""
    out.mkdir(parents=True, exist_ok=True)
    md = out / "report.md"
    md.write_text(markdown(stats, title, pairing, sources, verdicts, gate))
    png(stats, title, out / "shadow.png")
    (out / "summary.json").write_text(json.dumps(
        {"title": title, "sources": sources, "models": [st.summary() for st in stats.values()],
         "gate": None if verdicts is None else {k: v for k, v in verdicts.items()}}, indent=2))
    return md
