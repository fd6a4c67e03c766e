"""One monitor vocabulary and one catalogue of metric keys.

Every text monitor is registered once here: its name, the functions that measure one
completion and a batch, the direction in which it gets worse, and the key it is logged
under (`monitor/NAME`). The detectors (a run's batch each step), the corpus sampler (one
candidate), the utility's value store (one episode) and the blend sweep (one A's batch)
all check limits with the one `trips(values, limits)`; a limit is named as its monitor.

`METRICS` catalogues the keys a run logs (metrics.jsonl), with a short label and a
description: the step printer, the report, the rank agreement check and the blend sweep
read their keys and labels from it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from tether.watch import monitors as m


@dataclass(frozen=True)
class Monitor:
    name: str
    one: Callable[[str], float] | None  # one completion (None: a batch-only monitor)
    batch: Callable[[Sequence[str]], float]  # a batch of completions
    worse: str  # "up": higher is worse (a limit is a maximum); "down": lower is worse (a minimum)
    label: str  # short, for console lines and table headers
    description: str

    @property
    def key(self) -> str:
        return f"monitor/{self.name}"


def _mean(one: Callable[[str], float]) -> Callable[[Sequence[str]], float]:
    return lambda texts: sum(map(one, texts)) / max(len(texts), 1)


MONITORS: dict[str, Monitor] = {mon.name: mon for mon in [
    Monitor("affirmation_rate", lambda t: m.affirmation_rate([t]), m.affirmation_rate, "up", "yes-rate",
            "share of words that are affirmations (yes, sure, ...)"),
    Monitor("special_token_rate", lambda t: m.special_token_rate([t]), m.special_token_rate, "up", "special",
            "special-token strings (`<eos>`, ...) per unit of text"),
    Monitor("repetition", m.repeated_trigram_share, _mean(m.repeated_trigram_share), "up", "repeat",
            "share of a completion's word 3-grams that repeat an earlier one (batch: mean)"),
    Monitor("longest_repeat_run", m.longest_repeat_run, lambda ts: max(map(m.longest_repeat_run, ts), default=0), "up",
            "run", "most back-to-back repeats of a 1-4 word unit (batch: max)"),
    Monitor("distinct_1", None, lambda ts: m.distinct_n(ts, 1), "down", "distinct-1",
            "unique words / all words across the batch"),
    Monitor("distinct_2", None, lambda ts: m.distinct_n(ts, 2), "down", "distinct-2",
            "unique word pairs / all word pairs across the batch"),
    Monitor("words", lambda t: len(m.words(t)), _mean(lambda t: len(m.words(t))), "down", "words",
            "words in a completion (batch: mean)"),
]}


def batch_values(completions: Sequence[str]) -> dict[str, float]:
    """Every monitor over a batch, keyed `monitor/NAME` as in metrics.jsonl."""
    return {mon.key: float(mon.batch(completions)) for mon in MONITORS.values()}


def text_values(completion: str) -> dict[str, float]:
    """Every per-completion monitor of one text, keyed by name (a candidate's `monitors`)."""
    return {name: round(float(mon.one(completion)), 4) for name, mon in MONITORS.items() if mon.one is not None}


@dataclass
class Trip:
    step: int
    detector: str
    value: float
    limit: float

    def reason(self) -> str:
        op = "<" if self.detector in MONITORS and MONITORS[self.detector].worse == "down" else ">"
        return f"{self.detector} {self.value:g} {op} {self.limit:g}"


def trips(values: Mapping[str, float], limits: Mapping[str, float | None], step: int = 0) -> list[Trip]:
    """The limits that `values` break, in registry order.

    `values` may be keyed by monitor name or by metric key (`monitor/NAME`); a limit of
    None is off. A limit is broken when the value is beyond it in the monitor's worse
    direction: above a maximum, below a minimum.
    """
    out = []
    for name, mon in MONITORS.items():
        limit = limits.get(name)
        value = values.get(name, values.get(mon.key))
        if limit is None or value is None:
            continue
        if (value > limit) if mon.worse == "up" else (value < limit):
            out.append(Trip(step, name, float(value), float(limit)))
    return out


@dataclass(frozen=True)
class Metric:
    key: str
    label: str
    description: str
    fmt: str = "{:.3g}"


METRICS: dict[str, Metric] = {x.key: x for x in [
    Metric("reward/train", "reward", "the train judge's mean score (the constitution)"),
    Metric("reward/total", "total", "the reward TRL optimises: the constitution and the defenses' terms, weighted"),
    Metric("gold/score", "gold", "the held-out gold judge's mean score"),
    Metric("gold/gap", "gap", "train reward minus gold score"),
    Metric("kl", "kl", "token KL to the base model (TRL), nats per token", "{:.4f}"),
    Metric("entropy", "entropy", "the policy's token entropy (TRL)"),
    Metric("drift/embedding", "drift", "cosine distance of completions from the base model's, in embedding space"),
    Metric("shift/p_value", "shift p", "p-value of the last `shift_window` steps' completions against the base's "
           "(MMD permutation test; small: the text changed)"),
    Metric("shift/mmd2", "mmd2", "MMD^2 between those completions and the base's, in embedding space"),
    *[Metric(mon.key, mon.label, mon.description) for mon in MONITORS.values()],
]}

# The namespaces tether adds to TRL's metrics; every process must log the same values under them.
NAMESPACES = ("monitor", "gold", "drift", "shift", "reward", "defense")

# The console's step line, in order.
STEP_LINE = ["reward/train", "gold/score", "kl", "drift/embedding", "monitor/affirmation_rate", "monitor/repetition",
             "monitor/distinct_2"]


def label(key: str) -> str:
    return METRICS[key].label if key in METRICS else key


def is_tether_metric(key: str) -> bool:
    return "/" in key and key.split("/")[0] in NAMESPACES
