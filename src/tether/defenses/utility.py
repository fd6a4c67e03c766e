"""An instrumental utility function: reward from embeddings of what we want, and of the steps that lead there.

The source text replaced its evaluator with the embedding of an objective and found it about
70-80% as good, with the expected failure: the policy collapses onto that one embedding. Its
fix: infer *instrumental* value embeddings from episodes that led toward the terminal ones,
and score each episode against the whole set, so that text which hits one target, or
repeats one phrase, earns less than text which moves through the valued steps.

The method (its reasons: docs/design-defenses.md):

- **Terminal values**: the config's example texts of what we want, embedded.
- **Parts**: an episode (a completion) is cut into sentences, or windows of words; each is
  embedded.
- **Credit, played backwards**: a part's progress r_t is its best cosine similarity to a
  terminal value; its credit is the discounted mean progress of the parts after it,
  V_t = (r_{t+1} + γ·r_{t+2} + γ²·r_{t+3} + …) / (1 + γ + γ² + …), computed from the last
  part back. A part is valued as a means, for where the episode went after it; the last
  part leads nowhere and is not stored (if it hit a target, the terminal value pays for it).
- **The store keeps memories by value and novelty**: every `update_every` steps the best
  episodes since the last update (the top `top_fraction` by their discounted mean progress, and
  only those within the run's detector limits on the text monitors, so a hack never
  becomes a value) give their parts
  with credit ≥ `min_credit`. A part within `merge_similarity` of a stored value reinforces
  it (count + 1, credit averaged: Hebb's rule) instead of adding a copy; the store keeps the
  `max_values` best.
- **Utility** of a completion: its coverage of the store. For a set of values v_j with
  weights w_j, coverage = Σ_j w_j·max_t cos(part_t, v_j) / Σ_j w_j: the value-weighted mean,
  over values, of the best similarity any part reaches. Utility = (1 − s)·coverage(terminals)
  + s·coverage(instrumental values, weighted by credit), s = `instrumental_share`. A text that
  repeats one phrase covers one value however often it says it; a text that moves through
  several valued steps covers many.
- `mode: terminal` is the source text's first experiment, the reward alone: the max (or a
  soft-max) of the whole completion's similarity to the terminal values.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from tether.defenses.values import ValueStore, nearest_texts
from tether.errors import TetherError
from tether.infra import jsonl
from tether.infra.models import embed
from tether.infra.rundir import RunDir
from tether.infra.texts import plain_text
from tether.watch.detectors import DetectorConfig
from tether.watch.metrics import text_values, trips

SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")


class UtilityConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    weight: float = Field(0.0, ge=0, description="the utility's weight in the reward; 0 switches it off")
    terminals: list[str] = Field(default_factory=list, description="texts of what we want: the terminal values")
    mode: Literal["store", "terminal"] = Field(
        "store", description="store: coverage of terminal and instrumental values; terminal: similarity to the terminals alone"
    )
    aggregate: Literal["max", "softmax"] = Field("max", description="terminal mode: max or soft-max over the terminals")
    softmax_temperature: float = Field(0.1, gt=0, description="terminal mode, softmax: temperature in cosine units")
    instrumental_share: float = Field(0.5, ge=0, le=1, description="share of the utility that comes from instrumental values")
    update_every: int = Field(5, ge=1, description="learn instrumental values from the run's episodes every N steps")
    top_fraction: float = Field(0.25, gt=0, le=1, description="the share of episodes, best first, that values are learned from")
    parts: Literal["sentence", "window"] = Field("sentence", description="how an episode is cut into parts")
    window_words: int = Field(12, ge=1, description="words a part: a window, or the most a sentence part keeps")
    min_part_words: int = Field(4, ge=1, description="fewest words a part: shorter sentences join the next one")
    discount: float = Field(0.7, ge=0, le=1, description="γ of the backward credit pass: how far ahead a part looks")
    min_credit: float = Field(0.1, description="a part enters the store only with at least this credit")
    merge_similarity: float = Field(0.75, gt=0, le=1, description="a part this similar to a stored value reinforces it")
    max_values: int = Field(64, ge=1, description="instrumental values kept, by credit")


def split_parts(text: str, config: UtilityConfig) -> list[str]:
    """The steps of an episode: sentences (or the whole text, for `parts: window`), joined
    until a part has `min_part_words` words, cut into windows of at most `window_words`.

    A fragment of a word or two is not a step: a list of one-word lines would otherwise
    visit a value per line.
    """
    pieces = [s.split() for s in SENTENCE_END.split(text.strip()) if s.strip()] if config.parts == "sentence" \
        else [text.split()]
    chunks: list[list[str]] = []
    for words in pieces:  # join short sentences to the next one
        if chunks and len(chunks[-1]) < config.min_part_words:
            chunks[-1] += words
        else:
            chunks.append(list(words))
    out: list[list[str]] = []
    for words in chunks:
        windows = [words[i : i + config.window_words] for i in range(0, len(words), config.window_words)]
        for window in windows:  # a short tail joins the window before it
            if out and len(window) < config.min_part_words and len(out[-1]) < config.window_words + config.min_part_words:
                out[-1] += window
            else:
                out.append(window)
    if len(out) > 1 and len(out[-1]) < config.min_part_words:  # a short last part joins the one before
        out[-2] += out.pop()
    return [" ".join(words) for words in out if words]


def backward_credit(progress: Sequence[float], discount: float) -> tuple[np.ndarray, float]:
    """Each part's credit for where the episode went *after* it, and the whole episode's value.

    Played from the last part back: credit_t = Σ_{k>t} γ^(k−t−1)·r_k / Σ_{k>t} γ^(k−t−1), the
    discounted mean progress of the parts that follow (NaN for the last part, which leads
    nowhere); the episode's value is the same mean taken from its first part.
    """
    credit, ahead, weight = np.full(len(progress), np.nan), 0.0, 0.0
    for t in reversed(range(len(progress))):
        if weight:
            credit[t] = ahead / weight
        ahead, weight = progress[t] + discount * ahead, 1 + discount * weight
    return credit, (ahead / weight if weight else 0.0)


def coverage(parts: np.ndarray, values: np.ndarray, weights: np.ndarray) -> float:
    """Σ_j w_j·max_t cos(part_t, v_j) / Σ_j w_j (unit vectors; no parts covers nothing)."""
    if len(parts) == 0 or len(values) == 0:
        return 0.0
    return float((parts @ values.T).max(axis=0) @ weights / weights.sum())


class InstrumentalUtility:
    """A TRL reward function: each completion's utility under the value store.

    It also keeps the episodes it scored; `update(step)` learns instrumental values from
    the best of them (`defenses.utility_callback.ValueStoreCallback` calls it every `update_every` steps).
    """

    __name__ = "utility"

    def __init__(self, embedder, config: UtilityConfig, store: ValueStore | None = None,
                 limits: dict[str, float] | None = None):
        if not config.terminals:
            raise TetherError("utility.terminals: give at least one text of what you want (the terminal values)")
        self.embedder, self.config = embedder, config
        # an episode that trips a monitor limit never becomes a value: the run's detector limits
        self.limits = limits if limits is not None else DetectorConfig().limits()
        self.store = store or ValueStore.from_terminals(self._embed, config.terminals)
        self.episodes: list[tuple[str, str]] = []  # (prompt, completion) since the last update
        self.last_values = np.zeros(0)
        self.last_seconds = 0.0  # scoring this batch, plus any store update since the last batch
        self._update_seconds = 0.0

    def _embed(self, texts: Sequence[str]) -> np.ndarray:
        return embed(self.embedder, texts)

    def __call__(self, prompts: Sequence, completions: Sequence, **kwargs) -> list[float]:
        start = time.perf_counter()
        completions = [plain_text(c) for c in completions]
        self.episodes += list(zip((plain_text(p) for p in prompts), completions))
        self.last_values = self.utilities(completions)
        self.last_seconds, self._update_seconds = time.perf_counter() - start + self._update_seconds, 0.0
        return self.last_values.tolist()

    def utilities(self, completions: Sequence[str]) -> np.ndarray:
        if not completions:
            return np.zeros(0)
        terminals, _ = self.store.of_kind("terminal")
        if self.config.mode == "terminal":
            similarity = self._embed(list(completions)) @ terminals.T  # (n, terminals)
            if self.config.aggregate == "max":
                return similarity.max(axis=1)
            t = self.config.softmax_temperature
            return t * np.log(np.exp(similarity / t).mean(axis=1))
        instrumental, credits = self.store.of_kind("instrumental")
        share = self.config.instrumental_share if len(instrumental) else 0.0
        pieces = [split_parts(c, self.config) for c in completions]
        vectors = self._embed([p for parts in pieces for p in parts])  # one batch for the whole step
        ends = np.cumsum([len(parts) for parts in pieces])
        out = []
        for parts in np.split(vectors, ends[:-1]):
            out.append((1 - share) * coverage(parts, terminals, np.ones(len(terminals)))
                       + share * coverage(parts, instrumental, np.maximum(credits, 1e-6)))
        return np.array(out)

    def summary(self) -> dict:
        """Logged each step beside the utility's mean: how many instrumental values it has learned."""
        return {"values": len(self.store.of_kind("instrumental")[1])}

    def update(self, step: int, episodes: list[tuple[str, str]] | None = None) -> dict:
        """Learn instrumental values from the best episodes since the last update."""
        start = time.perf_counter()
        episodes, self.episodes = (self.episodes if episodes is None else episodes), []
        terminals, _ = self.store.of_kind("terminal")
        scored = []
        for _prompt, completion in episodes:
            parts = split_parts(completion, self.config)
            if not parts or trips(text_values(completion), self.limits):
                continue  # whitelist: degenerate text never becomes a value
            vectors = self._embed(parts)
            credit, value = backward_credit((vectors @ terminals.T).max(axis=1), self.config.discount)
            scored.append((value, completion, parts, vectors, credit))
        scored.sort(key=lambda s: -s[0])
        outcome = {"added": 0, "reinforced": 0}
        for _, completion, parts, vectors, credit in scored[: max(1, round(self.config.top_fraction * len(scored)))]:
            for text, vector, c in zip(parts, vectors, credit):
                if c >= self.config.min_credit:  # NaN (the last part) fails too
                    outcome[self.store.learn(vector, text, float(c), step, completion, self.config)] += 1
        self._update_seconds += time.perf_counter() - start
        return {"episodes": len(episodes), "eligible": len(scored), **outcome,
                "values": len(self.store.entries) - len(terminals)}


def read_values(run_dir: str | Path, k: int = 3, trust_remote_code: bool = False) -> list[dict]:
    """`tether values RUN_DIR`: each value of the run's store, with the run's k nearest completion parts.

    Everything is read before the embedder loads; `trust_remote_code` is this command's own (never the run's)."""
    from tether.infra.models import load_embedder

    run = RunDir(run_dir)
    if not (run.path / "values" / "values.json").exists():
        raise TetherError(f"{run.path}: no value store (values/values.json); it is written by runs with utility.weight > 0")
    store = ValueStore.load(run.path / "values")
    config = run.config()
    utility = UtilityConfig.model_validate(config.get("utility", {}))
    parts = []
    for row in jsonl.read(run.path / "samples.jsonl"):
        parts += split_parts(row["completion"], utility)
    parts = list(dict.fromkeys(parts))
    embedder = load_embedder(config.get("embedder") or "embedded:all-minilm-l6-v2", trust_remote_code=trust_remote_code)
    near = nearest_texts(store, lambda texts: embed(embedder, texts), parts, k)
    rows = [{**entry, "nearest": [{"similarity": round(s, 3), "text": t} for s, t in n]}
            for entry, n in zip(store.entries, near)]
    return sorted(rows, key=lambda r: (r["kind"] != "terminal", -r["credit"]))
