"""What an experiment produced: results.csv/json (a row per run), summary.md, plots, a page, blind pairs.

    summary.md   per arm: each measure's mean and 95% interval over seeds, its difference to the
                 base model (paired by seed), a paired test against the first arm, and a person's
                 win rate against the base when compare answers exist (compare/labels.jsonl)
    plots.png    the first gold against the train judge, and against token KL (Pareto front of arms)
    index.html   the summary and the plots, for a browser
    compare/     ARM.jsonl and base.jsonl: the evaluation samples, paired by draw, for
                 `tether label compare/ARM.jsonl compare/base.jsonl --mode compare --out compare/labels.jsonl`
"""

from __future__ import annotations

import html
import json
from pathlib import Path

import numpy as np

from tether.experiment.analysis import analyse
from tether.experiment.config import ExperimentConfig
from tether.experiment.evaluate import gold_key
from tether.experiment.grid import status
from tether.experiment.stats import Estimate, mean_ci, paired, win_rate
from tether.experiment.summary_reading import cost_lines, reading_lines, registration_lines
from tether.infra import atomic, jsonl


def measures(config: ExperimentConfig) -> list[tuple[str, str]]:
    """(column, title), the person-anchored golds first: what ranks the arms."""
    golds = [(gold_key(g), gold_key(g).removeprefix("eval/")) for g in config.golds]
    return [*golds, ("train", "train judge"), ("gold", "run's gold"), ("kl", "token KL"), ("drift", "drift"),
            ("monitor/distinct_2", "distinct-2"), ("monitor/affirmation_rate", "affirmation")]


def collect(config: ExperimentConfig) -> tuple[list[dict], dict | None]:
    """One row per run (its state, training summary and evaluation), and the base model's row."""
    rows = []
    for (arm, seed), state in status(config).items():
        folder = config.run_dir(arm, seed)
        row = {"arm": arm, "seed": seed, "status": state, "run": str(folder)}
        tuned = config.tuned_dir(arm, seed)
        if (tuned / "finished.json").exists():
            done = json.loads((tuned / "finished.json").read_text())
            trips = done.get("detector_trips") or []
            row.update({"steps": done.get("steps"), "stopped_early": done.get("stopped_early"),
                        "first_trip": min((t.get("step") for t in trips if isinstance(t, dict)), default=None)})
        if state == "done":
            row.update(json.loads((folder / "eval" / "result.json").read_text()))
        rows.append(row)
    base_file = config.output_dir / "base" / "result.json"
    base = json.loads(base_file.read_text()) if base_file.exists() else None
    return rows, base


def bases(config: ExperimentConfig) -> dict[str, dict]:
    """Every base evaluation by folder name: `base`, and `base-KEY` for runs judged otherwise (evaluate_base)."""
    return {f.name: json.loads((f / "result.json").read_text()) for f in sorted(config.output_dir.glob("base*"))
            if (f / "result.json").exists()}


def win_rates(config: ExperimentConfig) -> dict[str, Estimate]:
    """Per arm: how often a person preferred its sample to the base's (compare/labels.jsonl), ties half."""
    counts: dict[str, list[int]] = {}
    for r in jsonl.read(config.output_dir / "compare" / "labels.jsonl"):
        if r.get("kind") != "compare":
            continue
        sides = {side: (r.get("sources") or {}).get(side, {}).get("arm") for side in ("left", "right")}
        arm = next((a for a in sides.values() if a not in (None, "base")), None)
        if arm is None or "base" not in sides.values():
            continue
        won = r["choice"] != "tie" and sides[r["choice"]] == arm
        c = counts.setdefault(arm, [0, 0, 0])
        c[0 if won else 2 if r["choice"] == "tie" else 1] += 1
    return {arm: win_rate(*c) for arm, c in counts.items()}


def summarize(config: ExperimentConfig) -> Path:
    if not config.output_dir.is_dir():  # --summary of an experiment never run: nothing to summarise, nothing written
        from tether.errors import TetherError

        raise TetherError(f"{config.output_dir}: no such folder; the experiment has not run yet "
                          f"(run it without --summary)")
    rows, base = collect(config)
    atomic.write_records(config.output_dir / "results.csv", rows)
    atomic.write_json(config.output_dir / "results.json", {"runs": rows, "base": base})
    table = _table(config, rows, base)
    atomic.write_text(config.output_dir / "summary.md", table)
    done = [r for r in rows if r["status"] == "done"]
    if done:
        atomic.write_figure(config.output_dir / "plots.png", _plots(config, done, base))
    atomic.write_text(config.output_dir / "index.html", _page(config, table, bool(done)))
    return config.output_dir / "summary.md"


def _table(config: ExperimentConfig, rows: list[dict], base: dict | None) -> str:
    cols = [(k, t) for k, t in measures(config) if any(k in r for r in rows)]
    seeds = config.seeds
    by = {(r["arm"], r["seed"]): r for r in rows}
    reference = next(iter(config.arms))
    lines = [f"# Experiment {config.output_dir.name}", "",
             f"Task: `{config.tune}`; {len(config.arms)} arms x {len(seeds)} seeds; held-out prompts `{config.eval_prompts}`, "
             f"{config.eval_completions} completions each, sampling seed {config.eval_seed} for every run and the base.", "",
             "Each cell: mean over seeds [95% t interval]. Δ base: the arm minus the base model (paired by draw, "
             "t over seeds). The first gold ranks the arms.", ""]
    header = ["arm", "runs done"] + [t for _, t in cols]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    measured = bases(config)
    for name, b in measured.items():
        lines.append(f"| {name} | - | " + " | ".join(f"{b[k]:+.3f}" if k in b else "-" for k, _ in cols) + " |")
    for arm in config.arms:
        runs = [by[arm, s] for s in config.arm_seeds(arm) if by[arm, s]["status"] == "done"]
        cells = [mean_ci([r.get(k, np.nan) for r in runs]).text() for k, _ in cols]
        lines.append(f"| {arm} | {len(runs)}/{len(config.arm_seeds(arm))} | " + " | ".join(cells) + " |")
    if base is not None:
        lines += ["", "## Difference to the base model", "", "| arm | " + " | ".join(t for _, t in cols) + " |",
                  "|" + "---|" * (len(cols) + 1)]
        for arm in config.arms:
            runs = [by[arm, s] for s in config.arm_seeds(arm) if by[arm, s]["status"] == "done"]
            own = [measured.get(r.get("base", "base"), base) for r in runs]  # the base judged as the run was
            cells = [paired([r.get(k, np.nan) for r in runs], [b.get(k, np.nan) for b in own]).text() for k, _ in cols]
            lines.append(f"| {arm} | " + " | ".join(cells) + " |")
    if len(config.arms) > 1:
        lines += ["", f"## Paired against `{reference}` (same seeds)", "", "| arm | " + " | ".join(t for _, t in cols) + " |",
                  "|" + "---|" * (len(cols) + 1)]
        for arm in list(config.arms)[1:]:
            both = [s for s in config.arm_seeds(arm) if (reference, s) in by
                    and by[arm, s]["status"] == by[reference, s]["status"] == "done"]
            cells = [paired([by[arm, s].get(k, np.nan) for s in both], [by[reference, s].get(k, np.nan) for s in both]).text()
                     for k, _ in cols]
            lines.append(f"| {arm} | " + " | ".join(cells) + " |")
    wins = win_rates(config)
    lines += ["", "## A person's blind comparison with the base model", ""]
    if wins:
        lines += ["| arm | comparisons | win rate (ties half) [95% Wilson] | sign test p |", "|---|---|---|---|"]
        lines += [f"| {arm} | {w.n} | {w.mean:.2f} [{w.low:.2f}, {w.high:.2f}] | {w.p:.2g} |" for arm, w in wins.items()]
    else:
        lines.append(f"No answers yet: `tether experiment {config.output_dir}/experiment.yaml --pairs`, then the "
                     "`tether label ... --mode compare` commands it prints.")
    lines += cost_lines(config, rows, base)
    lines += reading_lines(config, analyse(config) if (config.output_dir / "reading" / "labels.jsonl").exists() else {})
    lines += registration_lines(config)
    failed = [r for r in rows if r["status"] == "failed"]
    if failed:
        lines += ["", "## Failed runs", ""] + [f"- {r['arm']} seed {r['seed']}: see failures.jsonl" for r in failed]
    return "\n".join(lines) + "\n"


def _plots(config: ExperimentConfig, done: list[dict], base: dict | None):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from tether.defenses.sweep import pareto_front

    y = next((k for k, _ in measures(config) if k.startswith("eval/") and k in done[0]), "gold" if "gold" in done[0] else "train")
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    arms = list(dict.fromkeys(r["arm"] for r in done))
    means = []
    for i, arm in enumerate(arms):
        runs = [r for r in done if r["arm"] == arm]
        colour = plt.cm.tab10(i % 10)
        for ax, x in zip(axes, ("train", "kl")):
            ax.scatter([r[x] for r in runs], [r[y] for r in runs], color=colour, alpha=0.5, s=18)
            ax.scatter([np.mean([r[x] for r in runs])], [np.mean([r[y] for r in runs])], color=colour, s=90,
                       edgecolors="black", label=arm)
        means.append({"arm": arm, "kl": float(np.mean([r["kl"] for r in runs])), y: float(np.mean([r[y] for r in runs]))})
    front = [m for m, on in zip(means, pareto_front(means, [(y, 1), ("kl", -1)])) if on]
    front.sort(key=lambda m: m["kl"])
    axes[1].plot([m["kl"] for m in front], [m[y] for m in front], color="red", alpha=0.6, label="Pareto front")
    for ax, x in zip(axes, ("train", "kl")):
        if base is not None:
            ax.axhline(base[y], color="grey", linestyle="--", label="base model")
        ax.set_xlabel({"train": "train judge (log-odds)", "kl": "token KL to the base (nats/token)"}[x])
        ax.set_ylabel(y.removeprefix("eval/"))
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=8, loc="best")
    fig.suptitle("runs (small) and arm means (large) on the held-out prompts")
    fig.tight_layout()
    return fig


def _page(config: ExperimentConfig, table: str, plots: bool) -> str:
    body = html.escape(table)
    image = '<img src="plots.png" alt="gold against train and against KL" style="max-width:100%">' if plots else ""
    return (f"<!doctype html><meta charset=utf-8><title>experiment {html.escape(config.output_dir.name)}</title>"
            f"<body style='font-family:sans-serif;max-width:1100px;margin:auto'>{image}<pre>{body}</pre></body>")


def export_pairs(config: ExperimentConfig) -> list[str]:
    """compare/ARM.jsonl per arm and compare/base.jsonl, the samples keyed by draw; returns the commands to label them."""
    folder = config.output_dir / "compare"
    base = config.output_dir / "base" / "samples.jsonl"
    if not base.exists():
        from tether.errors import TetherError

        raise TetherError(f"{config.output_dir}: no run has been evaluated yet; run the experiment first")
    keep = lambda s, arm, seed: {"prompt": s["prompt"], "completion": s["completion"], "arm": arm, "seed": seed,
                                 "pair": s["draw"]}
    atomic.write_records(folder / "base.jsonl", [keep(s, "base", None) for s in jsonl.read(base)])
    commands = []
    for arm in config.arms:
        samples = [keep(s, arm, seed) for seed in config.arm_seeds(arm)
                   for s in jsonl.read(config.run_dir(arm, seed) / "eval" / "samples.jsonl")]
        if samples:
            atomic.write_records(folder / f"{arm}.jsonl", samples)
            commands.append(f"tether label {folder / (arm + '.jsonl')} {folder / 'base.jsonl'} --mode compare "
                            f"--out {folder / 'labels.jsonl'}")
    return commands
