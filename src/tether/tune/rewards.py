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

It only turns verdicts into floats; judging is the evaluator's job.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from tether.infra.texts import plain_text
from tether.judge.evaluator import Evaluator, ScoreResult


def judged_texts(prompts: Sequence, completions: Sequence, include_prompt: bool = True) -> list[str]:
    """What the judge reads of a completion; one function, so `tether audit --run` judges as the run's reward did.

    >>> judged_texts([[{"role": "user", "content": "Hi."}]], [[{"role": "assistant", "content": "Hello!"}]])
    ['User: Hi.\\n\\nAssistant: Hello!']
    """
    completions = [plain_text(c) for c in completions]
    return [plain_text(p) + c for p, c in zip(prompts, completions)] if include_prompt else completions


class ConstitutionReward:
    """Reward = the constitution's combined score (signed log-odds) of each completion.

    Args:
        evaluator: the judge and constitution.
        include_prompt: judge prompt + completion (a story judged whole; a conversation with its
            roles), or the completion alone (a reply judged without its question): `judge_reads`.
        name: the metric name; TRL logs `rewards/{name}/mean`.
    """

    def __init__(self, evaluator: Evaluator, include_prompt: bool = True, name: str = "constitution"):
        self.evaluator = evaluator
        self.include_prompt = include_prompt
        self.__name__ = name
        # The latest batch, kept for the monitor callback (it runs after the step).
        self.last_prompts: list[str] = []
        self.last_completions: list[str] = []
        self.last_result: ScoreResult | None = None
        self.last_seconds = 0.0  # judging time, logged as time/train_judge

    def __call__(self, prompts: Sequence, completions: Sequence, **kwargs) -> list[float]:
        self.last_prompts = [plain_text(p) for p in prompts]
        self.last_completions = [plain_text(c) for c in completions]
        texts = judged_texts(self.last_prompts, self.last_completions, self.include_prompt)
        start = time.perf_counter()
        self.last_result = self.evaluator.score(texts)
        self.last_seconds = time.perf_counter() - start
        return [float(x) for x in self.last_result.total()]
