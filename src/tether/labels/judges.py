"""A train judge and its optional gold judge, applied to prompt + completion.

The one place sample, sft and the blend sweep build their judges from a config; the gold is
either kind `gold_judge.load_gold` reads (a constitution, or a folder fitted to labels).
"""

from __future__ import annotations

import numpy as np

from tether.infra.models import load_causal_lm
from tether.judge.evaluator import Evaluator
from tether.labels.gold_judge import GoldSpec, check_gold, load_gold


def check_models(config, *more: str | None) -> None:
    """The local models a sample or tune config names (policy, judge, a constitution gold's, `more`), each from
    its config.json alone, with the device, the dtype and a tune config's LoRA target modules: a missing or broken
    one is refused before any weights load."""
    from pathlib import Path

    from tether.infra.models import check_model
    from tether.judge.remote import is_remote

    gold = config.gold_constitution
    gold_model = config.gold_model if gold is not None and not Path(gold).is_dir() else None
    names = [config.policy_model, config.judge_model, gold_model, *more]
    lora = {config.policy_model: getattr(config, "lora_target_modules", ())}  # a tune config's LoRA, on the policy
    for name in dict.fromkeys(n for n in names if n and not is_remote(n)):
        check_model(name, device=config.device, dtype=config.dtype, trust_remote_code=config.trust_remote_code,
                    lora_targets=lora.get(name, ()))


class Judges:
    """The constitution (and the optional gold judge) applied to prompt + completion.

    `config` is a sample or a tune config: both name judge_model, gold_constitution,
    gold_model, gold_debias, judge_batch_size, device, dtype (the judges sit on that device) and
    trust_remote_code.
    """

    def __init__(self, config, constitution):
        checked = check_gold(config.gold_constitution, config.device)  # a bad gold is refused before any model loads
        model, tokenizer = load_causal_lm(config.judge_model, device=config.device, dtype=config.dtype,
                                          trust_remote_code=config.trust_remote_code, fast_head=True)
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
