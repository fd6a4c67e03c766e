"""A habit detector with no list of habits: which words or marks a policy now writes far more often than before.

    found = lexical_shift(window_texts, reference_texts, alpha=1e-3)   # [Shift(token, rate, base_rate, ratio, p), ...]

Texts are cut into surface tokens: lower-cased words, and every punctuation mark or symbol on
its own (`!`, `?`, `…`, an emoji), so a habit the word monitors cannot see (an exclamation mark
on every sentence, a smiley, "honestly") is counted like any word. For each token, the count in
the window is tested against the reference's rate with a one-sided binomial test (scipy); a
token is a habit when its rate is at least `min_ratio` times the reference's (plus a small
floor, so a token the reference never wrote is not infinitely surprising), it occurs at least
`min_count` times, and its p-value is under `alpha` divided by the tokens tested (Bonferroni).
The reference is what the policy wrote before (a deployment's base samples, a run's first steps).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

TOKEN = re.compile(r"[^\W_]+(?:['’][^\W_]+)?|[^\w\s]", re.UNICODE)


@dataclass
class Shift:
    token: str
    rate: float  # per surface token, in the window
    base_rate: float  # ... in the reference
    ratio: float
    p_value: float


def surface_tokens(text: str) -> list[str]:
    """Lower-cased words (with an inner apostrophe) and single marks.

    >>> surface_tokens("Yes!! It's 3 o'clock :)")
    ['yes', '!', '!', "it's", '3', "o'clock", ':', ')']
    """
    return [t.lower() for t in TOKEN.findall(text)]


def lexical_shift(texts: Sequence[str], reference: Sequence[str], alpha: float = 1e-3, min_ratio: float = 3.0,
                  min_count: int = 5) -> list[Shift]:
    """The tokens `texts` use far more than `reference` does, most surprising first."""
    from scipy.stats import binom

    window = Counter(t for text in texts for t in surface_tokens(text))
    base = Counter(t for text in reference for t in surface_tokens(text))
    n, m = sum(window.values()), sum(base.values())
    if not n or not m:
        return []
    tested = [t for t, c in window.items() if c >= min_count]
    found = []
    for token in tested:
        base_rate = (base[token] + 0.5) / (m + 1)  # half a count: a token never seen before is rare, not impossible
        rate = window[token] / n
        if rate < min_ratio * base_rate:
            continue
        p = float(binom.sf(window[token] - 1, n, base_rate))  # P(at least this many at the reference's rate)
        if p < alpha / max(len(tested), 1):
            found.append(Shift(token, rate, base[token] / m, rate / base_rate, p))
    return sorted(found, key=lambda s: s.p_value)
