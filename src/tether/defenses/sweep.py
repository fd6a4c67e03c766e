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

from pathlib import Path

import numpy as np
import torch

from tether.defenses.blend import (
    Blend,
    check_alpha,
    find_tuned,
    save_blend,
)
from tether.defenses.sweep_files import Sweep, _write_sweep, sweep_table  # noqa: F401  (sweep_table: the CLI's)
from tether.errors import TetherError
from tether.infra import progress
from tether.infra.seeds import base_samples_seed, item_seed
from tether.watch.detectors import DetectorConfig, check


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
    from tether.infra.generate import Generator
    from tether.labels.judges import Judges

    alphas = [check_alpha(a) for a in alphas]
    tuned, settings, out, prompt_file, prompt_list = _sweep_inputs(tuned_path, settings, base, out, prompts,
                                                                   completions, seed)
    blend = Blend(tuned, base or settings.policy_model, settings.device, settings.trust_remote_code)
    judges = Judges(settings, settings.constitution)  # a tune config has the fields a sample config's judges need
    train = train_judge(settings, judges)  # built once: the judges' prefix caches serve every A
    gen = Generator(blend.model, blend.tokenizer, temperature=settings.temperature,
                    suppress_special_tokens=settings.suppress_special_tokens)
    drift = drift_reference(settings, blend, gen, prompt_list, out)
    rows, samples = [], []
    for alpha in progress.track(alphas, "Sweeping A", total=len(alphas)):
        blend.set_alpha(alpha)
        row, drawn = _measure(blend, gen, prompt_list, settings, completions, judges, drift, train)
        rows.append(row)
        samples += drawn
        if save_merged:
            save_blend(blend, out / f"merged-A{alpha:g}")
    gold = judges.gold
    goals = [("train", 1), ("gold", 1), ("kl", -1)] if gold is not None else [("train", 1), ("kl", -1)]
    pick, rule, reason = recommend(rows, gold_tolerance, settings.detectors, max_kl)
    for i, (row, on_front) in enumerate(zip(rows, pareto_front(rows, goals))):
        row["pareto"], row["recommended"] = on_front, i == pick
    info = _info(tuned, blend, alphas, prompt_file, prompts is not None, completions, settings, gold)
    info.update({"gold_tolerance": gold_tolerance, "max_kl": max_kl,
                 "pareto_goals": [f"{k} {'up' if s > 0 else 'down'}" for k, s in goals]})
    sweep = Sweep(rows, rule, reason, out, info)
    _write_sweep(sweep, samples)
    return sweep


def _sweep_inputs(tuned_path, settings, base, out, prompts, completions: int, seed):
    """Everything checked before any model loads: (tuned, settings, out folder, prompt file, prompts)."""
    from tether.infra.texts import plain_text, read_prompts
    from tether.labels.gold_judge import check_gold
    from tether.labels.judges import check_models

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
    prompt_list = list({plain_text(p): p for p in read_prompts(prompt_file)}.values())  # a conversation: keyed rendered
    if prompts is None:
        progress.console.print(f"[yellow]note:[/] scoring on the run's training prompts ({prompt_file}), which are "
                               f"not held out; pass --prompts FILE for held-out ones", highlight=False, soft_wrap=True)
    return tuned, settings, out, prompt_file, prompt_list


def drift_reference(settings, blend: Blend, gen, prompt_list: list, out: Path):
    """The embedding drift against the base's own completions, sampled once with another seed (None: no embedder)."""
    from tether.infra.models import load_embedder
    from tether.infra.texts import load_base, plain_text
    from tether.watch.drift import EmbeddingDrift, sample_base, save_base

    if settings.embedder is None:
        return None
    cache = out / "base_samples.jsonl"
    base_samples = load_base(cache) if cache.exists() else {}
    if set(base_samples) != {plain_text(p) for p in prompt_list} or any(len(c) != settings.base_samples_per_prompt
                                                                          for c in base_samples.values()):
        with blend.base() as base_model:
            base_samples = sample_base(base_model, blend.tokenizer, prompt_list, settings.base_samples_per_prompt,
                                       settings.max_completion_tokens, settings.temperature, gen.suppress,
                                       base_samples_seed(settings.seed))
        save_base(cache, base_samples)
    embedder = load_embedder(settings.embedder, device=settings.device, trust_remote_code=settings.trust_remote_code)
    return EmbeddingDrift(embedder, base_samples)


def _measure(blend: Blend, gen, prompt_list: list, settings, completions: int, judges, drift,
             train) -> tuple[dict, list]:
    """The blend at its current A: `completions` draws a prompt (the same seed before each prompt), judged."""
    from tether.infra.generate import Branch
    from tether.infra.texts import plain_text

    drawn = []
    for i, prompt in enumerate(prompt_list):
        torch.manual_seed(item_seed(settings.seed, i))
        prompt_ids = gen.prompt_ids(prompt)
        branches = gen.extend(prompt_ids, Branch([]), completions, settings.max_completion_tokens)
        for b, kl in zip(branches, token_kl(blend, prompt_ids, branches)):
            positions = len(b.ids) + b.finished  # KL per completion: the mean over its positions times their number
            drawn.append({"alpha": blend.alpha, "prompt_index": i, "prompt": plain_text(prompt), "completion": gen.text(b),
                          "kl": kl, "kl_completion": kl * positions, "tokens": len(b.ids)})
    return {"alpha": blend.alpha, **score_drawn(drawn, settings, judges, drift, train)}, drawn


def train_judge(settings, judges):
    """The run's train judge as training read it (its judges, ensemble, judge_reads), on the judges' loaded model."""
    from tether.rewards.paid import load_train_judge

    return load_train_judge(settings, {settings.judge_model: (judges.judge.model, judges.judge.tokenizer)}).raw


def score_drawn(drawn: list[dict], settings, judges, drift, train) -> dict:
    """Each draw judged in place (the run's train judge as training read it, gold, drift); returns the means, the
    monitors and the trips. `train`: (prompts, completions) -> combined log-odds (`train_judge`)."""
    from tether.watch.metrics import batch_values

    prompts, texts = [d["prompt"] for d in drawn], [d["completion"] for d in drawn]
    for d, score in zip(drawn, train(prompts, texts)):
        d["train"] = float(score)
    if judges.gold is not None:  # a constitution (on prompt + completion, as the train judge) or a fitted gold folder
        for d, score in zip(drawn, judges.gold.score(prompts, texts)):
            d["gold"] = float(score)
    if drift is not None:
        for d, distance in zip(drawn, drift.distances(prompts, texts)):
            d["drift"] = float(distance)
    monitors = batch_values(texts)
    trips = check([{"step": 0, **monitors}], settings.detectors)
    means = {k: float(np.mean([d[k] for d in drawn])) for k in ("train", "gold", "kl", "kl_completion", "drift", "tokens")
             if k in drawn[0]}
    return {**means, **monitors, "trips": ", ".join(t.detector for t in trips)}


def _info(tuned, blend: Blend, alphas, prompt_file, held_out: bool, completions: int, settings, gold) -> dict:
    """What the sweep measured, and with what: sweep.json's `settings`."""
    from tether.labels.gold_judge import ConstitutionGold

    return {"tuned": str(tuned.folder), "base": blend.base_name, "kind": tuned.kind, "alphas": alphas,
            "prompts": str(prompt_file), "held_out": held_out, "completions_per_prompt": completions,
            "max_completion_tokens": settings.max_completion_tokens, "temperature": settings.temperature,
            "seed": settings.seed, "constitution": str(settings.constitution), "judge_model": settings.judge_model,
            "gold_constitution": str(settings.gold_constitution) if gold is not None else None,
            "gold": gold.name if gold is not None else None,
            "gold_model": (settings.gold_model or settings.judge_model) if isinstance(gold, ConstitutionGold) else None,
            "gold_debias": settings.gold_debias, "embedder": settings.embedder}
