"""The statistics of a summary: a mean with its 95% interval, a paired difference with its test, a win rate.

Seeds are the unit of replication: a run's evaluation mean is one observation, so an arm's
interval is Student's t over its seeds (none with one seed), and two arms, or an arm and the
base, are compared on the difference of their runs with the same seed (same training seed,
same evaluation prompts and draws), paired t over seeds. With 3 seeds the intervals are wide;
that is the honest width of three training runs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats


@dataclass(frozen=True)
class Estimate:
    mean: float
    low: float
    high: float
    n: int
    p: float | None = None  # two-sided p of "the mean is 0" (for differences)

    def text(self, digits: int = 3) -> str:
        if self.n == 0:
            return "-"
        body = f"{self.mean:+.{digits}f}"
        if math.isfinite(self.low):
            body += f" [{self.low:+.{digits}f}, {self.high:+.{digits}f}]"
        return body + (f" p={self.p:.2g}" if self.p is not None else "")


def mean_ci(values: Sequence[float], level: float = 0.95) -> Estimate:
    """Mean and Student-t interval; an interval of +-inf with fewer than 2 values (unknown, not zero)."""
    x = np.asarray([v for v in values if v is not None and np.isfinite(v)], dtype=float)
    if len(x) == 0:
        return Estimate(float("nan"), float("nan"), float("nan"), 0)
    if len(x) < 2:
        return Estimate(float(x[0]), float("-inf"), float("inf"), 1)
    half = stats.t.ppf(0.5 + level / 2, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x))
    return Estimate(float(x.mean()), float(x.mean() - half), float(x.mean() + half), len(x))


def paired(a: Sequence[float], b: Sequence[float], level: float = 0.95) -> Estimate:
    """a - b, matched by position (the same seed): mean, t interval and the paired t-test's p."""
    d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    d = d[np.isfinite(d)]
    estimate = mean_ci(d, level)
    if len(d) < 2:
        return estimate
    if np.all(d == d[0]):  # no spread: t is undefined. Two seeds that moved a count by the same amount are a
        # coincidence of discrete data, not certainty: the interval is unknown, no p (exact 0 differences: p 1)
        return Estimate(estimate.mean, float("-inf"), float("inf"), len(d), 1.0 if d[0] == 0 else None)
    return Estimate(estimate.mean, estimate.low, estimate.high, len(d), float(stats.ttest_1samp(d, 0.0).pvalue))


def win_rate(wins: int, losses: int, ties: int, level: float = 0.95) -> Estimate:
    """Share of comparisons won, a tie counting half, with a Wilson interval on the n comparisons."""
    n = wins + losses + ties
    if n == 0:
        return Estimate(float("nan"), float("nan"), float("nan"), 0)
    p = (wins + 0.5 * ties) / n
    z = stats.norm.ppf(0.5 + level / 2)
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    test = stats.binomtest(wins, wins + losses).pvalue if wins + losses else 1.0  # sign test, ties set aside
    return Estimate(p, centre - half, centre + half, n, float(test))
