"""A run's reward outside its run: every term of a tune config, weighted as TRL paid them.

    reward = load_reward(tune_config)          # the judge(s), golds and passages the config names
    totals = reward(prompts, completions)      # sum of weight x term, one float per text

Best-of-n (experiment/baselines.py) keeps the draw this reward likes best, so "best-of-16 under
the recipe's reward" means exactly the reward the recipe was tuned against: the constitution term
(its judges, ensemble, `judge_reads` and `reward_shape`), the gold reward (its golds and shape) and
the passage term. Terms that measure the policy rather than a text (embedding_kl, utility, a gold
refit during the run) have no value for one text alone and are refused.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from tether.errors import TetherError


def load_judges(config, constitutions: list, loaded: dict) -> list:
    """The train judge, then `judges`' others; a model named twice is loaded once (`loaded`: name -> (model, tokenizer))."""
    from tether.infra.models import load_causal_lm
    from tether.judge.remote import is_remote, make_evaluator

    models = [config.judge_model, *[j.model or config.judge_model for j in config.judges]]
    out = []
    for name, constitution in zip(models, constitutions):
        if not is_remote(name) and name not in loaded:
            loaded[name] = load_causal_lm(name, device=config.device, dtype=config.dtype,
                                          trust_remote_code=config.trust_remote_code, fast_head=True)
        out.append(make_evaluator(name, constitution, batch_size=config.judge_batch_size, shared=loaded.get(name),
                                  top_k=config.judge_top_k))
    return out


def load_train_judge(config, loaded: dict | None = None, shaped: bool = False):
    """The config's constitution judge as training reads it: its judges, `ensemble`, `judge_reads` and, when
    `shaped`, `reward_shape` (a `ConstitutionReward`; `.raw(prompts, completions)` gives the combined log-odds).
    `loaded`: name -> (model, tokenizer) already in memory."""
    from tether.judge.constitution import load_constitution
    from tether.rewards.constitution import ConstitutionReward
    from tether.rewards.shaping import RewardShape

    constitutions = [load_constitution(config.constitution), *(load_constitution(j.constitution) for j in config.judges)]
    judge, *more = load_judges(config, constitutions, loaded if loaded is not None else {})
    return ConstitutionReward(judge, include_prompt=config.judge_reads == "conversation", extra=more,
                              ensemble=config.ensemble, ensemble_lambda=config.ensemble_lambda,
                              shape=RewardShape(config.reward_shape) if shaped else None)


def check_scorable(config, where: str) -> None:
    """Refuse, before any model loads, a reward that cannot score one text alone."""
    stateful = [name for name, on in (("embedding_kl", config.embedding_kl.coef), ("utility", config.utility.weight),
                                      ("gold_reward.refit_every", config.gold_reward.refit_every),
                                      ("reward_shape: reference", config.reward_shape == "reference"
                                       and config.constitution_weight)) if on]
    if stateful:
        raise TetherError(f"{where}: its reward has {', '.join(stateful)}, which measure the policy or change during "
                          f"the run, not one text; borrow the reward of an arm without them")


class PaidReward:
    """sum(weight x term(prompts, completions)) over the config's text terms; `terms` keeps each one's name."""

    def __init__(self, terms: list[tuple[str, float, object]]):
        self.terms = terms

    def parts(self, prompts: Sequence, completions: Sequence) -> dict[str, np.ndarray]:
        return {name: np.asarray(fn(list(prompts), list(completions)), dtype=float) for name, _, fn in self.terms}

    def __call__(self, prompts: Sequence, completions: Sequence) -> np.ndarray:
        parts = self.parts(prompts, completions)
        return sum(weight * parts[name] for name, weight, _ in self.terms)


def load_reward(config, where: str = "reward") -> PaidReward:
    """The config's reward, with its weights (terms of weight 0 are not loaded)."""
    from tether.labels.gold_judge import GoldSpec, check_gold, load_gold
    from tether.rewards.gold import GoldReward

    check_scorable(config, where)
    terms, loaded = [], {}
    if config.constitution_weight:
        terms.append(("constitution", config.constitution_weight, load_train_judge(config, loaded, shaped=True)))
    if config.gold_reward.weight:
        paths = [config.gold_reward.path, *config.gold_reward.also]
        golds = [load_gold(GoldSpec.of(config, p), check_gold(p, config.device), shared=loaded.get(config.judge_model))
                 for p in paths]
        terms.append(("gold_reward", config.gold_reward.weight, GoldReward(golds, config.gold_reward.shape)))
    if config.passage_weight:
        from tether.infra.models import load_embedder
        from tether.rewards.passage import PassageReward

        embedder = load_embedder(config.embedder, device=config.device, trust_remote_code=config.trust_remote_code)
        terms.append(("passage", config.passage_weight, PassageReward(embedder, config.passages)))
    if not terms:
        raise TetherError(f"{where}: every term of its reward has weight 0; there is nothing to rank texts by")
    return PaidReward(terms)
