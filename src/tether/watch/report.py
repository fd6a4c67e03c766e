"""`tether report RUN_DIR`: one self-contained HTML page showing when and how hacking began.

Plots (also saved as PNGs in RUN_DIR/report/): the train reward against the gold score,
token KL, and each monitor against step, with detector trips marked as red lines; then a
timeline of sample completions at chosen steps (best and worst by train score). Works on
a run still in progress: it reads whatever lines are there. All text is HTML-escaped.
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path

from tether.errors import TetherError
from tether.infra import atomic, jsonl
from tether.infra.rundir import RunDir

PLOTS = [  # (file name, title, [(metric key, label)])
    ("reward.png", "train reward vs gold score", [("reward/train", "train reward"), ("gold/score", "gold score")]),
    ("kl.png", "token KL to the base model", [("kl", "KL")]),
    ("entropy.png", "policy entropy", [("entropy", "entropy")]),
    ("affirmation.png", "affirmations and special-token strings",
     [("monitor/affirmation_rate", "affirmation rate"), ("monitor/special_token_rate", "special-token rate")]),
    ("repetition.png", "repetition", [("monitor/repetition", "repeated 3-gram share")]),
    ("repeat_run.png", "longest back-to-back repeat", [("monitor/longest_repeat_run", "longest run")]),
    ("diversity.png", "diversity across the batch", [("monitor/distinct_1", "distinct-1"), ("monitor/distinct_2", "distinct-2")]),
    ("drift.png", "embedding drift from the base", [("drift/embedding", "cosine distance")]),
    ("defenses.png", "the defenses' terms in the reward (weighted), beside the constitution's",
     [("reward/train", "constitution"), ("defense/embedding_kl/weighted", "embedding KL penalty"),
      ("defense/utility/weighted", "utility"), ("reward/total", "total reward")]),
    ("defense_share.png", "each defense's share of the reward (|weighted term| / sum of all)",
     [("defense/embedding_kl/share", "embedding KL"), ("defense/utility/share", "utility")]),
    ("values.png", "instrumental values learned by the utility function", [("defense/utility/values", "values stored")]),
    ("time.png", "seconds per step, and tether's share of it",
     [("time/step", "whole step"), ("time/train_judge", "train judge"), ("time/gold_judge", "gold judge"),
      ("time/drift", "drift"), ("time/monitors", "text monitors"), ("time/embedding_kl", "embedding KL"),
      ("time/utility", "utility")]),
]


def build_report(run_dir: str | Path, sample_steps: list[int] | None = None, per_step: int = 2) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run = RunDir(run_dir)
    metrics = jsonl.read(run.path / "metrics.jsonl")
    if not metrics:
        raise TetherError(f"{run.path}: no metrics.jsonl lines yet; is this a tether run directory?")
    samples = jsonl.read(run.path / "samples.jsonl")
    events = jsonl.read(run.path / "events.jsonl")
    trips = [e for e in events if e.get("event") == "detector"]
    out = run.path / "report"
    out.mkdir(exist_ok=True)

    figures = []
    for name, title, series in PLOTS:
        present = [(k, label) for k, label in series if any(k in m for m in metrics)]
        if not present:
            continue
        fig, ax = plt.subplots(figsize=(7, 3.2))
        for key, label in present:
            points = [(m["step"], m[key]) for m in metrics if key in m]
            ax.plot(*zip(*points), marker=".", label=label)
        for trip in trips:
            ax.axvline(trip["step"], color="red", linestyle="--", alpha=0.7)
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend(loc="best", fontsize=8)
        fig.tight_layout()
        atomic.write_figure(out / name, fig)
        figures.append((name, title))

    steps = sorted({s["step"] for s in samples})
    chosen = sample_steps or _spread(steps, 5) + [t["step"] for t in trips]
    page = _html(run, metrics, samples, trips, figures, sorted(set(s for s in chosen if s in steps)), per_step, out)
    return atomic.write_text(out / "report.html", page)


def _spread(steps: list[int], k: int) -> list[int]:
    if len(steps) <= k:
        return steps
    return [steps[round(i * (len(steps) - 1) / (k - 1))] for i in range(k)]


def _html(run, metrics, samples, trips, figures, chosen, per_step, out) -> str:
    e = html.escape
    config = run.config() if run.has_run() else {}
    state = "finished" if run.is_finished() else f"in progress (step {metrics[-1]['step']})"
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>tether report</title>",
        "<style>body{font-family:sans-serif;max-width:1000px;margin:auto}img{max-width:100%}"
        ".trip{color:#b00}.sample{border-left:3px solid #ccc;padding-left:8px;margin:6px 0;white-space:pre-wrap}"
        "td,th{padding:2px 8px;text-align:left}</style></head><body>",
        f"<h1>tether run: {e(str(run.path.name))}</h1>",
        f"<p>{e(state)}; policy {e(str(config.get('policy_model', '?')))}, algorithm {e(str(config.get('algorithm', '?')))}, "
        f"constitution {e(str(config.get('constitution', '?')))}, gold {e(str(config.get('gold_constitution')))}.</p>",
        "<h2>Detector trips</h2>",
    ]
    if trips:
        parts.append("<ul>" + "".join(
            f"<li class='trip' data-step='{t['step']}'>step {t['step']}: "
            + e(", ".join(f"{d['detector']} = {d['value']:.3g} (limit {d['limit']:.3g})" for d in t["detectors"]))
            + "</li>" for t in trips) + "</ul>")
    else:
        parts.append("<p>none</p>")
    parts.append("<h2>Metrics</h2>")
    for name, title in figures:
        data = base64.b64encode((out / name).read_bytes()).decode()
        parts.append(f"<figure><img class='plot' alt='{e(title)}' src='data:image/png;base64,{data}'>"
                     f"<figcaption>{e(title)}</figcaption></figure>")
    values = run.path / "values" / "values.json"
    if values.exists():  # the utility function's store: what the run learned to value
        entries = sorted(json.loads(values.read_text(encoding="utf-8")), key=lambda v: (v["kind"] != "terminal", -v["credit"]))
        parts.append("<h2>Values of the utility function</h2><table class='values'><tr><th>kind</th><th>credit</th>"
                     "<th>count</th><th>step</th><th>text</th></tr>")
        parts += [f"<tr><td>{e(v['kind'])}</td><td>{v['credit']:.3f}</td><td>{v['count']}</td><td>{v['step']}</td>"
                  f"<td>{e(v['text'])}</td></tr>" for v in entries[:30]]
        parts.append("</table><p>All of them, with the run's nearest texts: <code>tether values RUN_DIR</code>.</p>")
    parts.append("<h2>Samples over time</h2>")
    for step in chosen:
        rows = sorted((s for s in samples if s["step"] == step), key=lambda s: -s["train"])
        picked = rows[:per_step] + rows[-per_step:] if len(rows) > 2 * per_step else rows
        parts.append(f"<h3 id='step-{step}'>step {step}</h3>")
        for s in picked:
            others = "".join(f", {name} {s[name]:+.2f}" for name in ("gold", "embedding_kl", "utility") if name in s)
            parts.append(f"<div class='sample' data-step='{step}'><b>train {s['train']:+.2f}{others}</b>\n"
                         f"<i>{e(s['prompt'])}</i>{e(s['completion'])}</div>")
    parts.append("</body></html>")
    return "\n".join(parts)
