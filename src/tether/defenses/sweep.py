"""The checkpoint-blending sweep: measure base + A * (tuned - base) at several A and recommend one.

    tether blend --tuned runs/cheerful --sweep 0,0.25,0.5,0.75,1 --prompts examples/prompts_heldout.txt

The sweep samples every A with the same seeds (seed + prompt index before each prompt),
so points differ only by the weights, and measures each: the train judge, the gold judge,
the text monitors, embedding drift from the base's own completions, and the exact token
KL(blend || base) over the vocabulary, averaged over each completion's positions
(teacher-forced on the blend's own completions, both models at temperature 1).

A point is on the Pareto front when no other point is at least as good on train score
(up), gold score (up) and KL (down) and better on one; without a gold judge, on train and
KL. The recommended A keeps as much of the tuning as the gold judge allows: among the
points whose gold score is within `gold_tolerance` (log-odds) of the sweep's best gold
score, the highest train score (ties: higher gold, then lower KL). Without a gold judge:
the highest train score among the points that trip none of the run's monitor thresholds
(affirmation rate, repetition, longest repeat run, special-token rate); if none passes,
the lowest KL. With a KL budget (`max_kl`), only the points within it are considered: a
gold judge that cannot see the damage (docs/results.md) would otherwise recommend A=1.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from tether.defenses.blend import (
    Blend,
    check_alpha,
    find_tuned,
    save_blend,
)
from tether.errors import TetherError
from tether.infra import atomic, progress
from tether.infra.seeds import base_samples_seed, item_seed
from tether.watch.detectors import DetectorConfig, check
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


@torch.inference_mode()
def token_kl(blend: Blend, prompt_ids: list[int], branches) -> list[float]:
    """Per completion: KL(blend || base) over the vocabulary, averaged over the positions that predict it.

    Positions: each completion token's, and the end-of-text's when the completion ended.
    """
    rows = [prompt_ids + b.ids for b in branches]
    width = max(map(len, rows))
    pad = blend.tokenizer.pad_token_id if blend.tokenizer.pad_token_id is not None else blend.tokenizer.eos_token_id
    device = blend.model.device
    ids = torch.tensor([r + [pad] * (width - len(r)) for r in rows], device=device)
    mask = (torch.arange(width, device=device)[None, :] < torch.tensor([len(r) for r in rows], device=device)[:, None]).long()
    logp = torch.log_softmax(blend.model(input_ids=ids, attention_mask=mask).logits.float(), dim=-1)
    with blend.base() as base:
        logq = torch.log_softmax(base(input_ids=ids, attention_mask=mask).logits.float(), dim=-1)
    kl = (logp.exp() * (logp - logq)).sum(-1)
    start = len(prompt_ids) - 1
    return [float(kl[i, start : start + len(b.ids) + b.finished].mean()) for i, b in enumerate(branches)]


def pareto_front(rows: list[dict], goals: list[tuple[str, int]]) -> list[bool]:
    """Per row: True if no other row is at least as good on every goal and better on one.

    goals: (column, +1 to maximise or -1 to minimise).
    """
    def dominates(p, q):
        return all(s * p[k] >= s * q[k] for k, s in goals) and any(s * p[k] > s * q[k] for k, s in goals)

    return [not any(dominates(other, row) for other in rows) for row in rows]


def recommend(rows: list[dict], gold_tolerance: float, detectors: DetectorConfig,
              max_kl: float | None = None) -> tuple[int, str, str]:
    """(row index, rule, reason): see the module docstring for the rule; `max_kl` is a budget applied first."""
    budget = f" and token KL at most {max_kl:g}" if max_kl is not None else ""
    allowed = [i for i, r in enumerate(rows) if max_kl is None or r["kl"] <= max_kl]
    if not allowed:
        pick = min(range(len(rows)), key=lambda i: rows[i]["kl"])
        return pick, f"token KL at most {max_kl:g}", (f"no point is within the KL budget {max_kl:g}; A={rows[pick]['alpha']:g} "
                                                      f"is the least changed (KL {rows[pick]['kl']:.3f})")
    if "gold" in rows[0]:
        best = max(rows[i]["gold"] for i in allowed)
        near = [i for i in allowed if rows[i]["gold"] >= best - gold_tolerance]
        pick = max(near, key=lambda i: (rows[i]["train"], rows[i]["gold"], -rows[i]["kl"]))
        rule = f"highest train score among the points within {gold_tolerance:g} of the best gold score{budget}"
        return pick, rule, (f"A={rows[pick]['alpha']:g} keeps the most train score ({rows[pick]['train']:+.3f}) with its "
                            f"gold score ({rows[pick]['gold']:+.3f}) within {gold_tolerance:g} of the best ({best:+.3f})"
                            + (f" and KL {rows[pick]['kl']:.3f} within {max_kl:g}" if max_kl is not None else ""))
    rule = f"highest train score among the points that trip no monitor threshold{budget} (no gold judge)"
    passing = [i for i in allowed if not rows[i]["trips"]]
    if not passing:
        pick = min(allowed, key=lambda i: rows[i]["kl"])
        return pick, rule, (f"every point trips a monitor threshold; A={rows[pick]['alpha']:g} is the least changed "
                            f"(lowest KL)")
    pick = max(passing, key=lambda i: (rows[i]["train"], -rows[i]["kl"]))
    return pick, rule, (f"A={rows[pick]['alpha']:g} has the highest train score ({rows[pick]['train']:+.3f}) of the "
                        f"{len(passing)} point(s) that trip no monitor threshold{budget}")


def sweep_blends(tuned_path: str | Path, alphas: list[float], settings, *, base: str | None = None,
                 out: str | Path | None = None, prompts: str | Path | None = None, completions: int = 4,
                 gold_tolerance: float = 0.05, max_kl: float | None = None, save_merged: bool = False,
                 seed: int | None = None) -> Sweep:
    """`tether blend --sweep`: measure each A on the prompts, write the tables, plot and samples to `out`.

    `settings`: the tune config whose judges and sampling settings the sweep uses (`tune.config.tuned_settings`).

    `seed` replaces the run's seed for sampling (an experiment samples every run alike)."""
    from tether.infra.generate import Branch, Generator
    from tether.infra.models import load_embedder
    from tether.infra.texts import load_base, plain_text, read_prompts
    from tether.labels.gold_judge import ConstitutionGold, check_gold
    from tether.labels.judges import Judges, check_models
    from tether.watch.drift import EmbeddingDrift, sample_base, save_base
    from tether.watch.metrics import batch_values

    alphas = [check_alpha(a) for a in alphas]
    if completions < 1:
        raise TetherError(f"--completions {completions}: must be at least 1")
    tuned = find_tuned(tuned_path)
    settings = settings.model_copy(update={"seed": settings.seed if seed is None else seed})
    check_gold(settings.gold_constitution, settings.device)  # a missing or bad gold: refused before any model loads
    check_models(settings.model_copy(update={"policy_model": base}) if base else settings)  # their config.json
    if out is None and tuned.run_dir is None:
        raise TetherError(f"{tuned.folder}: not inside a run directory; pass --out DIR for the sweep's files")
    out = Path(out) if out is not None else tuned.run_dir / "blend"
    prompt_file = Path(prompts) if prompts is not None else settings.prompts
    prompt_list = list({plain_text(p): p for p in read_prompts(prompt_file)}.values())  # a conversation is a list: keyed rendered
    if prompts is None:
        progress.console.print(f"[yellow]note:[/] scoring on the run's training prompts ({prompt_file}), which are "
                               f"not held out; pass --prompts FILE for held-out ones", highlight=False, soft_wrap=True)

    blend = Blend(tuned, base or settings.policy_model, settings.device, settings.trust_remote_code)
    judges = Judges(settings, settings.constitution)  # a tune config has the fields a sample config's judges need
    judge, gold = judges.judge, judges.gold
    gen = Generator(blend.model, blend.tokenizer, temperature=settings.temperature,
                    suppress_special_tokens=settings.suppress_special_tokens)

    drift = None
    if settings.embedder is not None:  # the base's own completions, sampled once with another seed
        cache = out / "base_samples.jsonl"
        base_samples = load_base(cache) if cache.exists() else {}
        if set(base_samples) != {plain_text(p) for p in prompt_list} or any(len(c) != settings.base_samples_per_prompt
                                                        for c in base_samples.values()):
            with blend.base() as base_model:
                base_samples = sample_base(base_model, blend.tokenizer, prompt_list, settings.base_samples_per_prompt,
                                           settings.max_completion_tokens, settings.temperature, gen.suppress,
                                           base_samples_seed(settings.seed))
            save_base(cache, base_samples)
        drift = EmbeddingDrift(load_embedder(settings.embedder, device=settings.device,
                                             trust_remote_code=settings.trust_remote_code), base_samples)

    rows, samples = [], []
    for alpha in progress.track(alphas, "Sweeping A", total=len(alphas)):
        blend.set_alpha(alpha)
        drawn = []
        for i, prompt in enumerate(prompt_list):
            torch.manual_seed(item_seed(settings.seed, i))
            prompt_ids = gen.prompt_ids(prompt)
            branches = gen.extend(prompt_ids, Branch([]), completions, settings.max_completion_tokens)
            drawn += [{"alpha": alpha, "prompt_index": i, "prompt": plain_text(prompt), "completion": gen.text(b), "kl": kl}
                      for b, kl in zip(branches, token_kl(blend, prompt_ids, branches))]
        texts = [d["prompt"] + d["completion"] for d in drawn]
        for d, score in zip(drawn, judge.score(texts).total()):
            d["train"] = float(score)
        if gold is not None:  # a constitution (on prompt + completion, as the train judge) or a fitted gold folder
            for d, score in zip(drawn, gold.score([d["prompt"] for d in drawn], [d["completion"] for d in drawn])):
                d["gold"] = float(score)
        if drift is not None:
            for d, distance in zip(drawn, drift.distances([d["prompt"] for d in drawn], [d["completion"] for d in drawn])):
                d["drift"] = float(distance)
        monitors = batch_values([d["completion"] for d in drawn])
        trips = check([{"step": 0, **monitors}], settings.detectors)
        rows.append({"alpha": alpha, **{k: float(np.mean([d[k] for d in drawn])) for k in ("train", "gold", "kl", "drift")
                                        if k in drawn[0]},
                     **monitors, "trips": ", ".join(t.detector for t in trips)})
        samples += drawn
        if save_merged:
            save_blend(blend, out / f"merged-A{alpha:g}")

    goals = [("train", 1), ("gold", 1), ("kl", -1)] if gold is not None else [("train", 1), ("kl", -1)]
    pick, rule, reason = recommend(rows, gold_tolerance, settings.detectors, max_kl)
    for i, (row, on_front) in enumerate(zip(rows, pareto_front(rows, goals))):
        row["pareto"], row["recommended"] = on_front, i == pick
    info = {"tuned": str(tuned.folder), "base": blend.base_name, "kind": tuned.kind, "alphas": alphas,
            "prompts": str(prompt_file), "held_out": prompts is not None, "completions_per_prompt": completions,
            "max_completion_tokens": settings.max_completion_tokens, "temperature": settings.temperature,
            "seed": settings.seed, "constitution": str(settings.constitution), "judge_model": settings.judge_model,
            "gold_constitution": str(settings.gold_constitution) if gold is not None else None,
            "gold": gold.name if gold is not None else None,
            "gold_model": (settings.gold_model or settings.judge_model) if isinstance(gold, ConstitutionGold) else None,
            "gold_debias": settings.gold_debias, "embedder": settings.embedder, "gold_tolerance": gold_tolerance,
            "max_kl": max_kl,
            "pareto_goals": [f"{k} {'up' if s > 0 else 'down'}" for k, s in goals]}
    sweep = Sweep(rows, rule, reason, out, info)
    _write_sweep(sweep, samples)
    return sweep


# --- the sweep's files ----------------------------------------------------------------------


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
