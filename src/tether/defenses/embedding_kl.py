"""KL in an embedding space: a reward term that keeps the policy's text near the base model's.

The token KL is the base model reading the policy's text, so a habit the base finds more
likely the more it is repeated ("yes yes yes", "dear diary, dear diary") normalises itself
and the KL grows slowly. Here the base never reads the policy's text. For each prompt the
base model's own completions, sampled once before training and cached in the run directory
(`base_samples.jsonl`), are embedded with a sentence embedder, and each policy completion is
paid −d, its distance from them (the tune config's `embedding_kl.coef` is λ, the weight TRL
gives this reward). The source text samples the base anew at every step; the base does not
change, so a cache gives the same expectation at no cost per step (docs/design-defenses.md).

d is centred on the base's own spread, so the base's own samples pay 0 on average, as
KL(p‖p) = 0:

- `cosine`: 1 − cos(completion, mean base embedding), minus the mean of that distance for a
  base sample to the mean of the *other* base samples (leave-one-out);
- `mmd`: the completion's share of the unbiased RBF-kernel MMD² between the step's
  completions for the prompt and the base completions,
  k̄(x, other completions) + k̄(base, base) − 2·k̄(x, base), whose mean over the group is the
  MMD² estimate. It also charges completions that crowd together: a collapsed group is far
  from a varied base even when each member sits near the base's centre.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from tether.infra.models import embed
from tether.infra.texts import plain_text


class EmbeddingKLConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    coef: float = Field(0.0, ge=0, description="λ: the penalty's weight in the reward; 0 switches it off")
    distance: Literal["mmd", "cosine"] = Field(
        "mmd", description="mmd: RBF-kernel MMD to the base completions (charges collapse too); cosine: to their mean"
    )
    bandwidth: float | None = Field(None, gt=0, description="mmd: the RBF kernel's σ; null takes the median base distance")


class EmbeddingKL:
    """A TRL reward function: −d(completion, the base model's completions for its prompt).

    Args:
        embedder: a sentence-transformers model.
        base_samples: prompt -> the base model's completions for it.
        distance: `cosine` or `mmd` (see the module docstring).
        bandwidth: the RBF kernel's σ for `mmd`; None takes the median distance between base
            completions of the same prompt (the median heuristic).
    """

    __name__ = "embedding_kl"

    def __init__(self, embedder, base_samples: dict[str, list[str]], distance: Literal["cosine", "mmd"] = "mmd",
                 bandwidth: float | None = None):
        if distance not in ("cosine", "mmd"):
            raise ValueError(f"distance={distance!r}: write cosine or mmd")
        self.embedder, self.distance = embedder, distance
        self.base = {p: embed(embedder, c) for p, c in base_samples.items() if len(c) >= 2}
        self.bandwidth = bandwidth or _median_distance(list(self.base.values()))
        self.centres = {p: _unit(e.mean(axis=0)) for p, e in self.base.items()}
        self.cosine_baseline = {p: _leave_one_out_distance(e) for p, e in self.base.items()}
        self.base_kernel = {p: _off_diagonal_mean(self._kernel(e, e)) for p, e in self.base.items()}
        self.last_values = np.zeros(0)  # the latest batch's rewards, −d, for the monitor callback
        self.last_seconds = 0.0

    def _kernel(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        squared = np.maximum(2 - 2 * a @ b.T, 0)  # unit vectors: |a - b|² = 2 - 2 a·b
        return np.exp(-squared / (2 * self.bandwidth**2))

    def __call__(self, prompts: Sequence, completions: Sequence, **kwargs) -> list[float | None]:
        start = time.perf_counter()
        self.last_values = -self.distances([plain_text(p) for p in prompts], [plain_text(c) for c in completions])
        self.last_seconds = time.perf_counter() - start
        return [None if np.isnan(v) else float(v) for v in self.last_values]

    def distances(self, prompts: Sequence[str], completions: Sequence[str]) -> np.ndarray:
        """(n,) centred distances; NaN for a prompt with no cached base completions."""
        vectors = embed(self.embedder, completions)
        out = np.full(len(prompts), np.nan)
        for prompt in set(prompts):
            if prompt not in self.base:
                continue
            rows = [i for i, p in enumerate(prompts) if p == prompt]
            out[rows] = self._group_distances(prompt, vectors[rows])
        return out

    def _group_distances(self, prompt: str, group: np.ndarray) -> np.ndarray:
        if self.distance == "cosine":
            return 1 - group @ self.centres[prompt] - self.cosine_baseline[prompt]
        to_base = self._kernel(group, self.base[prompt]).mean(axis=1)
        if len(group) > 1:
            siblings = self._kernel(group, group)
            to_siblings = (siblings.sum(axis=1) - np.diag(siblings)) / (len(group) - 1)
        else:  # no siblings to compare with: that term is taken at its base value
            to_siblings = np.full(1, self.base_kernel[prompt])
        return to_siblings + self.base_kernel[prompt] - 2 * to_base


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


def _leave_one_out_distance(e: np.ndarray) -> float:
    """Mean cosine distance of each base sample to the mean of the others."""
    total = e.sum(axis=0)
    return float(np.mean([1 - e[i] @ _unit(total - e[i]) for i in range(len(e))]))


def _off_diagonal_mean(k: np.ndarray) -> float:
    n = len(k)
    return float((k.sum() - np.trace(k)) / (n * (n - 1)))


def _median_distance(groups: list[np.ndarray]) -> float:
    distances = [np.sqrt(np.maximum(2 - 2 * e[i] @ e[j], 0)) for e in groups
                 for i in range(len(e)) for j in range(i + 1, len(e))]
    return float(np.median(distances)) if distances else 1.0
