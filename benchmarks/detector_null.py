"""Null runs for benchmarks/detector_defaults.py: runs of the untuned base policy against itself.

A null run is what a tune run would log if its policy never moved: each step draws its prompts
as TRL's sampler does (shuffled passes over the prompts) and `completions_per_prompt` cached base
completions of each, without replacement within the run, and measures them with the package's
own code, as `watch/callbacks.py` does: `batch_values`, `EmbeddingDrift` against a base set
drawn apart from the run's completions (by `sample_base`, as a run caches it), `ShiftTest` on the
same vectors. The detectors are then replayed with `tether.watch.detectors.check` and
`tether.watch.changepoint.cusum`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tether.watch import changepoint
from tether.watch.detectors import MONITOR_LIMITS, DetectorConfig, check
from tether.watch.drift import EmbeddingDrift
from tether.watch.metrics import batch_values
from tether.watch.shift import ShiftTest, level

# The run statistic each threshold detector compares with its limit, and the side that trips.
UP = [*MONITOR_LIMITS, "drift", "drift (matched sampler)"]
DOWN = ["distinct_2_drop"]


@dataclass(frozen=True)
class Shape:
    steps: int  # a run's planned steps
    prompts_per_step: int
    completions: int  # per prompt and step
    base_n: int  # base samples per prompt, what a run caches


class CachedEmbedder:
    """The run's sentence embedder with each text embedded once (null runs reuse a pool of texts)."""

    def __init__(self, embedder, texts):
        self.embedder, self.vectors = embedder, {}
        self.encode(list(texts))

    def get_sentence_embedding_dimension(self) -> int:
        return self.embedder.get_sentence_embedding_dimension()

    def encode(self, texts, normalize_embeddings=True, show_progress_bar=False):
        missing = [t for t in dict.fromkeys(texts) if t not in self.vectors]
        if missing:
            vectors = self.embedder.encode(missing, normalize_embeddings=True, show_progress_bar=False)
            self.vectors.update(zip(missing, vectors))
        return np.stack([self.vectors[t] for t in texts])


class Draws:
    """A prompt's completions drawn without replacement within a run; a pool is reshuffled only when spent."""

    def __init__(self, pool: dict[str, list[str]], rng: np.random.Generator):
        self.pool, self.rng, self.left = pool, rng, {p: [] for p in pool}

    def take(self, prompt: str, n: int) -> list[str]:
        out = []
        while len(out) < n:
            if not self.left[prompt]:
                self.left[prompt] = list(self.rng.permutation(len(self.pool[prompt])))
            out.append(self.pool[prompt][self.left[prompt].pop()])
        return out


def prompt_order(prompts: list[str], shape: Shape, rng: np.random.Generator) -> list[list[str]]:
    """Each step's prompts: shuffled passes over the prompts, as TRL's sampler draws them."""
    order: list[str] = []
    while len(order) < shape.steps * shape.prompts_per_step:
        order += [prompts[i] for i in rng.permutation(len(prompts))]
    k = shape.prompts_per_step
    return [order[i * k : (i + 1) * k] for i in range(shape.steps)]


def null_run(pool, base_pool, embedder, shape: Shape, config: DetectorConfig, rng, seed: int, shift: bool = True):
    """One run's metrics, step by step, as the detector callback logs them.

    `drift/embedding` and `shift/p_value` are measured against `base_n` completions per prompt of
    `base_pool` (sampled by `sample_base`, as a run does); `drift/matched` and `shift/matched_p`
    against `base_n` more of the run's own sampler, drawn before and apart from its steps. `shift`
    False skips the shift tests (their permutations cost most of a null run).
    """
    draws = Draws(pool, rng)
    sets = {
        "": {p: list(rng.choice(c, shape.base_n, replace=False)) for p, c in base_pool.items()},
        "matched": {p: draws.take(p, shape.base_n) for p in pool},
    }
    drifts = {name: EmbeddingDrift(embedder, base) for name, base in sets.items()}
    shifts = {
        name: ShiftTest(d.base_vectors, config.shift_window, config.shift_alpha, seed) for name, d in drifts.items()
    }
    history = []
    for step, prompts in enumerate(prompt_order(list(pool), shape, rng), 1):
        keys = [p for p in prompts for _ in range(shape.completions)]
        texts = [c for p in prompts for c in draws.take(p, shape.completions)]
        metrics = {"step": step, **batch_values(texts)}
        for name, drift in drifts.items():
            distance = float(np.nanmean(drift.distances(keys, texts)))
            test = shifts[name].update(step, keys, drift.last_vectors, shape.steps) if shift else {}
            if name:
                metrics.update({f"drift/{name}": distance, f"shift/{name}_p": test.get("shift/p_value", np.nan)})
            else:
                metrics.update({"drift/embedding": distance, **test})
        history.append(metrics)
    return history


def run_statistics(history: list[dict], config: DetectorConfig) -> dict[str, float]:
    """The statistic each detector's limit is compared with, over the whole run (max, or min for a drop)."""

    def col(key):
        return np.array([m.get(key, np.nan) for m in history], dtype=float)

    window = np.ones(config.drift_window) / config.drift_window
    stats = {name: float(np.nanmax(col(f"monitor/{name}"))) for name in MONITOR_LIMITS}
    d2 = col("monitor/distinct_2")
    stats["distinct_2_drop"] = float(np.min(d2[1:] / d2[0]))
    stats["drift"] = float(np.convolve(col("drift/embedding"), window, mode="valid").max())
    stats["drift (matched sampler)"] = float(np.convolve(col("drift/matched"), window, mode="valid").max())
    for name, key in [("shift", "shift/p_value"), ("shift (matched sampler)", "shift/matched_p")]:
        p = col(key)
        stats[name] = float(np.nanmin(p)) if np.isfinite(p).any() else np.nan
    return stats


def first_trips(history: list[dict], config: DetectorConfig, steps: int) -> dict[str, int]:
    """The step each detector first fires at in this run, replayed with the package's own rules."""
    fired: dict[str, int] = {}
    plain = config.model_copy(update={"cusum_series": []})  # the CUSUM is replayed once per series below
    for end in range(1, len(history) + 1):
        for trip in check(history[:end], plain, steps=steps):
            fired.setdefault(trip.detector, trip.step)
    matched = [m.get("shift/matched_p", np.nan) for m in history]
    hit = next((i for i, p in enumerate(matched) if p <= level(config.shift_alpha, steps)), None)
    if hit is not None:
        fired["shift (matched sampler)"] = history[hit]["step"]
    for key in config.cusum_series:
        series = [m[key] for m in history if isinstance(m.get(key), (int, float))]
        at = changepoint.cusum(
            series, config.cusum_warmup, config.cusum_k, config.cusum_h, changepoint.FLOORS.get(key, 0)
        )
        if len(series) == len(history) and at is not None:
            fired[f"cusum:{key}"] = history[at]["step"]
    return fired


def derived_limits(stats: list[dict[str, float]], quantile: float) -> dict[str, float]:
    """The limit a base-like run passes with probability `quantile` over a whole run: the `quantile`
    of the run maximum (the 1 - `quantile` of the run minimum for distinct_2_drop), an observed value
    (inverted CDF), so that a run trips when its statistic is beyond it with probability <= 1 - quantile."""
    out = {}
    for name in UP:
        out[name] = float(np.quantile([s[name] for s in stats], quantile, method="inverted_cdf"))
    for name in DOWN:
        out[name] = float(np.quantile([s[name] for s in stats], 1 - quantile, method="inverted_cdf"))
    return out


def step_summary(histories: list[list[dict]], keys: list[str]) -> dict[str, dict[str, float]]:
    """Per-step distribution of each logged series over all null steps: mean, sd, max."""
    out = {}
    for key in keys:
        values = np.array([m[key] for h in histories for m in h if key in m], dtype=float)
        out[key] = {"mean": float(values.mean()), "sd": float(values.std()), "max": float(values.max())}
    return out
