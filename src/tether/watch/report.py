"""`tether report RUN_DIR`: one self-contained HTML page showing when and how hacking began.

Plots (also saved as PNGs in RUN_DIR/report/): the train reward against the gold score,
token KL, and each monitor against step, with detector trips marked as red lines; then a
timeline of sample completions at chosen steps (best and worst by train score); and, when
a person has labeled the run's samples (RUN_DIR/labels.jsonl, or `--labels FILE`), how well
each logged signal agrees with them (`report_agreement`, also in report/agreement.json).
Works on a run still in progress: it reads whatever lines are there. All text is HTML-escaped.

Every input is checked before anything is written (a damaged config, log line or value
store is one line naming the file and line), so a refused report leaves the run untouched.
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


def parse_steps(text: str | None) -> list[int] | None:
    """'1,10,20' -> [1, 10, 20]; None or '' -> None (the default choice)."""
    if not text:
        return None
    try:
        return [int(s) for s in text.split(",")]
    except ValueError:
        raise TetherError(f"--steps {text!r}: write step numbers separated by commas, e.g. 1,10,20") from None


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _read_checked(path: Path, required: dict[str, type | str]) -> list[dict]:
    """A run log's records, each checked: `required` maps field -> str, or 'number' / 'step'."""
    records = jsonl.read(path)
    numbers = [n for n, raw in enumerate(path.read_bytes().split(b"\n")[:-1], 1) if raw.strip()] if records else []
    for n, row in zip(numbers, records):
        for name, kind in required.items():
            value = row.get(name)
            if kind == "step" and not (isinstance(value, int) and not isinstance(value, bool)):
                raise TetherError(f"{path}: line {n}: no integer `step`; is this a tether run log?")
            if kind == "number" and not _number(value):
                raise TetherError(f"{path}: line {n}: no `{name}` number")
            if kind is str and not isinstance(value, str):
                raise TetherError(f"{path}: line {n}: no `{name}` text")
        for key in PLOTTED & row.keys():
            if row[key] is not None and not _number(row[key]):
                raise TetherError(f"{path}: line {n}: `{key}` must be a number, got {type(row[key]).__name__}")
    return records


def _read_values(path: Path) -> list[dict]:
    if not path.exists():
        return []
    try:
        entries = json.loads(path.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        problem = f"{e.msg} at line {e.lineno}, column {e.colno}" if isinstance(e, json.JSONDecodeError) else "not UTF-8"
        raise TetherError(f"{path}: malformed JSON ({problem})") from None
    if not isinstance(entries, list) or not all(
            isinstance(v, dict) and isinstance(v.get("kind"), str) and isinstance(v.get("text"), str)
            and _number(v.get("credit")) and isinstance(v.get("count"), int) and isinstance(v.get("step"), int)
            for v in entries):
        raise TetherError(f"{path}: expected a list of values (kind, credit, count, step, text)")
    return entries


def build_report(run_dir: str | Path, sample_steps: list[int] | None = None, per_step: int = 2,
                 labels: list[Path] = ()) -> Path:
    """Write RUN_DIR/report/ (report.html, the plots, agreement.json); `labels` are labels files beyond RUN_DIR/labels.jsonl."""
    from tether.watch.report_agreement import run_agreement

    run = RunDir(run_dir)
    if not run.path.exists():
        raise TetherError(f"{run.path}: no such run directory")
    if not run.path.is_dir():
        raise TetherError(f"{run.path}: not a folder; give a tether run directory")
    config = run.config() if run.has_run() else {}
    metrics = _read_checked(run.path / "metrics.jsonl", {"step": "step"})
    if not metrics:
        raise TetherError(f"{run.path}: no metrics.jsonl lines yet; is this a tether run directory?")
    samples = _read_checked(run.path / "samples.jsonl", {"step": "step", "prompt": str, "completion": str, "train": "number"})
    events = jsonl.read(run.path / "events.jsonl")
    trips = [e for e in events if e.get("event") == "detector"]
    for trip in trips:
        if not isinstance(trip.get("step"), int) or not all(
                isinstance(d, dict) and isinstance(d.get("detector"), str) and _number(d.get("value"))
                and _number(d.get("limit")) for d in trip.get("detectors", [])):
            raise TetherError(f"{run.path / 'events.jsonl'}: a detector event without step, detector, value and limit")
    values = _read_values(run.path / "values" / "values.json")
    agreement = run_agreement(run.path, samples, list(labels))

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = run.path / "report"
    out.mkdir(exist_ok=True)

    figures = []
    for name, title, series in PLOTS:
        present = [(k, label) for k, label in series if any(m.get(k) is not None for m in metrics)]
        if not present:
            continue
        fig, ax = plt.subplots(figsize=(7, 3.2))
        for key, label in present:
            points = [(m["step"], m[key]) for m in metrics if m.get(key) is not None]
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
    page = _html(run, config, metrics, samples, trips, values, figures, sorted(set(s for s in chosen if s in steps)),
                 per_step, out, agreement)
    atomic.write_json(out / "agreement.json", agreement)
    return atomic.write_text(out / "report.html", page)


PLOTTED = frozenset(key for _, _, series in PLOTS for key, _ in series) | {"gold", "embedding_kl", "utility"}


def _spread(steps: list[int], k: int) -> list[int]:
    if len(steps) <= k:
        return steps
    return [steps[round(i * (len(steps) - 1) / (k - 1))] for i in range(k)]


def _html(run, config, metrics, samples, trips, values, figures, chosen, per_step, out, agreement) -> str:
    from tether.watch.report_agreement import agreement_html

    e = html.escape
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
    if values:  # the utility function's store: what the run learned to value
        entries = sorted(values, key=lambda v: (v["kind"] != "terminal", -v["credit"]))
        parts.append("<h2>Values of the utility function</h2><table class='values'><tr><th>kind</th><th>credit</th>"
                     "<th>count</th><th>step</th><th>text</th></tr>")
        parts += [f"<tr><td>{e(v['kind'])}</td><td>{v['credit']:.3f}</td><td>{v['count']}</td><td>{v['step']}</td>"
                  f"<td>{e(v['text'])}</td></tr>" for v in entries[:30]]
        parts.append("</table><p>All of them, with the run's nearest texts: <code>tether values RUN_DIR</code>.</p>")
    parts.append(agreement_html(agreement, run.path))
    parts.append("<h2>Samples over time</h2>")
    for step in chosen:
        rows = sorted((s for s in samples if s["step"] == step), key=lambda s: -s["train"])
        picked = rows[:per_step] + rows[-per_step:] if len(rows) > 2 * per_step else rows
        parts.append(f"<h3 id='step-{step}'>step {step}</h3>")
        for s in picked:
            others = "".join(f", {name} {s[name]:+.2f}" for name in ("gold", "embedding_kl", "utility")
                             if s.get(name) is not None)
            parts.append(f"<div class='sample' data-step='{step}'><b>train {s['train']:+.2f}{others}</b>\n"
                         f"<i>{e(s['prompt'])}</i>{e(s['completion'])}</div>")
    parts.append("</body></html>")
    return "\n".join(parts)
