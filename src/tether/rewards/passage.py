"""The passage reward: a completion's similarity to the embedding of an objective, a `tether tune` term.

The source text replaced its evaluator with "an embedding of an objective" and found it
"about 70-80% as good". Here the objective is one or more passages (what the text should
be about and feel like); the reward is the cosine, in the sentence embedder's space, between
a completion and the passages' mean embedding (renormalised), so several passages pull
toward what they share. Logged per step as `defense/passage/mean` by the monitor callback
and as `rewards/passage/mean` by TRL. Its expected failure, as the source text says, is
collapse onto that one embedding; the drift monitor and `utility` are the counterweights.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np

from tether.errors import TetherError
from tether.infra.models import embed
from tether.infra.texts import plain_text


def passage_target(embedder, passages: Sequence[str]) -> np.ndarray:
    """(dim,) unit-length mean of the passages' unit embeddings."""
    if not passages:
        raise TetherError("passages: give at least one text (or @file) to reward similarity to")
    mean = embed(embedder, list(passages)).mean(axis=0)
    return mean / max(float(np.linalg.norm(mean)), 1e-12)


class PassageReward:
    """A TRL reward function: cosine(completion, mean passage embedding), in [-1, 1]."""

    __name__ = "passage"

    def __init__(self, embedder, passages: Sequence[str]):
        self.embedder = embedder
        self.target = passage_target(embedder, passages)
        self.last_values = np.zeros(0)
        self.last_seconds = 0.0

    def __call__(self, prompts: Sequence, completions: Sequence, **kwargs) -> list[float]:
        start = time.perf_counter()
        self.last_values = embed(self.embedder, [plain_text(c) for c in completions]) @ self.target
        self.last_seconds = time.perf_counter() - start
        return [float(x) for x in self.last_values]
