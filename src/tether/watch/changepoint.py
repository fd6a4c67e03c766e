"""Change points: a sudden change in a logged series, without a hand-set level.

A two-sided CUSUM on a *self-starting* standardization (Hawkins 1987): each step's value
is standardized by the mean and standard deviation of all the steps before it (the first
`warmup` steps only start it), and turned into a N(0, 1) score through Student's t. Under
"nothing changes" the scores are exactly independent N(0, 1) whatever the series' scale,
so one drift `k` and threshold `h` (in standard deviations) serve every series.

    cusum([0.1, 0.12, 0.09, 0.11, 0.1, 0.8, 0.9], warmup=3)   # -> 6: the index it fires at

Why not standardize by the first `warmup` steps alone: from 5 points the standard
deviation is often half the true one, and on 200 steps of pure noise a fixed-reference
CUSUM (k=0.5, h=5) fired in 73% of simulated runs; self-starting with k=0.75, h=5: 4-5%
(benchmarks/detector_simulation.py, 1000 series; an earlier, smaller simulation gave 3%).
The price: a slow trend is partly absorbed into the reference, so this catches jumps,
not creeping change (the threshold detectors and the shift test cover that).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import stats

# The smallest standard deviation a series is given, in its own units: a flat start (KL is
# exactly 0 at step 1; a rate stuck at 0) would otherwise make any later change infinite.
# Each is a change too small to matter by itself.
FLOORS = {
    "reward/train": 0.05,  # log-odds
    "gold/score": 0.05,  # log-odds
    "kl": 0.02,  # nats per token; the kl threshold's default is 0.5
    "drift/embedding": 0.01,  # cosine distance
    "monitor/affirmation_rate": 0.005,
    "monitor/special_token_rate": 0.002,
    "monitor/repetition": 0.01,
    "monitor/longest_repeat_run": 0.5,  # repeats
    "monitor/distinct_1": 0.01,
    "monitor/distinct_2": 0.01,
    "monitor/words": 1.0,  # words
}


def scores(values: Sequence[float], warmup: int, floor: float = 0.0) -> np.ndarray:
    """The self-starting N(0, 1) score of each value after the first `warmup` (NaN before)."""
    x = np.asarray(values, dtype=float)
    out = np.full(len(x), np.nan)
    t = np.arange(len(x))[max(warmup, 2):]  # steps before each scored one
    if not len(t):
        return out
    total, square = np.cumsum(x)[t - 1], np.cumsum(x * x)[t - 1]
    mean = total / t
    sd = np.maximum(np.sqrt(np.maximum(square - t * mean**2, 0) / (t - 1)), max(floor, 1e-12))
    u = (x[t] - mean) / (sd * np.sqrt(1 + 1 / t))
    out[t] = stats.norm.ppf(stats.t.cdf(u, t - 1))
    return np.clip(out, -8, 8)  # one wild value counts as 8 standard deviations, not infinity


def cusum(values: Sequence[float], warmup: int = 3, k: float = 0.75, h: float = 5.0, floor: float = 0.0) -> int | None:
    """The index at which the two-sided CUSUM first exceeds `h`, or None."""
    up = down = 0.0
    for t, z in enumerate(scores(values, warmup, floor)):
        if np.isnan(z):
            continue
        up, down = max(0.0, up + z - k), max(0.0, down - z - k)
        if max(up, down) > h:
            return t
    return None


def statistic(values: Sequence[float], warmup: int = 3, k: float = 0.75, floor: float = 0.0) -> float:
    """The CUSUM's value at the last step (the larger arm): what a trip reports against `h`."""
    up = down = 0.0
    for z in scores(values, warmup, floor):
        if not np.isnan(z):
            up, down = max(0.0, up + z - k), max(0.0, down - z - k)
    return max(up, down)
