"""Distribution shift: is this step's text still drawn from what the base model writes?

A two-sample test in embedding space between the policy's completions of the last
`window` steps and the cached base completions of the same prompts:

    mmd2, p = mmd_test(base_vectors, step_vectors, permutations=30000, seed=0, strata=(b, s))
    shift = ShiftTest(base_vectors_by_prompt, window=3, seed=0)
    shift.update(step, prompts, vectors, planned_steps=30)   # {"shift/mmd2": ..., "shift/p_value": ...}

Unlike `drift/embedding` (the distance to the base's mean, a level someone must choose),
the p-value has the same meaning on every run: under "nothing changed" it is uniform, so
testing each step at `alpha / steps` (Bonferroni over the run's planned steps) keeps the
chance of any false alarm in the whole run at or below `alpha`.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence

import numpy as np

STOP_AFTER = 20  # Besag-Clifford: stop permuting once this many permuted statistics reach the observed one
CHUNK = 4096  # permutations scored per matrix product (memory: CHUNK x n floats)


def level(alpha: float, steps: int) -> float:
    """The per-step level: Bonferroni over the run's planned steps (valid whatever the steps' dependence)."""
    return alpha / max(int(steps), 1)


def permutations_for(alpha: float, steps: int) -> int:
    """Enough permutations that p can fall well below the per-step level: the smallest p is 1/(1+P),
    and at 10/level a shift whose exact p is half the level is declared with high probability. The
    sequential stop makes unshifted steps cheap (about STOP_AFTER/p permutations)."""
    return math.ceil(10 / level(alpha, steps))


def mmd_test(base: np.ndarray, step: np.ndarray, permutations: int, seed: int,
             strata: tuple[np.ndarray, np.ndarray] | None = None) -> tuple[float, float]:
    """MMD^2 between two samples of unit vectors, (b, d) and (s, d), and its permutation p-value.

    Kernel: Gaussian, bandwidth the median pairwise distance of the pooled sample. It is
    characteristic (any difference of distributions has MMD > 0), where the linear kernel on
    unit vectors sees only a move of the mean: a policy that writes two kinds of text whose
    mean stays near the base's (half stories, half lists) would pass the linear test. At
    these sizes (tens of vectors) the kernel matrix costs nothing.

    p = (1 + #{permuted >= observed}) / (1 + P), exact for any P under exchangeability. With
    `strata` (a group id per base row and per step row, e.g. the prompt), labels are permuted
    only within a group: a step's completions are exchangeable with the base completions of
    *their own* prompt, not with another prompt's. Sequential (Besag-Clifford): once
    STOP_AFTER permuted statistics reach the observed one after L permutations, p = STOP_AFTER/L,
    also a valid p-value; a clear non-shift stops after a few hundred permutations.
    """
    base, step = np.asarray(base, dtype=float), np.asarray(step, dtype=float)
    if len(base) < 2 or len(step) < 2:
        raise ValueError(f"mmd_test needs at least 2 vectors a side, got {len(base)} and {len(step)}")
    pooled = np.concatenate([base, step])
    n = len(pooled)
    square = (pooled ** 2).sum(1)
    dist2 = np.maximum(square[:, None] + square[None, :] - 2 * pooled @ pooled.T, 0.0)
    median = float(np.median(dist2[np.triu_indices(n, 1)]))
    kernel = np.exp(-dist2 / (2 * median)) if median > 0 else np.ones((n, n))
    is_step = np.r_[np.zeros(len(base), bool), np.ones(len(step), bool)]
    weight = np.where(is_step, 1 / len(step), -1 / len(base))  # MMD^2 (biased) = w' K w
    observed = float(weight @ kernel @ weight)
    groups = np.zeros(n, int) if strata is None else np.r_[np.asarray(strata[0]), np.asarray(strata[1])]
    members = [np.flatnonzero(groups == g) for g in np.unique(groups)]
    rng = np.random.default_rng(seed)
    reached, done = 0, 0
    while done < permutations:
        size = min(CHUNK, permutations - done)
        w = np.empty((size, n))
        for idx in members:  # shuffle the labels inside each group, independently per permutation
            w[:, idx] = rng.permuted(np.tile(weight[idx], (size, 1)), axis=1)
        stats = ((w @ kernel) * w).sum(1)
        hits = np.cumsum(stats >= observed - 1e-12)
        if reached + hits[-1] >= STOP_AFTER:
            at = int(np.searchsorted(hits, STOP_AFTER - reached)) + 1  # permutations used when the STOP_AFTER-th hit came
            return observed, STOP_AFTER / (done + at)
        reached, done = reached + int(hits[-1]), done + size
    return observed, (1 + reached) / (1 + permutations)


class ShiftTest:
    """The per-step test against the base completions of the prompts in the last `window` steps.

    `base` maps a prompt to its base completions' unit embeddings (n, d); the vectors the
    drift monitor already computed are passed in, so nothing is embedded twice. A window
    pools steps because one step of 8 completions of one prompt is too small a sample: its
    smallest possible p (1 / C(16, 8) = 7.8e-5) barely reaches alpha/steps at 30 steps.
    """

    def __init__(self, base: dict[str, np.ndarray], window: int = 3, alpha: float = 0.01, seed: int = 0):
        self.base, self.window, self.alpha, self.seed = base, window, alpha, seed
        self.recent: deque[tuple[list[str], np.ndarray]] = deque(maxlen=window)

    def update(self, step: int, prompts: Sequence[str], vectors: np.ndarray, planned_steps: int) -> dict[str, float]:
        """Add this step's (prompt, vector) pairs; the test over the window, or {} when no prompt has base samples."""
        keep = [i for i, p in enumerate(prompts) if p in self.base]
        self.recent.append(([prompts[i] for i in keep], np.asarray(vectors)[keep]))
        step_prompts = [p for ps, _ in self.recent for p in ps]
        if len(step_prompts) < 2:
            return {}
        step_vectors = np.concatenate([v for _, v in self.recent if len(v)])
        present = list(dict.fromkeys(step_prompts))
        base_vectors = np.concatenate([self.base[p] for p in present])
        group = {p: g for g, p in enumerate(present)}
        strata = (np.concatenate([[group[p]] * len(self.base[p]) for p in present]),
                  np.array([group[p] for p in step_prompts]))
        mmd2, p = mmd_test(base_vectors, step_vectors, permutations_for(self.alpha, planned_steps),
                           seed=self.seed * 100003 + step, strata=strata)
        return {"shift/mmd2": mmd2, "shift/p_value": p}
