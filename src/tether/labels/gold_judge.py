"""The gold judge, either kind: a held-out constitution, or a folder fitted to a person's labels.

    gold = load_gold(GoldSpec.of(config))         # None when the config names no gold
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
from dataclasses import dataclass
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


@dataclass(frozen=True)
class GoldSpec:
    """What loading a gold judge needs, and no more: its path and the settings a constitution gold is judged with."""

    path: Path | None
    model: str | None = None  # a constitution gold's model; None = the train judge's
    debias: bool = False
    judge_model: str = "embedded:gemma-3-270m"
    batch_size: int = 16
    device: str = "auto"
    dtype: str = "float32"
    trust_remote_code: bool = False  # the gold's model (a constitution's, or a fitted gold's hidden:MODEL)

    @classmethod
    def of(cls, config, path: Path | None | str = "gold_constitution") -> GoldSpec:
        """From a tune or sample config: its `gold_constitution`, or another `path` judged the same way."""
        gold = config.gold_constitution if path == "gold_constitution" else path
        return cls(Path(gold) if gold is not None else None, config.gold_model, config.gold_debias,
                   config.judge_model, config.judge_batch_size, config.device, config.dtype,
                   getattr(config, "trust_remote_code", False))


def load_gold(spec: GoldSpec, checked=None, shared: tuple | None = None, include_prompt: bool = True) -> Gold | None:
    """The gold judge, ready to score; None when `spec.path` is None.

    `checked` is `check_gold`'s result when the caller checked early; `shared` is the train
    judge's (model, tokenizer), reused when the gold constitution names no other model. A
    folder ignores `model` and `debias`.
    """
    if spec.path is None:
        return None
    checked = checked if checked is not None else check_gold(spec.path, spec.device)
    from tether.labels.gold import GoldJudge

    if isinstance(checked, GoldJudge):
        import dataclasses

        return FolderGold(dataclasses.replace(checked, trust_remote_code=spec.trust_remote_code))
    from tether.infra.models import load_causal_lm
    from tether.judge.evaluator import Evaluator

    if shared is None or spec.model not in (None, spec.judge_model):
        shared = load_causal_lm(spec.model or spec.judge_model, device=spec.device, dtype=spec.dtype,
                                trust_remote_code=spec.trust_remote_code, fast_head=True)
    model, tokenizer = shared
    evaluator = Evaluator(model, checked, tokenizer=tokenizer, debias=spec.debias, batch_size=spec.batch_size)
    return ConstitutionGold(evaluator, include_prompt)
