"""The analysis of a blind reading (experiment/reading.py): rates, differences, an adjusted model, agreement.

- Each item counts once, with its first reading (the batch it belongs to); re-reads give the agreement.
- An arm's rate: the share of its items read yes, with a 95% interval from a cluster bootstrap that
  resamples prompts, and, for arms with several training seeds, seeds (10,000 resamples; the same
  resampled prompts and seeds for every arm, so differences are paired).
- The reference arm (the first that tunes, or `reading.compare_arm`) minus each other source on
  `good`: the same bootstrap; its two-sided p is twice the smaller tail at 0; Holm across sources.
- The adjusted estimate: a logistic GEE (statsmodels) of good on source with the reader as a fixed
  effect, clustered by prompt (exchangeable): the reference's odds ratio against each source.
- Tone and quality apart: the tone question (`reading.among`: cheerful), and good among the texts read yes on it.
- Per reader: how many first readings, and the good rate (leniency is a reader's rate minus the mean).
- Pairs: the reference's win rate against each source (one answer per pair; Wilson interval, sign test).
"""

from __future__ import annotations

import json
from collections import defaultdict

import numpy as np

from tether.experiment.config import ExperimentConfig
from tether.experiment.reading import folder, questions
from tether.infra import jsonl

RESAMPLES = 10_000


def readings(config: ExperimentConfig) -> tuple[list[dict], dict]:
    """(first readings: one row per item with its answers and source, re-reads: item -> [(who, answers)])."""
    out = folder(config)
    key = json.loads((out / "key.json").read_text(encoding="utf-8"))
    owner = {e["item"]: rid.split("-")[0] for rid, e in key["reads"].items() if not e["reread"]}
    answers: dict[tuple[str, str], dict] = defaultdict(dict)
    sources = {}
    for r in jsonl.read(out / "labels.jsonl"):
        if r.get("kind") == "label" and r["answer"] in ("yes", "no"):
            answers[r["item"], r["who"]][r["question"]] = r["answer"] == "yes"
            sources[r["item"]] = r["source"]
    first, again = [], defaultdict(list)
    for (item, who), given in answers.items():
        if who == f"reader-b{owner.get(item)}":
            first.append({"item": item, "who": who, **sources[item], **given})
        else:
            again[item].append((who, given))
    return first, again


def _grid(rows: list[dict], arm: str, prompts: list[str], question: str, only=None) -> np.ndarray:
    """values[prompt, seed, draw] (NaN where none): 1 yes, 0 no."""
    mine = [r for r in rows if r["arm"] == arm and question in r and (only is None or only(r))]
    seeds = sorted({r["seed"] for r in mine}, key=str)
    draws = sorted({r["draw"] for r in mine})
    grid = np.full((len(prompts), max(len(seeds), 1), max(len(draws), 1)), np.nan)
    index = {p: i for i, p in enumerate(prompts)}
    for r in mine:
        grid[index[r["prompt"]], seeds.index(r["seed"]), draws.index(r["draw"])] = float(r[question])
    return grid


def bootstrap(grids: dict[str, np.ndarray], seed: int = 0) -> dict[str, np.ndarray]:
    """Per source: the rate in each of RESAMPLES cluster resamples (prompts, and seeds where there are several)."""
    rng = np.random.default_rng(seed)
    n_prompts = next(iter(grids.values())).shape[0]
    n_seeds = max(g.shape[1] for g in grids.values())
    prompt_draws = rng.integers(0, n_prompts, size=(RESAMPLES, n_prompts))
    seed_draws = rng.integers(0, n_seeds, size=(RESAMPLES, n_seeds))
    out = {}
    for name, grid in grids.items():
        picked = grid[prompt_draws]  # (resamples, prompts, seeds, draws)
        if grid.shape[1] > 1:
            seeds = (seed_draws % grid.shape[1])[:, :grid.shape[1]]
            picked = np.take_along_axis(picked, seeds[:, None, :, None], axis=2)
        with np.errstate(invalid="ignore"):
            out[name] = np.nanmean(picked.reshape(RESAMPLES, -1), axis=1)
    return out


def _interval(x: np.ndarray) -> tuple[float, float]:
    return float(np.nanpercentile(x, 2.5)), float(np.nanpercentile(x, 97.5))


def holm(pvalues: dict[str, float]) -> dict[str, float]:
    """Holm's step-down adjustment (statsmodels)."""
    from statsmodels.stats.multitest import multipletests

    names = list(pvalues)
    adjusted = multipletests([pvalues[n] for n in names], method="holm")[1]
    return dict(zip(names, (float(a) for a in adjusted)))


def gee_odds(rows: list[dict], reference: str) -> dict[str, tuple[float, float, float]] | str:
    """reference vs each source: (odds ratio, low, high) of good, reader as a fixed effect, clustered by prompt."""
    import pandas as pd
    import statsmodels.api as sm
    import statsmodels.formula.api as smf

    frame = pd.DataFrame([{"good": float(r["good"]), "arm": r["arm"], "reader": r["who"], "prompt": r["prompt"]}
                          for r in rows if "good" in r])
    if frame["reader"].nunique() < 2 or frame["arm"].nunique() < 2:
        return "too few readers or sources for the model"
    # a source no text of which was read good (or every text) separates perfectly: no finite odds ratio exists,
    # and one such source makes the whole fit NaN; it is left out and named
    rates = frame.groupby("arm")["good"].mean()
    separated = [a for a, rate in rates.items() if a != reference and rate in (0.0, 1.0)]
    frame = frame[~frame["arm"].isin(separated)]
    formula = f"good ~ C(arm, Treatment(reference={reference!r})) + C(reader)"
    try:
        fit = smf.gee(formula, groups="prompt", data=frame, family=sm.families.Binomial(),
                      cov_struct=sm.cov_struct.Exchangeable()).fit()
    except Exception as e:  # a separable or degenerate design: say so, do not guess
        return f"the model did not fit ({type(e).__name__}: {e})"
    if not np.isfinite(fit.params).all():
        return "the model did not fit (non-finite estimates: a reader or source with no good text, or none but good)"
    out: dict = {}
    ci = fit.conf_int()
    for name, coef in fit.params.items():
        if name.startswith("C(arm"):
            arm = name.split("[T.")[1].rstrip("]")
            out[arm] = (float(np.exp(-coef)), float(np.exp(-ci.loc[name, 1])), float(np.exp(-ci.loc[name, 0])))
    for arm in separated:
        out[arm] = f"not estimable: {'none' if rates[arm] == 0 else 'every one'} of its texts read good"
    return out


def analyse(config: ExperimentConfig) -> dict:
    """Everything the summary shows of the reading, as numbers."""
    from tether.experiment.stats import win_rate

    first, again = readings(config)
    if not first:
        return {}
    reference = config.reading.compare_arm or next(a for a, c in config.arms.items() if c.kind == "tune")
    names = ["base", *config.arms]
    prompts = sorted({r["prompt"] for r in first})
    rates, diffs = {}, {}
    read, among = questions(config), config.reading.among
    tone = [(f"good among {among}", lambda r: r.get(among))] if among else []
    for question, only in [*((q, None) for q in read), *tone]:
        asked = question.split(" ")[0]
        grids = {n: _grid(first, n, prompts, asked, only) for n in names}
        grids = {n: g for n, g in grids.items() if not np.all(np.isnan(g))}
        boots = bootstrap(grids)
        rates[question] = {n: (float(np.nanmean(g)), *_interval(boots[n]), int(np.sum(~np.isnan(g))))
                           for n, g in grids.items()}
        if question == "good" and reference in boots:
            for n in grids:
                if n != reference:
                    d = boots[reference] - boots[n]
                    p = float(min(1.0, 2 * min(np.mean(d <= 0), np.mean(d >= 0))))
                    diffs[n] = (float(np.nanmean(grids[reference]) - np.nanmean(grids[n])), *_interval(d), p)
    adjusted = holm({n: d[3] for n, d in diffs.items()}) if diffs else {}
    agreement = {q: _agreement(first, again, q) for q in read}
    readers = defaultdict(list)
    for r in first:
        if "good" in r:
            readers[r["who"]].append(float(r["good"]))
    mean_good = float(np.mean([v for vs in readers.values() for v in vs]))
    pairs = _pairs(config, reference)
    return {"reference": reference, "rates": rates, "diffs": {n: (*d, adjusted[n]) for n, d in diffs.items()},
            "gee": gee_odds(first, reference), "agreement": agreement,
            "readers": {w: (len(v), float(np.mean(v)), float(np.mean(v)) - mean_good) for w, v in sorted(readers.items())},
            "pairs": {n: win_rate(*c) for n, c in pairs.items()}}


def _agreement(first: list[dict], again: dict, question: str) -> tuple[int, int]:
    """(agreeing, compared) over re-read items: the first reader's answer against each re-reader's."""
    by_item = {r["item"]: r for r in first}
    same = total = 0
    for item, others in again.items():
        if item in by_item and question in by_item[item]:
            for _, given in others:
                if question in given:
                    total += 1
                    same += given[question] == by_item[item][question]
    return same, total


def _pairs(config: ExperimentConfig, reference: str) -> dict[str, list[int]]:
    """Per other source: [reference wins, losses, ties]: one answer per pair."""
    counts: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    seen = set()
    for r in jsonl.read(folder(config) / "labels.jsonl"):
        if r.get("kind") != "compare" or frozenset((r["left"], r["right"])) in seen:
            continue
        seen.add(frozenset((r["left"], r["right"])))
        arms = {side: r["sources"][side]["arm"] for side in ("left", "right")}
        other = next((a for a in arms.values() if a != reference), None)
        if other is None or reference not in arms.values():
            continue
        c = counts[other]
        c[2 if r["choice"] == "tie" else 0 if arms[r["choice"]] == reference else 1] += 1
    return dict(counts)
