"""`tether report RUN_DIR`: one self-contained HTML page that says whether, from when and why a run hacked.

Top to bottom (`report_page`): the verdict (`verdict.decide` on the run's own files: healthy,
hacking likely from step k, or stopped at step k, with the signals behind it and a person's
labels); one screen of small multiples of reward, gold, KL, drift, shift and the monitors on
a shared step axis, trips marked (`report_grid`, also report/grid.png); the samples side by
side before, at and after the first trip; then the detail: the trips, one plot per metric
(PLOTS, also PNGs in RUN_DIR/report/), the utility's values, how each logged signal agrees
with a person's labels (RUN_DIR/labels.jsonl or `--labels FILE`: `report_agreement`, also
report/agreement.json) and the samples over time (best and worst by train score). The
verdict is also written to report/verdict.json. Works on a run still in progress: it reads
whatever lines are there. All text is HTML-escaped.

Every input is checked before anything is written (a damaged config, log line, finished.json
or value store is one line naming the file and line), so a refused report leaves the run untouched.
"""

from __future__ import annotations

import base64
import html
import json
from dataclasses import asdict
from pathlib import Path

from tether.errors import TetherError
from tether.infra import atomic, jsonl
from tether.infra.rundir import RunDir
from tether.watch import report_page, verdict_files
from tether.watch.report_agreement import agreement_html, how_to_label, label_files, run_agreement
from tether.watch.report_grid import DPI as GRID_DPI
from tether.watch.report_grid import grid_figure
from tether.watch.verdict import decide, first_trips

PLOTS = [  # (file name, title, [(metric key, label)])
    ("reward.png", "train reward vs gold score", [("reward/train", "train reward"), ("gold/score", "gold score")]),
    ("kl.png", "token KL to the base model", [("kl", "KL")]),
    ("entropy.png", "policy entropy", [("entropy", "entropy")]),
    ("affirmation.png", "affirmations and special-token strings",
     [("monitor/affirmation_rate", "affirmation rate"), ("monitor/special_token_rate", "special-token rate")]),
    ("repetition.png", "repetition", [("monitor/repetition", "repeated 3-gram share")]),
    ("repeat_run.png", "longest back-to-back repeat", [("monitor/longest_repeat_run", "longest run")]),
    ("diversity.png", "diversity across the batch",
     [("monitor/distinct_1", "distinct-1"), ("monitor/distinct_2", "distinct-2")]),
    ("drift.png", "embedding drift from the base", [("drift/embedding", "cosine distance")]),
    ("defenses.png", "the defenses' terms in the reward (weighted), beside the constitution's",
     [("reward/train", "constitution"), ("defense/embedding_kl/weighted", "embedding KL penalty"),
      ("defense/utility/weighted", "utility"), ("reward/total", "total reward")]),
    ("defense_share.png", "each defense's share of the reward (|weighted term| / sum of all)",
     [("defense/embedding_kl/share", "embedding KL"), ("defense/utility/share", "utility")]),
    ("values.png", "instrumental values learned by the utility function",
     [("defense/utility/values", "values stored")]),
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
    numbered = jsonl.read_numbered(path)
    for n, row in numbered:
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
    return [row for _, row in numbered]


def _read_values(path: Path) -> list[dict]:
    if not path.exists():
        return []
    try:
        entries = json.loads(path.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        problem = (f"{e.msg} at line {e.lineno}, column {e.colno}" if isinstance(e, json.JSONDecodeError)
                   else "not UTF-8")
        raise TetherError(f"{path}: malformed JSON ({problem})") from None
    if not isinstance(entries, list) or not all(
            isinstance(v, dict) and isinstance(v.get("kind"), str) and isinstance(v.get("text"), str)
            and _number(v.get("credit")) and isinstance(v.get("count"), int) and isinstance(v.get("step"), int)
            for v in entries):
        raise TetherError(f"{path}: expected a list of values (kind, credit, count, step, text)")
    return entries


def build_report(run_dir: str | Path, sample_steps: list[int] | None = None, per_step: int = 2,
                 labels: list[Path] = ()) -> Path:
    """Write RUN_DIR/report/ (report.html, the plots, agreement.json, verdict.json).

    `labels`: labels files beyond RUN_DIR/labels.jsonl; `sample_steps`: the detail's sample steps.
    """
    run = RunDir(run_dir)
    config, metrics, samples, events, values = _read_run(run)
    agreement = run_agreement(run.path, samples, list(labels))
    answers = verdict_files.run_answers(verdict_files.read_labels_files(label_files(run.path, list(labels))), samples)
    finished, limits = verdict_files.read_finished(run.path), verdict_files.detector_limits(config)
    verdict = decide(metrics, events, finished, answers, limits)

    import matplotlib

    matplotlib.use("Agg")
    out = run.path / "report"
    out.mkdir(exist_ok=True)
    trips = [e for e in events if e.get("event") == "detector"]
    figures = _figures(metrics, trips, out)
    grid = grid_figure(metrics, first_trips(events), verdict.step if verdict.state == "stopped" else None)
    grid_png = atomic.write_figure(out / "grid.png", grid, dpi=GRID_DPI).read_bytes() if grid is not None else None

    steps = sorted({s["step"] for s in samples})
    chosen = sample_steps or _spread(steps, 5) + [t["step"] for t in trips]
    chosen = sorted(set(s for s in chosen if s in steps))
    state = "finished" if run.is_finished() else f"in progress (step {metrics[-1]['step']})"
    run_line = (f"tether run {run.path.name}: {state}; policy {config.get('policy_model', '?')}, algorithm "
                f"{config.get('algorithm', '?')}, constitution {config.get('constitution', '?')}, "
                f"gold {config.get('gold_constitution') or 'none'}")
    detail = [*_trips_html(trips), *_figures_html(figures, out), *_values_html(values),
              agreement_html(agreement, run.path), *_timeline_html(samples, chosen, per_step)]
    columns = report_page.samples_html(samples, verdict, per_step)
    text = report_page.page(run.path.name, run_line, verdict, grid_png, columns, detail,
                            f"label some with <code>{html.escape(how_to_label(run.path))}</code>")
    atomic.write_json(out / "agreement.json", agreement)
    atomic.write_json(out / "verdict.json", {"headline": verdict.headline, **asdict(verdict)})
    return atomic.write_text(out / "report.html", text)


def _read_run(run: RunDir) -> tuple[dict, list[dict], list[dict], list[dict], list[dict]]:
    """config, metrics, samples, events and the value store, every one checked before anything is written."""
    if not run.path.exists():
        raise TetherError(f"{run.path}: no such run directory")
    if not run.path.is_dir():
        raise TetherError(f"{run.path}: not a folder; give a tether run directory")
    config = run.config() if run.has_run() else {}
    metrics = _read_checked(run.path / "metrics.jsonl", {"step": "step"})
    if not metrics:
        raise TetherError(f"{run.path}: no metrics.jsonl lines yet; is this a tether run directory?")
    samples = _read_checked(run.path / "samples.jsonl",
                            {"step": "step", "prompt": str, "completion": str, "train": "number"})
    events = jsonl.read(run.path / "events.jsonl")
    for trip in (e for e in events if e.get("event") == "detector"):
        if not isinstance(trip.get("step"), int) or not all(
                isinstance(d, dict) and isinstance(d.get("detector"), str) and _number(d.get("value"))
                and _number(d.get("limit")) for d in trip.get("detectors", [])):
            raise TetherError(f"{run.path / 'events.jsonl'}: a detector event without step, detector, value and limit")
    return config, metrics, samples, events, _read_values(run.path / "values" / "values.json")


def _figures(metrics: list[dict], trips: list[dict], out: Path) -> list[tuple[str, str]]:
    """The detail's plots (PLOTS that have data), saved in `out`: (file name, title)."""
    import matplotlib.pyplot as plt

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
    return figures


PLOTTED = frozenset(key for _, _, series in PLOTS for key, _ in series) | {"gold", "embedding_kl", "utility"}


def _spread(steps: list[int], k: int) -> list[int]:
    if len(steps) <= k:
        return steps
    return [steps[round(i * (len(steps) - 1) / (k - 1))] for i in range(k)]


def _trips_html(trips: list[dict]) -> list[str]:
    e = html.escape
    if not trips:
        return ["<h3>Detector trips</h3>", "<p>none</p>"]
    return ["<h3>Detector trips</h3>", "<ul>" + "".join(
        f"<li class='trip' data-step='{t['step']}'>step {t['step']}: "
        + e(", ".join(f"{d['detector']} = {d['value']:.3g} (limit {d['limit']:.3g})" for d in t["detectors"]))
        + "</li>" for t in trips) + "</ul>"]


def _figures_html(figures: list[tuple[str, str]], out: Path) -> list[str]:
    """Each plot once (its title is in the image; the alt text repeats it for a screen reader)."""
    parts = ["<h3>Metrics, one plot each</h3><div class='figures'>"]
    for name, title in figures:
        data = base64.b64encode((out / name).read_bytes()).decode()
        parts.append(f"<figure><img class='plot' alt='{html.escape(title)}' "
                     f"src='data:image/png;base64,{data}'></figure>")
    return parts + ["</div>"]


def _values_html(values: list[dict]) -> list[str]:
    """The utility function's store: what the run learned to value."""
    if not values:
        return []
    e = html.escape
    entries = sorted(values, key=lambda v: (v["kind"] != "terminal", -v["credit"]))
    parts = ["<h2>Values of the utility function</h2><table class='values'><tr><th>kind</th><th>credit</th>"
             "<th>count</th><th>step</th><th>text</th></tr>"]
    parts += [f"<tr><td>{e(v['kind'])}</td><td>{v['credit']:.3f}</td><td>{v['count']}</td><td>{v['step']}</td>"
              f"<td>{e(v['text'])}</td></tr>" for v in entries[:30]]
    return parts + ["</table><p>All of them, with the run's nearest texts: <code>tether values RUN_DIR</code>.</p>"]


def _timeline_html(samples: list[dict], chosen: list[int], per_step: int) -> list[str]:
    """Samples over time: at each chosen step, the best and the worst by train score."""
    parts = ["<h2>Samples over time</h2>"]
    for step in chosen:
        rows = sorted((s for s in samples if s["step"] == step), key=lambda s: -s["train"])
        picked = rows[:per_step] + rows[-per_step:] if len(rows) > 2 * per_step else rows
        parts.append(f"<h3 id='step-{step}'>step {step}</h3>")
        parts += [report_page.sample_html(s, step) for s in picked]
    return parts
