"""Reward shaping: what the judges' combined log-odds r pay the policy.

- `raw`: r itself (unbounded; a policy that finds a way to push one judge to +20 is paid +20).
- `log_sigmoid`: log sigmoid(r) = log P(yes), as MiniHF's tuner pays: bounded above by 0, so once
  the judge is sure there is little left to gain, while a bad text still costs in full.
- `reference`: sigmoid(r - r_base), after "Preference As Reward" (arXiv 2502.18770): the probability
  that the completion beats the base model's typical one on the same prompt, in (0, 1); r_base is
  the mean score of the base model's own completions of that prompt (the run's base_samples.jsonl),
  scored once at the start by the same judges.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from tether.errors import TetherError

SHAPES = ("raw", "log_sigmoid", "reference")


def log_sigmoid(x: np.ndarray) -> np.ndarray:
    return -np.logaddexp(0.0, -np.asarray(x, dtype=float))


def sigmoid(x: np.ndarray) -> np.ndarray:
    return np.exp(log_sigmoid(x))


class RewardShape:
    """raw log-odds (n,) of n (prompt, completion) pairs -> the reward paid (n,).

    `baseline`: prompt (as `plain_text` renders it) -> r_base, needed by `reference` only.
    """

    def __init__(self, kind: str = "raw", baseline: dict[str, float] | None = None):
        if kind not in SHAPES:
            raise TetherError(f"reward_shape={kind!r}: write raw, log_sigmoid or reference")
        if kind == "reference" and not baseline:
            raise TetherError("reward_shape: reference needs the base model's scores per prompt (`reference_baseline`)")
        self.kind, self.baseline = kind, baseline or {}

    def __call__(self, prompts: Sequence[str], raw: np.ndarray) -> np.ndarray:
        raw = np.asarray(raw, dtype=float)
        if self.kind == "raw":
            return raw
        if self.kind == "log_sigmoid":
            return log_sigmoid(raw)
        missing = [p for p in prompts if p not in self.baseline]
        if missing:
            raise TetherError(f"reward_shape: reference: no base score for the prompt {missing[0][:60]!r}")
        return sigmoid(raw - np.array([self.baseline[p] for p in prompts]))


def reference_baseline(score: Callable[[list[str], list[str]], np.ndarray],
                       base_samples: dict[str, list[str]]) -> dict[str, float]:
    """r_base per prompt: the mean raw score of the base model's completions, all scored in one call."""
    prompts = [p for p, completions in base_samples.items() for _ in completions]
    completions = [c for cs in base_samples.values() for c in cs]
    scores = score(prompts, completions)
    out, start = {}, 0
    for prompt, cs in base_samples.items():
        out[prompt] = float(np.mean(scores[start : start + len(cs)]))
        start += len(cs)
    return out
