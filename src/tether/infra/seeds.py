"""The one seed formula: which random stream an item of work draws from.

Every draw that must be reproducible item by item (a prompt's candidates in `tether
sample`, a held-out prompt before and after `tether sft`, a prompt at each A of a blend
sweep) seeds torch with `item_seed(run_seed, index)` right before it. An item's draws then
do not depend on what ran before it: a resumed corpus draws what an uninterrupted one
would have, and the points of a sweep differ only by their weights.
"""

from __future__ import annotations

STRIDE = 100_003  # a prime above any prompt count, so (seed, index) pairs never collide


def item_seed(seed: int, index: int) -> int:
    """The seed of item `index` in a run seeded `seed`."""
    return seed * STRIDE + index


def base_samples_seed(seed: int) -> int:
    """The base model's own completions for drift, drawn on a stream apart from every item's."""
    return item_seed(seed, STRIDE - 1)
