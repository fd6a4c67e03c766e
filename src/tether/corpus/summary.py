"""A corpus at a glance: how much passed, on which principle, and how filtering moved the scores.

Written to the corpus directory as summary.json (for scripts), summary.md (a table to
read) and scores.png (score histograms of all candidates against the kept ones); the CLI
prints the same table. Rebuilt after sampling and whenever a caller asks.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from tether.corpus.config import SampleConfig
from tether.corpus.store import CorpusDir
from tether.infra import atomic


def summarize(corpus: CorpusDir, config: SampleConfig) -> dict:
    candidates, kept = corpus.candidates(), corpus.corpus()
    kept_ids = {r["id"] for r in kept}
    kept_candidates = [c for c in candidates if c["id"] in kept_ids]
    principles = corpus.meta()["principles"]
    rows = {}
    for name in principles + ["total"]:
        def values(group, name=name):
            return np.array([c["total"] if name == "total" else c["scores"][name] for c in group], dtype=float)
        row = {"all": _describe(values(candidates)), "kept": _describe(values(kept_candidates))}
        if name != "total":
            row["threshold"] = config.threshold_for(name)
            row["pass_rate"] = _rate(sum(c["scores"][name] >= row["threshold"] for c in candidates), len(candidates))
        rows[name] = row
    trips = Counter(reason.split(" ")[0] for c in candidates if c["reason"].startswith("monitor: ")
                    for reason in c["reason"].removeprefix("monitor: ").split("; "))
    passed = sum(c["status"] == "kept" for c in candidates)
    return {
        "candidates": len(candidates), "prompts": len({c["prompt_index"] for c in candidates}),
        "kept_by_sampler": passed, "acceptance_rate": _rate(passed, len(candidates)),
        "in_corpus": len(kept), "audit_decisions": len(corpus.decisions()), "monitor_rejections": dict(trips),
        "search": config.search, "keep": config.keep, "principles": rows,
    }


def write_summary(corpus: CorpusDir, config: SampleConfig) -> dict:
    summary = summarize(corpus, config)
    atomic.write_json(corpus.path / "summary.json", summary)
    atomic.write_text(corpus.path / "summary.md", markdown(summary))
    _plot(corpus, summary)
    return summary


def table_rows(summary: dict) -> list[list[str]]:
    """principle, threshold, pass rate, mean/median of all candidates, mean/median of the kept."""
    out = []
    for name, row in summary["principles"].items():
        a, k = row["all"], row["kept"]
        out.append([name, f"{row['threshold']:g}" if "threshold" in row else "", _pct(row.get("pass_rate")),
                    f"{a['mean']:.2f} / {a['median']:.2f}" if a["n"] else "–",
                    f"{k['mean']:.2f} / {k['median']:.2f}" if k["n"] else "–"])
    return out


HEADER = ["principle", "threshold", "pass rate", "all: mean / median", "kept: mean / median"]


def markdown(summary: dict) -> str:
    lines = [
        "# Corpus summary", "",
        f"{summary['candidates']} candidates for {summary['prompts']} prompts ({summary['search']} search, "
        f"keep {summary['keep']}); {summary['kept_by_sampler']} kept by the sampler "
        f"(acceptance rate {_pct(summary['acceptance_rate'])}); {summary['in_corpus']} in corpus.jsonl after "
        f"{summary['audit_decisions']} audit decision(s).", "",
        "| " + " | ".join(HEADER) + " |", "|" + " --- |" * len(HEADER),
        *("| " + " | ".join(r) + " |" for r in table_rows(summary)), "",
        "Monitor rejections: " + (", ".join(f"{k} {v}" for k, v in summary["monitor_rejections"].items()) or "none"),
        "", "![score distributions](scores.png)", "",
    ]
    return "\n".join(lines)


def _plot(corpus: CorpusDir, summary: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    candidates = corpus.candidates()
    kept_ids = {r["id"] for r in corpus.corpus()}
    names = list(summary["principles"])
    fig, axes = plt.subplots(1, len(names), figsize=(4 * len(names), 3), squeeze=False)
    for ax, name in zip(axes[0], names):
        def values(group, name=name):
            return [c["total"] if name == "total" else c["scores"][name] for c in group]
        every = values(candidates)
        bins = np.histogram_bin_edges(every, bins=20) if every else 10
        ax.hist(every, bins=bins, alpha=0.5, label="all candidates")
        ax.hist(values([c for c in candidates if c["id"] in kept_ids]), bins=bins, alpha=0.7, label="in corpus")
        if "threshold" in summary["principles"][name]:
            ax.axvline(summary["principles"][name]["threshold"], color="k", linestyle="--", linewidth=1)
        ax.set_title(name)
        ax.set_xlabel("score (log-odds)")
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    atomic.write_figure(corpus.path / "scores.png", fig)


def _describe(values: np.ndarray) -> dict:
    if not len(values):
        return {"n": 0}
    return {"n": len(values), "mean": round(float(values.mean()), 4), "median": round(float(np.median(values)), 4),
            "p10": round(float(np.percentile(values, 10)), 4), "p90": round(float(np.percentile(values, 90)), 4)}


def _rate(part: int, whole: int) -> float:
    return round(part / whole, 4) if whole else 0.0


def _pct(rate: float | None) -> str:
    return "" if rate is None else f"{100 * rate:.0f}%"
