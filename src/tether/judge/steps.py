"""The step judge: each step of a completion judged blind to what came after it.

Process-based supervision (the source text): "gradient descent is performed based on audits of
whether those steps seem reasonable while blinded to what happened as a result". Step k of a
completion is judged on the prompt and steps 1..k alone: the judged text is `prompt +
completion[:end_k]`, so no later step and no ending can reach step k's score. That holds by
construction, for any judge: a constitution's evaluator or a gold folder (`score(prompts,
completions)`), whatever it is.

    judge = Evaluator("embedded:gemma-3-270m", "examples/cheerful.yaml")
    steps = score_steps(constitution_scorer(judge), prompts, completions, how="sentences")
    steps[0] == [{"text": "She smiled. ", "start": 1, "end": 13, "score": 1.7}, ...]
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from tether.infra.steps import split_steps
from tether.infra.texts import judged_texts
from tether.judge.evaluator import Evaluator
from tether.judge.prefixes import score_prefixes

Scorer = Callable[[list[str], list[str]], np.ndarray]


def constitution_scorer(evaluator, include_prompt: bool = True) -> Scorer:
    """(prompts, completions) -> the constitution's combined log-odds, the judge reading as in training.

    Its `prefixes(prompts, completions, ends)` scores each completion's prefixes completion[:end] for every end,
    growing one KV cache per completion (judge/prefixes.py): what `score_steps` calls when it can."""
    def score(prompts: list[str], completions: list[str]) -> np.ndarray:
        return evaluator.score(judged_texts(prompts, completions, include_prompt)).total()

    def prefixes(prompts: list[str], completions: list[str], ends: list[list[int]]) -> np.ndarray:
        texts = judged_texts(prompts, completions, include_prompt)
        lead = [len(t) - len(c) for t, c in zip(texts, judged_texts([""] * len(completions), completions, False))]
        return score_prefixes(evaluator, texts, [[k + e for e in es] for k, es in zip(lead, ends)]).total()

    if isinstance(evaluator, Evaluator):  # a local judge (a served one scores whole texts only)
        score.prefixes = prefixes
    return score


def score_steps(score: Scorer, prompts: Sequence[str], completions: Sequence[str], how: str = "sentences",
                max_steps: int | None = None) -> list[list[dict]]:
    """Per completion, its steps with each one's score on the prompt and the steps up to it; one judge call."""
    steps = [split_steps(c, how, max_steps) for c in completions]
    flat_prompts = [p for p, s in zip(prompts, steps) for _ in s]
    prefixes = [c[: step.end] for c, s in zip(completions, steps) for step in s]
    if not prefixes:
        scores = np.zeros(0)
    elif hasattr(score, "prefixes"):  # one cache grown along each completion, not k prefixes from scratch
        scores = np.asarray(score.prefixes(list(prompts), list(completions), [[st.end for st in s] for s in steps]),
                            dtype=float)
    else:
        scores = np.asarray(score(flat_prompts, prefixes), dtype=float)
    out, k = [], 0
    for s in steps:
        out.append([{**step.as_dict(), "score": float(scores[k + i])} for i, step in enumerate(s)])
        k += len(s)
    return out


def by_position(steps: list[list[dict]]) -> list[tuple[int, int, float, float, float]]:
    """(position from 1, texts with that step, mean, min, max score): the per-step summary."""
    rows = []
    for position in range(max((len(s) for s in steps), default=0)):
        values = [s[position]["score"] for s in steps if len(s) > position]
        rows.append((position + 1, len(values), float(np.mean(values)), float(np.min(values)), float(np.max(values))))
    return rows
