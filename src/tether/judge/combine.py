"""Turn per-principle scores into one number per text.

Scores are signed log-odds (positive = the good answer is likelier). Two ways to combine:
- `mean`: the weighted mean; a principle that is badly violated can be bought back by others.
- `softmin`: the weighted soft-minimum, -T * log(sum_i w_i * exp(-s_i / T)) with w summing
  to 1. The worst-satisfied principle dominates, as in MiniHF's evaluator; T -> 0 gives the
  hard minimum, T -> infinity the weighted mean. T is in log-odds units.
"""

from __future__ import annotations

import numpy as np


def weighted_mean(scores: np.ndarray, weights: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """scores (N, K), weights (K,) -> (N,)."""
    w = weights / weights.sum()
    return scores @ w


def weighted_softmin(scores: np.ndarray, weights: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """scores (N, K), weights (K,) -> (N,); never above the weighted mean, never below the min."""
    log_w = np.log(weights / weights.sum())
    z = -scores / temperature + log_w  # (N, K)
    peak = z.max(axis=1, keepdims=True)
    return -temperature * (peak[:, 0] + np.log(np.exp(z - peak).sum(axis=1)))


COMBINERS = {"mean": weighted_mean, "softmin": weighted_softmin}


# --- several judges into one reward (a judge ensemble) ------------------------------------
# Each judge's total is in the same units (signed log-odds), so they combine as principles do.
# `mean`: their average. `min`: the most sceptical judge decides, so a trick must fool every
# judge. `mean_minus_disagreement`: mean - lambda * their standard deviation, so a text the
# judges disagree on (a likely trick that fools only some) pays less than one they agree on.


def combine_judges(totals: np.ndarray, how: str = "mean", lam: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """totals (judges, N) -> (combined (N,), disagreement (N,): the judges' standard deviation per text)."""
    totals = np.asarray(totals, dtype=float)
    disagreement = totals.std(axis=0)
    if how == "mean":
        return totals.mean(axis=0), disagreement
    if how == "min":
        return totals.min(axis=0), disagreement
    if how == "mean_minus_disagreement":
        return totals.mean(axis=0) - lam * disagreement, disagreement
    raise ValueError(f"ensemble={how!r}: write mean, min or mean_minus_disagreement")


ENSEMBLES = ("mean", "min", "mean_minus_disagreement")
