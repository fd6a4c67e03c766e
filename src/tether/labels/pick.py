"""Which samples a person should read: the ones that teach the gold most.

    tether label runs/cheerful --spec examples/labels_reading.yaml --out labels.jsonl \
        --pick 40 --by uncertain --gold examples/golds/cheerful_reward2_good
    tether label runs/cheerful --pick 40 --by disagree --gold GOLD --list > picked.jsonl   # for your own tool

- `uncertain`: where the gold is least sure: P(yes) closest to 1/2.
- `disagree`: where the train judge and the gold disagree most: |sigmoid(train) - P(yes)|, the
  train judge's score read from the sample (`train`, which run and sweep samples carry).
- `flagged`: samples of the steps where a detector fired (the run's events.jsonl), least sure first.
- `random`: a seeded draw, for the baseline of a label-efficiency curve.

The ranked pool is then taken round-robin across prompts (the best of each prompt, then the second
best, ...) and a sample whose MiniLM embedding is within `similar` cosine of one already picked is
passed over, so N picks cover N different things. The choice (`by`, rank, why, the gold's P(yes)) is
kept in each item's source, so it goes into the labels file with every answer, and a later analysis
can weight by it. The page stays blind: it never shows the source or the scores.
"""

from __future__ import annotations

import random
from dataclasses import replace
from pathlib import Path

import numpy as np

from tether.errors import TetherError
from tether.infra import jsonl, progress
from tether.labels.items import Item

BY = ("uncertain", "disagree", "flagged", "random")


def check_pick(n: int, by: str, gold: Path | None, spec_names: list[str] | None) -> None:
    """Refuse, before anything loads, a pick that cannot work."""
    if n < 1:
        raise TetherError(f"--pick {n}: must be at least 1")
    if by not in BY:
        raise TetherError(f"--by {by!r}: write {', '.join(BY)}")
    if by != "random" and gold is None:
        raise TetherError(f"--by {by}: needs the gold's P(yes): give --gold DIR (a folder made by `tether gold fit`)")
    if gold is not None:
        from tether.labels.gold import GoldJudge

        if not Path(gold).is_dir():
            raise TetherError(f"--gold {gold}: no such folder; give a folder made by `tether gold fit`")
        label = GoldJudge.load(gold).meta["label"]
        if spec_names is not None and label not in spec_names:
            raise TetherError(f"--gold {gold}: it predicts {label!r}, not a question of the spec "
                              f"({', '.join(spec_names)})")


def pick(items: list[Item], n: int, by: str, gold: Path | None = None, *, seed: int = 0, similar: float = 0.95,
         embedder: str | None = "embedded:all-minilm-l6-v2", device: str = "auto", p_yes=None,
         vectors=None) -> list[Item]:
    """The N items to read, best first, each with `pick` in its source; all of them (with a note) when fewer.

    `p_yes` (the gold's P(yes) per item) and `vectors` (the completions' unit embeddings) when the caller has them:
    a run's spot check has its gold's scores and its drift monitor's embeddings of the batch."""
    from tether.infra.texts import plain_text

    if len(items) <= n:
        progress.note(f"--pick {n}: the pool has {len(items)} samples; all of them are shown")
        n = len(items)
    if p_yes is not None:
        p_yes = np.asarray(p_yes, dtype=float)
    elif gold is not None:
        from tether.labels.gold import GoldJudge

        scores = GoldJudge.load(gold, device=device).score([plain_text(i.prompt) for i in items],
                                                           [i.completion for i in items])
        p_yes = 1 / (1 + np.exp(-np.asarray(scores, dtype=float)))
    value, why = _rank(items, by, p_yes, seed)
    order = sorted(range(len(items)), key=lambda k: -value[k])
    chosen = _spread(items, order, n, similar, embedder, device, vectors=vectors)
    return [replace(items[k], source={**items[k].source, "pick": {
        "by": by, "rank": r + 1, "why": why[k], **({"p_yes": round(float(p_yes[k]), 4)} if p_yes is not None else {})}})
        for r, k in enumerate(chosen)]


def _rank(items: list[Item], by: str, p_yes, seed: int) -> tuple[np.ndarray, list[str]]:
    """(a value per item, higher is picked first; why, in words)."""
    if by == "random":
        rng = random.Random(seed)
        return np.array([rng.random() for _ in items]), ["drawn at random"] * len(items)
    if by == "uncertain":
        return -np.abs(p_yes - 0.5), [f"gold P(yes) {p:.2f}" for p in p_yes]
    if by == "disagree":
        missing = [i for i in items if not isinstance(i.source.get("train"), (int, float))]
        if missing:
            raise TetherError(f"--by disagree: {len(missing)} sample(s) carry no train judge score (`train`), e.g. in "
                              f"{missing[0].source.get('file')}; pick from a run's or sweep's samples, or use --by uncertain")
        judge = 1 / (1 + np.exp(-np.array([i.source["train"] for i in items], dtype=float)))
        return np.abs(judge - p_yes), [f"judge P(yes) {j:.2f}, gold {p:.2f}" for j, p in zip(judge, p_yes)]
    flagged = _flagged_steps(items)
    value = np.array([(1.0 if (i.source.get("file"), i.source.get("step")) in flagged else 0.0) - abs(p - 0.5)
                      for i, p in zip(items, p_yes)])
    return value, [("a detector fired at its step" if (i.source.get("file"), i.source.get("step")) in flagged
                    else "no detector fired") + f"; gold P(yes) {p:.2f}" for i, p in zip(items, p_yes)]


def _flagged_steps(items: list[Item]) -> set[tuple[str, int]]:
    """(samples file, step) where the run's detectors fired (events.jsonl beside the samples)."""
    out = set()
    for file in {i.source.get("file") for i in items if i.source.get("file")}:
        events = Path(file).parent / "events.jsonl"
        out |= {(file, e.get("step")) for e in jsonl.read(events) if e.get("event") == "detector"}
    if not out:
        raise TetherError("--by flagged: no detector fired in these samples' runs (events.jsonl); use --by uncertain")
    return out


def _spread(items: list[Item], order: list[int], n: int, similar: float, embedder: str | None, device: str,
            vectors: np.ndarray | None = None) -> list[int]:
    """Round-robin across prompts in rank order, passing over near-duplicates of what is already picked.

    `vectors`: the completions' unit embeddings when the caller has them (a simulation picking round after round)."""
    seen: dict[str, int] = {}
    depth, rank = {}, {k: r for r, k in enumerate(order)}
    for k in order:  # the how-many-th best of its prompt
        depth[k] = seen[str(items[k].prompt)] = seen.get(str(items[k].prompt), -1) + 1
    rounds = sorted(order, key=lambda k: (depth[k], rank[k]))
    if vectors is None and embedder is not None and similar < 1:
        from tether.infra.models import embed, load_embedder

        vectors = np.asarray(embed(load_embedder(embedder, device=device), [items[k].completion for k in range(len(items))]))
    chosen: list[int] = []
    for k in rounds:
        if len(chosen) == n:
            break
        if vectors is not None and chosen and float(np.max(vectors[chosen] @ vectors[k])) >= similar:
            continue
        chosen.append(k)
    for k in rounds:  # too few distinct ones: fill with the next best rather than show fewer than asked
        if len(chosen) < n and k not in chosen:
            chosen.append(k)
    return chosen


def pick_unread(pool: Path, labels: Path, n: int, gold: Path, **options) -> list[Item]:
    """`pick(..., "uncertain", gold)` over the pool file's samples whose text no label in `labels` holds yet."""
    from tether.labels.items import read_items

    read = {(r["source"].get("prompt"), r["source"].get("completion")) for r in jsonl.read(labels) if r.get("kind") == "label"}
    unread = [i for i in read_items(pool) if (i.prompt, i.completion) not in read]
    return pick(unread, n, "uncertain", gold, **options) if unread else []
