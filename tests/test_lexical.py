"""The lexical habit detector: a mark or word written far more often than before trips; the same text does not."""

from __future__ import annotations

import random

from tether.watch.lexical import lexical_shift, surface_tokens

WORDS = ("the dog ran to the park and the sun was warm . she laughed , and he waved at the old man by the gate "
         "while birds sang in the trees ; it was a quiet day , and nobody hurried home").split()


def stories(rng: random.Random, n: int, habit: str | None = None) -> list[str]:
    out = []
    for _ in range(n):
        words = [rng.choice(WORDS) for _ in range(40)]
        if habit:
            words = [w + habit if rng.random() < 0.15 else w for w in words]
        out.append(" ".join(words))
    return out


def test_a_new_mark_is_found_and_named():
    rng = random.Random(0)
    found = lexical_shift(stories(rng, 16, habit="!"), stories(rng, 64))
    assert found and found[0].token == "!" and found[0].base_rate == 0.0 and found[0].rate > 0.1


def test_text_like_the_reference_raises_no_alarm():
    alarms = 0
    for seed in range(40):
        rng = random.Random(seed)
        alarms += bool(lexical_shift(stories(rng, 16), stories(rng, 64)))
    assert alarms <= 1  # alpha 1e-3 over all tokens: a false alarm is rare


def test_surface_tokens_keep_marks_apart_and_words_whole():
    assert surface_tokens("Wow!! Don’t stop :)") == ["wow", "!", "!", "don’t", "stop", ":", ")"]
    assert lexical_shift([], ["a"]) == [] and lexical_shift(["a b"], []) == []
