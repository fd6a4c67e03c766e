"""The report's one-screen grid: small multiples of a run's signals on a shared step axis.

    grid_figure(metrics, trips, stop=8)   # a matplotlib Figure, or None when nothing is logged

One panel per signal the run logged (train reward against the gold score, KL, drift, the
shift test's p-value, each text monitor, entropy), all sharing the step axis, so a trip can
be read across every panel at once: each detector trip is a red dashed line in every panel,
the steps from the first trip on are shaded, a stop is a black line, and a trip is marked
with a red cross on the panel of the series its detector watches.
"""

from __future__ import annotations

import math

from tether.watch.verdict import metric_of

PANELS = [  # (title, [(metric key, legend label)], log scale)
    ("train reward vs gold", [("reward/train", "train"), ("gold/score", "gold")], False),
    ("token KL", [("kl", "KL")], False),
    ("embedding drift", [("drift/embedding", "drift")], False),
    ("shift p-value (low: changed)", [("shift/p_value", "p")], True),
    ("affirmation rate", [("monitor/affirmation_rate", "affirmations")], False),
    ("special-token rate", [("monitor/special_token_rate", "special")], False),
    ("repetition (3-grams)", [("monitor/repetition", "repeat")], False),
    ("longest repeat run", [("monitor/longest_repeat_run", "run")], False),
    ("diversity", [("monitor/distinct_1", "distinct-1"), ("monitor/distinct_2", "distinct-2")], False),
    ("words per completion", [("monitor/words", "words")], False),
    ("judge disagreement", [("monitor/judge_disagreement", "disagreement")], False),
    ("entropy", [("entropy", "entropy")], False),
]
COLUMNS = 4
ROW_INCHES = 1.55  # with 3 rows the grid is about 500 px tall at 100 dpi: it fits a 800 px screen below the verdict
WIDTH_INCHES = 12.0
DPI = 100


def series(metrics: list[dict], key: str) -> list[tuple[int, float]]:
    return [(m["step"], m[key]) for m in metrics
            if isinstance(m.get(key), (int, float)) and not isinstance(m[key], bool)]


def grid_figure(metrics: list[dict], trips: list[dict], stop: int | None = None):
    """The small multiples as one Figure (sharex), or None when the run logged none of the panels' series."""
    import matplotlib.pyplot as plt

    panels = [(title, [(k, lab) for k, lab in keys if series(metrics, k)], log) for title, keys, log in PANELS]
    panels = [p for p in panels if p[1]]
    if not panels:
        return None
    columns = min(COLUMNS, len(panels))
    rows = math.ceil(len(panels) / columns)
    fig, axes = plt.subplots(rows, columns, sharex=True, squeeze=False,
                             figsize=(WIDTH_INCHES, ROW_INCHES * rows + 0.35))
    last = max(m["step"] for m in metrics)
    for ax, (title, keys, log) in zip(axes.flat, panels):
        _panel(ax, metrics, title, keys, log, trips, stop, last)
    for i, ax in enumerate(axes.flat):
        if i >= len(panels):
            ax.axis("off")
        elif i + columns >= len(panels):  # the lowest panel of its column shows the step axis
            ax.xaxis.set_tick_params(labelbottom=True)
            ax.set_xlabel("step", fontsize=7, labelpad=1)
    fig.tight_layout(pad=0.4, h_pad=0.3, w_pad=0.6)
    return fig


def _panel(ax, metrics, title, keys, log, trips, stop, last) -> None:
    from matplotlib.ticker import FuncFormatter, MaxNLocator, NullFormatter

    for key, label in keys:
        ax.plot(*zip(*series(metrics, key)), marker=".", markersize=3, linewidth=1.2, label=label)
    steps = sorted({t["step"] for t in trips})
    if steps:
        ax.axvspan(steps[0], max(last, steps[0]), color="red", alpha=0.06, linewidth=0)
    for step in steps:
        ax.axvline(step, color="red", linestyle="--", linewidth=0.9, alpha=0.8)
    if stop is not None:
        ax.axvline(stop, color="black", linewidth=1.2)
    for trip in trips:  # a cross where the detector's own series tripped
        for key, _ in keys:
            if metric_of(trip["detector"]) == key:
                hit = [v for s, v in series(metrics, key) if s == trip["step"]]
                if hit:
                    ax.plot([trip["step"]], hit[:1], marker="x", color="red", markersize=7, markeredgewidth=1.8,
                            clip_on=False, zorder=5)
    if log:
        ax.set_yscale("log", nonpositive="clip")
        ax.yaxis.set_major_formatter(FuncFormatter(lambda y, _: f"{y:.2g}"))
        ax.yaxis.set_minor_formatter(NullFormatter())
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_title(title, fontsize=8.5, pad=2)
    ax.tick_params(labelsize=7, length=2, pad=1)
    ax.grid(alpha=0.3)
    if len(keys) > 1:
        ax.legend(fontsize=6.5, loc="best", frameon=False, handlelength=1.2)
