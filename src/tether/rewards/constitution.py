"""Rewards: the constitution's verdict as a TRL reward function.

TRL calls a reward function as `fn(prompts=..., completions=..., **dataset_columns)` and
logs it under `rewards/{fn.__name__}/mean`. `ConstitutionReward` is such a callable, so
it drops into any user's own script:

    from trl import GRPOTrainer
    reward = ConstitutionReward(Evaluator("embedded:gemma-3-270m", "examples/cheerful.yaml"))
    GRPOTrainer(model=..., reward_funcs=[reward], ...)

With a conversational dataset TRL passes each prompt as a list of {role, content} messages
and each completion as the assistant's messages; the judge reads the turns with their roles
("User: ...\n\nAssistant: " + the reply, `infra.texts.plain_text`), or the reply alone. The
roles are text in the judged slot, tokenized as untrusted: a judge with `format: chat` puts
that text inside its own question turn, so no turn marker a policy writes can end that turn.

Several judges (`extra`: other constitutions, other models, paraphrases of one question) are
combined by `ensemble` (`judge.combine.combine_judges`), and the combined log-odds are shaped
(`tune.shaping`) into what is paid. It only turns verdicts into floats; judging is the evaluator's job.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np

from tether.infra.texts import judged_texts, plain_text
from tether.judge.combine import combine_judges
from tether.judge.evaluator import Evaluator, ScoreResult
from tether.rewards.shaping import RewardShape


class ConstitutionReward:
    """Reward = the constitution's combined score (signed log-odds) of each completion.

    Args:
        evaluator: the judge and constitution.
        include_prompt: judge prompt + completion (a story judged whole; a conversation with its
            roles), or the completion alone (a reply judged without its question): `judge_reads`.
        name: the metric name; TRL logs `rewards/{name}/mean`.
        extra: more judges, scored on the same texts; `ensemble` and `ensemble_lambda` combine them.
        shape: what the combined log-odds pay (default: themselves).
    """

    def __init__(self, evaluator: Evaluator, include_prompt: bool = True, name: str = "constitution", *,
                 extra: Sequence[Evaluator] = (), ensemble: str = "mean", ensemble_lambda: float = 1.0,
                 shape: RewardShape | None = None):
        self.evaluator, self.extra = evaluator, list(extra)
        self.include_prompt = include_prompt
        self.__name__ = name
        self.ensemble, self.ensemble_lambda = ensemble, ensemble_lambda
        combine_judges([[0.0]], ensemble)  # a wrong name fails here, not at the first step
        self.shape = shape or RewardShape()
        # The latest batch, kept for the monitor callback (it runs after the step).
        self.last_prompts: list[str] = []
        self.last_completions: list[str] = []
        self.last_result: ScoreResult | None = None
        self.last_seconds = 0.0  # judging time, logged as time/train_judge
        self.last_judges = np.zeros((0, 0))  # (judges, n) each judge's total; the main one first
        self.last_raw = np.zeros(0)  # (n,) the judges combined, in log-odds
        self.last_disagreement = np.zeros(0)  # (n,) the judges' standard deviation
        self.last_shaped = np.zeros(0)  # (n,) what was paid

    def __call__(self, prompts: Sequence, completions: Sequence, **kwargs) -> list[float]:
        self.last_prompts = [plain_text(p) for p in prompts]
        self.last_completions = [plain_text(c) for c in completions]
        start = time.perf_counter()
        self.last_raw = self.raw(self.last_prompts, self.last_completions)
        self.last_shaped = self.shape(self.last_prompts, self.last_raw)
        self.last_seconds = time.perf_counter() - start
        return [float(x) for x in self.last_shaped]

    def raw(self, prompts: Sequence, completions: Sequence) -> np.ndarray:
        """The judges' combined log-odds, before shaping (also how the reference shape scores the base)."""
        texts = judged_texts(prompts, completions, self.include_prompt)
        results = [judge.score(texts) for judge in [self.evaluator, *self.extra]]
        self.last_result = results[0]
        self.last_judges = np.stack([r.total() for r in results])
        combined, self.last_disagreement = combine_judges(self.last_judges, self.ensemble, self.ensemble_lambda)
        return combined
