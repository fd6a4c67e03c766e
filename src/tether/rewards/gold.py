"""A gold judge paid as a reward term: the person's labels hitting back during training.

    gold_reward: {path: golds/good, weight: 1.0}     # in a tune config
    gold_reward: {path: golds/on_task, also: [golds/cheerful], shape: log_sigmoid, weight: 1.0}

The source text's loop: a person labels what the policy writes, a judge is fitted to the labels
(`tether gold fit`), and that judge joins the reward. The term pays the gold's log-odds, as the
constitution term does, so weights compare. Whoever evaluates such a run must use a gold fitted
on other labels, and a person's blind comparison: a judge trained against is no longer a measure.

Several golds (each question fitted apart) are summed. With `shape: log_sigmoid` each pays log P(yes),
so the sum is log P(on task)·P(cheerful): a text must satisfy every question, and one that is already
sure on a question gains little more there (the raw log-odds would pay a policy that pushes one
question's certainty up while it lets another go).
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np

from tether.infra.texts import plain_text
from tether.rewards.shaping import log_sigmoid


class GoldReward:
    """TRL reward function: the golds' summed score of each completion, prompt and completion read apart."""

    __name__ = "gold_reward"

    def __init__(self, golds, shape: str = "raw"):
        self.golds = list(golds) if isinstance(golds, (list, tuple)) else [golds]
        self.shape = shape
        self.last_values = np.zeros(0)  # the latest batch, for the monitor callback (defense/gold_reward/...)
        self.last_seconds = 0.0

    def __call__(self, prompts: Sequence, completions: Sequence, **kwargs) -> list[float]:
        start = time.perf_counter()
        prompts, completions = [plain_text(p) for p in prompts], [plain_text(c) for c in completions]
        shaped = log_sigmoid if self.shape == "log_sigmoid" else np.asarray
        self.last_values = sum(shaped(np.asarray(g.score(prompts, completions), dtype=float)) for g in self.golds)
        self.last_seconds = time.perf_counter() - start
        return [float(v) for v in self.last_values]
