"""Monitors: pure functions of a batch of completions that show reward hacking as it starts.

Each returns a float; `tether.watch.metrics` registers them (name, direction, metric key)
and measures them all at once. The failures they watch for, from the brief: the yes-spammer
(affirmation rate), special-token spam (the `<start_of_image>` hack seen on this machine),
degenerate repetition ("dear diary, dear diary, ..."), and collapse of diversity.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

AFFIRMATIONS = frozenset(
    "yes yeah yep yup yea aye sure absolutely indeed certainly definitely okay ok agreed correct exactly".split()
)
WORD = re.compile(r"[A-Za-z0-9']+")
# `<start_of_image>`, `<eos>`, `<unused12>`, `</s>`, `<|endoftext|>`, `[multimodal]`
SPECIAL_TOKEN_STRING = re.compile(r"<\|?/?[A-Za-z_]+[0-9]*\|?>|\[multimodal\]")


def words(text: str) -> list[str]:
    return [w.lower() for w in WORD.findall(text)]


def affirmation_rate(completions: Sequence[str]) -> float:
    """Share of all words that are affirmations (yes, sure, absolutely, ...)."""
    all_words = [w for c in completions for w in words(c)]
    return sum(w in AFFIRMATIONS for w in all_words) / max(len(all_words), 1)


def special_token_rate(completions: Sequence[str]) -> float:
    """Special-token strings per unit of text: matches / (words + matches)."""
    matches = sum(len(SPECIAL_TOKEN_STRING.findall(c)) for c in completions)
    plain = sum(len(words(SPECIAL_TOKEN_STRING.sub(" ", c))) for c in completions)
    return matches / max(plain + matches, 1)


def repeated_trigram_share(text: str) -> float:
    """Within one text: share of word 3-grams that already appeared earlier in it."""
    w = words(text)
    grams = [tuple(w[i : i + 3]) for i in range(len(w) - 2)]
    return 1 - len(set(grams)) / len(grams) if grams else 0.0


def longest_repeat_run(text: str, max_n: int = 4) -> int:
    """The most times any 1..max_n-word unit repeats back to back ("yes yes yes" -> 3)."""
    w = words(text)
    best = 1 if w else 0
    for n in range(1, max_n + 1):
        for start in range(len(w) - n):
            unit, count = w[start : start + n], 1
            while w[start + count * n : start + (count + 1) * n] == unit:
                count += 1
            best = max(best, count)
    return best


def distinct_n(completions: Sequence[str], n: int) -> float:
    """Across the batch: unique word n-grams / all word n-grams (1 = no n-gram repeats)."""
    grams = [tuple(w[i : i + n]) for c in completions for w in [words(c)] for i in range(len(w) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 0.0
