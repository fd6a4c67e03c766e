"""Which candidates enter the corpus, and why: monitors first, then the constitution.

A candidate is rejected when it trips a monitor (yes-spam, special-token strings,
repetition, too short), whatever the judge paid for it: those are the ways a judge is
fooled. Of the rest, `keep: threshold` keeps every one whose score on each principle
reaches its threshold; `keep: best` keeps the top `keep_best` of its prompt by total
score. Every candidate gets a `status` and a one-line `reason` a person can read.
"""

from __future__ import annotations

from tether.corpus.config import MonitorLimits, SampleConfig
from tether.watch.metrics import text_values, trips


def monitor_values(completion: str) -> dict[str, float]:
    """Every per-completion monitor of one candidate (the registry's), keyed by name."""
    return text_values(completion)


def monitor_trips(values: dict[str, float], limits: MonitorLimits) -> list[str]:
    """Readable reasons, one per tripped monitor ("affirmation_rate 0.25 > 0.1")."""
    return [trip.reason() for trip in trips(values, limits.model_dump())]


def below_thresholds(scores: dict[str, float], config: SampleConfig) -> list[str]:
    return [f"{name} {score:.2f} < {config.threshold_for(name):g}"
            for name, score in scores.items() if score < config.threshold_for(name)]


def decide(group: list[dict], config: SampleConfig) -> list[dict]:
    """Set `status` (kept / rejected) and `reason` on every candidate of one prompt."""
    eligible = []
    for c in group:
        trips = monitor_trips(c["monitors"], config.monitors)
        if trips:
            c["status"], c["reason"] = "rejected", "monitor: " + "; ".join(trips)
        elif config.keep == "threshold":
            misses = below_thresholds(c["scores"], config)
            c["status"], c["reason"] = ("rejected", "below threshold: " + "; ".join(misses)) if misses else (
                "kept", "every principle at or above its threshold")
        else:
            eligible.append(c)
    if config.keep == "best":
        ranked = sorted(eligible, key=lambda c: -c["total"])
        for rank, c in enumerate(ranked, 1):
            kept = rank <= config.keep_best
            c["status"] = "kept" if kept else "rejected"
            c["reason"] = f"rank {rank} of {len(group)} by total score" + ("" if kept else f"; only the best {config.keep_best} kept")
    return group
