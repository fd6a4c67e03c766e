"""Process-based supervision's reward: every step of a completion judged blind to what came after it.

    reward_mode: process          # in a tune config: outcome (default) | process | both
    process: {split: sentences, max_steps: 8, advantage: step}

`ProcessReward` is a TRL reward function: it splits each completion into steps (infra/steps.py),
has the judge score each step on the prompt and the steps up to it (judge/steps.py: blind by
construction), keeps the steps in `last_steps` and returns each completion's mean step score (what
TRL logs under rewards/process/mean). The trainer (tune/process.py) turns the steps into per-token
advantages; TRL's own outcome advantage is not paid this term (its weight in TRL's sum is 0).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from tether.infra.texts import plain_text
from tether.judge.steps import score_steps
from tether.labels.gold_judge import GoldPath


class ProcessConfig(BaseModel):
    """How `reward_mode: process | both` cuts completions into steps and turns step scores into advantages."""

    model_config = ConfigDict(extra="forbid")
    split: str = Field("sentences", description="where a step ends: sentences (pysbd), lines, re:PATTERN (each match a "
                       "step) or python:MODULE:FUNCTION (text -> [(start, end)])")
    max_steps: int = Field(8, ge=1, description="at most this many steps a completion; the rest merge into the last")
    advantage: Literal["step", "to_go"] = Field(
        "step", description="a token's process advantage: step (its own step's normalized score) or to_go (the sum of "
        "the normalized scores of its step and every later one, as DeepSeekMath's process supervision); scores are "
        "normalized over all steps of the prompt's group: (score - mean) / (std + 1e-4)")
    weight: float = Field(1.0, gt=0, description="reward_mode both: the process advantage's weight beside the outcome's")
    judge: GoldPath = Field(None, description="the step judge: a gold folder fitted to a reader's step labels (`tether "
                            "label --steps`, then `tether gold fit`; relative to the working directory), reading the prompt and steps 1..k; "
                            "default: the constitution's judges")

    @field_validator("split")
    @classmethod
    def _split(cls, value: str) -> str:
        from tether.infra.steps import check_how

        check_how(value)
        return value


class ProcessReward:
    """TRL reward function: the mean step score; the steps themselves in `last_steps` (one list per completion)."""

    __name__ = "process"

    def __init__(self, scorer, config: ProcessConfig):
        self.scorer, self.config = scorer, config
        self.last_steps: list[list[dict]] = []
        self.last_values = np.zeros(0)
        self.last_seconds = 0.0

    def __call__(self, prompts: Sequence, completions: Sequence, **kwargs) -> list[float]:
        start = time.perf_counter()
        prompts, completions = [plain_text(p) for p in prompts], [plain_text(c) for c in completions]
        self.last_steps = score_steps(self.scorer, prompts, completions, self.config.split, self.config.max_steps)
        self.last_values = np.array([np.mean([s["score"] for s in steps]) if steps else 0.0 for steps in self.last_steps])
        self.last_seconds = time.perf_counter() - start
        return [float(v) for v in self.last_values]


def step_scorer(reward, gold=None):
    """The step judge of a run: its step gold (`process.judge`, loaded), or the train judge alone with its cache grown
    along each completion (judge/steps.py), or, with more judges, all of them as the outcome reward combines them."""
    if gold is not None:
        return gold.score
    if not reward.extra:
        from tether.judge.steps import constitution_scorer

        return constitution_scorer(reward.evaluator, reward.include_prompt)
    from tether.rewards.constitution import ConstitutionReward

    return ConstitutionReward(reward.evaluator, reward.include_prompt, extra=reward.extra, ensemble=reward.ensemble,
                              ensemble_lambda=reward.ensemble_lambda).raw  # its own: the monitors read the outcome's
