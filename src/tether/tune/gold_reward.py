"""A gold judge paid as a reward term: the person's labels hitting back during training.

    gold_reward: {path: golds/good, weight: 1.0}     # in a tune config

The source text's loop: a person labels what the policy writes, a judge is fitted to the labels
(`tether gold fit`), and that judge joins the reward. The term pays the gold's log-odds, as the
constitution term does, so weights compare. Whoever evaluates such a run must use a gold fitted
on other labels, and a person's blind comparison: a judge trained against is no longer a measure.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np

from tether.infra.texts import plain_text


class GoldReward:
    """TRL reward function: the gold's score (log-odds) of each completion, prompt and completion read apart."""

    __name__ = "gold_reward"

    def __init__(self, gold):
        self.gold = gold
        self.last_values = np.zeros(0)  # the latest batch, for the monitor callback (defense/gold_reward/...)
        self.last_seconds = 0.0

    def __call__(self, prompts: Sequence, completions: Sequence, **kwargs) -> list[float]:
        start = time.perf_counter()
        self.last_values = np.asarray(self.gold.score([plain_text(p) for p in prompts],
                                                      [plain_text(c) for c in completions]), dtype=float)
        self.last_seconds = time.perf_counter() - start
        return [float(v) for v in self.last_values]
