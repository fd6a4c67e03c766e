"""The gold judge, either kind: a held-out constitution, or a folder fitted to a person's labels.

    gold = load_gold(config)                      # None when the config names no gold
    gold.score(prompts, completions)              # numpy (n,), log-odds, higher is better
    gold.name                                     # "constitution:on_topic" or "gold:good"

A config's `gold_constitution` names either a constitution YAML (judged by `gold_model`,
debiased per `gold_debias`) or a folder holding `gold.json` from `tether gold fit`. Why one
field for both: a gold judge is whatever you trust more than the train judge, and every
consumer (tune's monitor callback, sample, the blend sweep) only asks it for a score.
A constitution judges prompt + completion joined, as the train judge does, so its scores
are the ones runs logged before folders were allowed; a fitted gold reads prompt and
completion apart, as it was fitted. Model-free checks (`check_gold`) run before any model loads.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Annotated

import numpy as np
from pydantic import AfterValidator

from tether.errors import TetherError


class ConstitutionGold:
    """A constitution judged by an LM (an `Evaluator`), on prompt + completion (or the completion alone)."""

    def __init__(self, evaluator, include_prompt: bool = True):
        self.evaluator, self.include_prompt = evaluator, include_prompt
        self.name = f"constitution:{evaluator.constitution.name}"

    def result(self, prompts: Sequence[str], completions: Sequence[str]):
        """The evaluator's `ScoreResult`: per-principle scores beside `.total()`."""
        from tether.infra.texts import (
            plain_text,  # as the train reward joins them (tune.rewards.judged_texts)
        )

        texts = [plain_text(p) + c for p, c in zip(prompts, completions)] if self.include_prompt else list(completions)
        return self.evaluator.score(texts)

    def score(self, prompts: Sequence[str], completions: Sequence[str]) -> np.ndarray:
        return np.asarray(self.result(prompts, completions).total(), dtype=float)


class FolderGold:
    """A gold judge fitted by `tether gold fit` (`GoldJudge`): logistic regression on text features."""

    def __init__(self, judge):
        self.judge, self.name = judge, judge.name

    def result(self, prompts: Sequence[str], completions: Sequence[str]):
        """`GoldScores`, read like a `ScoreResult`: one column named by the fitted question."""
        return self.judge.score_texts(list(completions), list(prompts))

    def score(self, prompts: Sequence[str], completions: Sequence[str]) -> np.ndarray:
        return self.judge.score(list(prompts), list(completions))


Gold = ConstitutionGold | FolderGold


def gold_path_problem(path: Path | None) -> str | None:
    """Why a config's gold path cannot be a gold folder, or None: for the configs' validators.

    Only a folder is checked here (gold.json present and readable); a missing path or a bad
    YAML is reported by `check_gold` when the run starts, so a stored config whose gold moved
    still loads for the commands that do not score with it (sft, report).
    """
    if path is None or not Path(path).is_dir():
        return None
    from tether.labels.gold import GoldJudge

    try:
        GoldJudge.load(path)
    except TetherError as e:
        return str(e)
    return None


def _valid_gold_path(path: Path | None) -> Path | None:
    if problem := gold_path_problem(path):  # a folder without a readable gold.json, before any model loads
        raise ValueError(problem)
    return path


GoldPath = Annotated[Path | None, AfterValidator(_valid_gold_path)]  # a config's gold_constitution field


def check_gold(path: Path | None, device: str = "auto"):
    """The gold at `path` read and checked without a model: a `Constitution`, a `GoldJudge`, or None."""
    if path is None:
        return None
    path = Path(path)
    if path.is_dir():
        from tether.labels.gold import GoldJudge

        return GoldJudge.load(path, device=device)
    if not path.exists():
        raise TetherError(f"{path}: no such file or folder; gold_constitution takes a constitution YAML "
                          f"or a folder made by `tether gold fit`")
    from tether.judge.constitution import load_constitution

    return load_constitution(path)


def load_gold(config, checked=None, shared: tuple | None = None, include_prompt: bool = True) -> Gold | None:
    """The config's gold judge, ready to score; None without one.

    `config` names gold_constitution, gold_model, gold_debias, judge_model, judge_batch_size,
    device and dtype (a tune or a sample config). `checked` is `check_gold`'s result when the
    caller checked early; `shared` is the train judge's (model, tokenizer), reused when the gold
    constitution names no other model. A folder ignores gold_model and gold_debias.
    """
    if config.gold_constitution is None:
        return None
    spec = checked if checked is not None else check_gold(config.gold_constitution, config.device)
    from tether.labels.gold import GoldJudge

    if isinstance(spec, GoldJudge):
        return FolderGold(spec)
    from tether.infra.models import load_causal_lm
    from tether.judge.evaluator import Evaluator

    if shared is None or config.gold_model not in (None, config.judge_model):
        shared = load_causal_lm(config.gold_model or config.judge_model, device=config.device, dtype=config.dtype)
    model, tokenizer = shared
    evaluator = Evaluator(model, spec, tokenizer=tokenizer, debias=config.gold_debias, batch_size=config.judge_batch_size)
    return ConstitutionGold(evaluator, include_prompt)
