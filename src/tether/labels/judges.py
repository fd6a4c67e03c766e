"""A train judge and its optional gold judge, applied to prompt + completion.

The one place sample, sft and the blend sweep build their judges from a config; the gold is
either kind `gold_judge.load_gold` reads (a constitution, or a folder fitted to labels).
"""

from __future__ import annotations

import numpy as np

from tether.infra.models import load_causal_lm
from tether.judge.evaluator import Evaluator
from tether.labels.gold_judge import GoldSpec, check_gold, load_gold


class Judges:
    """The constitution (and the optional gold judge) applied to prompt + completion.

    `config` is a sample or a tune config: both name judge_model, gold_constitution,
    gold_model, gold_debias, judge_batch_size, device and dtype (the judges sit on that device).
    """

    def __init__(self, config, constitution):
        checked = check_gold(config.gold_constitution, config.device)  # a bad gold is refused before any model loads
        model, tokenizer = load_causal_lm(config.judge_model, device=config.device, dtype=config.dtype)
        self.judge = Evaluator(model, constitution, tokenizer=tokenizer, batch_size=config.judge_batch_size)
        self.gold = load_gold(GoldSpec.of(config), checked, shared=(model, tokenizer))

    def totals(self, texts: list[str]) -> np.ndarray:
        return self.judge.score(texts).total()

    def records(self, prompt: str, completions: list[str]) -> list[dict]:
        texts = [prompt + c for c in completions]
        result = self.judge.score(texts)
        rows = [{"total": round(float(t), 4), "scores": dict(zip(result.names, np.round(s, 4).tolist()))}
                for t, s in zip(result.total(), result.scores())]
        if self.gold is not None:
            gold = self.gold.result([prompt] * len(completions), completions)
            for row, t, s in zip(rows, gold.total(), gold.scores()):
                row["gold_total"], row["gold_scores"] = round(float(t), 4), dict(zip(gold.names, np.round(s, 4).tolist()))
        return rows
