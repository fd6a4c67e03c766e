"""Embedding guidance: the corpus sampler's tree search, with the passage's embedding as the judge.

`tether sample --set search=tree` grows branches a chunk at a time and keeps the ones the
constitution's judge prefers; here the judge is the cosine between a branch's continuation
(the context left out, so the shared context does not flatten every score) and the passage,
in MiniLM's space. One branch is kept a round (width 1) from `candidates` children, picked by
softmax(similarity / selection_temperature): at 0.02 cosine units that is nearly the argmax,
while two children within a few hundredths of each other still both have a chance. Of the
last round's leaves the most similar is returned. The cost is `candidates` times the tokens
of one unsteered continuation; `candidates = 1` is plain sampling in chunks.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from tether.corpus.sample import tree_search
from tether.infra.generate import Generator


def guided(gen: Generator, similarity: Callable[[Sequence[str]], np.ndarray], context: str, candidates: int,
           max_tokens: int, chunk_tokens: int, selection_temperature: float, rng: np.random.Generator) -> str:
    """One continuation of `context`, grown toward high `similarity` (texts -> (n,) scores)."""
    def score(texts: Sequence[str]) -> np.ndarray:  # tree_search hands over context + continuation
        return similarity([t[len(context):] for t in texts])

    leaves = tree_search(gen, score, context, candidates, max_tokens, chunk_tokens, 1, selection_temperature, rng)
    return leaves[int(np.argmax(similarity(leaves)))] if len(leaves) > 1 else leaves[0]
