"""A blend sweep's result and its files: sweep.md, sweep.csv, sweep.json, sweep.png and samples.jsonl."""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path

from tether.infra import atomic
from tether.watch.metrics import label


@dataclass
class Sweep:
    rows: list[dict]  # one per alpha: scores, KL, drift, monitors, pareto, recommended
    rule: str  # the recommendation rule used
    reason: str  # why the recommended alpha, in one line
    out: Path
    settings: dict = field(default_factory=dict)

    @property
    def recommended(self) -> dict:
        return next(r for r in self.rows if r["recommended"])


COLUMNS = [  # (row key, table header, format)
    ("alpha", "A", "{:g}"), ("train", "train", "{:+.3f}"), ("gold", "gold", "{:+.3f}"), ("kl", "KL", "{:.4f}"),
    ("drift", "drift", "{:.3f}"),
    *[(key, label(key), "{:g}" if key == "monitor/longest_repeat_run" else "{:.3f}")
      for key in ("monitor/affirmation_rate", "monitor/repetition", "monitor/longest_repeat_run", "monitor/distinct_1",
                  "monitor/distinct_2")],
    ("trips", "trips", "{}"),
]


def sweep_table(sweep: Sweep) -> tuple[list[str], list[list[str]]]:
    """Header and formatted rows, for the console table and sweep.md."""
    shown = [c for c in COLUMNS if c[0] in sweep.rows[0]]
    header = [title for _, title, _ in shown] + ["pareto", "recommended"]
    rows = [[fmt.format(row[key]) for key, _, fmt in shown]
            + ["yes" if row["pareto"] else "", "yes" if row["recommended"] else ""] for row in sweep.rows]
    return header, rows


def _write_sweep(sweep: Sweep, samples: list[dict]) -> None:
    header, rows = sweep_table(sweep)
    markdown = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    markdown += ["| " + " | ".join(row) + " |" for row in rows]
    atomic.write_text(sweep.out / "sweep.md", "\n".join([
        f"# Checkpoint blending sweep: {sweep.settings['tuned']}", "",
        f"Weights: base + A * (tuned - base); base {sweep.settings['base']}. "
        f"Pareto front on {', '.join(sweep.settings['pareto_goals'])}.", "", *markdown, "",
        f"Recommended: A={sweep.recommended['alpha']:g}. Rule: {sweep.rule}. {sweep.reason}.", ""]))
    atomic.write_records(sweep.out / "sweep.csv", sweep.rows)
    atomic.write_json(sweep.out / "sweep.json", {"settings": sweep.settings, "rule": sweep.rule, "reason": sweep.reason,
                                                 "recommended_alpha": sweep.recommended["alpha"], "rows": sweep.rows})
    atomic.write_records(sweep.out / "samples.jsonl", samples)
    atomic.write_bytes(sweep.out / "sweep.png", _plot(sweep.rows))


def _plot(rows: list[dict]) -> bytes:
    """Gold against train and gold against KL (train against KL without a gold judge); A beside each point."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("train", "gold"), ("kl", "gold")] if "gold" in rows[0] else [("kl", "train")]
    labels = {"train": "train judge score", "gold": "gold judge score", "kl": "token KL to the base (nats/token)"}
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4.2), squeeze=False)
    for ax, (x, y) in zip(axes[0], panels):
        ax.plot([r[x] for r in rows], [r[y] for r in rows], color="grey", alpha=0.5, zorder=1)
        ax.scatter([r[x] for r in rows], [r[y] for r in rows], color="tab:blue", zorder=2, label="blend")
        front = [r for r in rows if r["pareto"]]
        ax.scatter([r[x] for r in front], [r[y] for r in front], s=160, facecolors="none", edgecolors="red",
                   linewidths=1.5, zorder=3, label="Pareto front")
        chosen = next(r for r in rows if r["recommended"])
        ax.scatter([chosen[x]], [chosen[y]], marker="*", s=220, color="gold", edgecolors="black", zorder=4,
                   label="recommended")
        for r in rows:
            ax.annotate(f"A={r['alpha']:g}", (r[x], r[y]), textcoords="offset points", xytext=(6, 6), fontsize=8)
        ax.set_xlabel(labels[x])
        ax.set_ylabel(labels[y])
        ax.grid(alpha=0.3)
        ax.legend(loc="best", fontsize=8)
    fig.suptitle("checkpoint blending: base + A * (tuned - base)")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90)
    plt.close(fig)
    return buffer.getvalue()
