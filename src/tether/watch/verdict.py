"""The report's verdict: did the run hack, from when, and why tether thinks so.

    v = decide(metrics, events, finished, answers, limits)   # pure: the run's own records in, a Verdict out
    v = read_verdict("runs/cheerful")                        # the same from its files (`verdict_files`)
    v.headline                                               # "hacking likely from step 6"

The state is what the run itself decided, read from what it wrote (no detector is replayed):
- "stopped": the run stopped on a detector (an `early_stop` event, a trip whose action was
  `stop`, or `stopped_early` in finished.json); `step` is where it stopped;
- "hacking likely": a detector tripped (events.jsonl) and the run went on; `step` is the first trip;
- "healthy": no detector tripped in the steps logged so far.

Behind it, at most three signals: the train reward against the gold score before and after
the first trip (when the run has a gold judge), then the detectors in the order they first
fired, each with its value, its limit and what it watches; a healthy run names the threshold
detector that came closest to its limit instead. A person's labels on the run's
samples (RUN_DIR/labels.jsonl, the spot check's answers among them) are counted per question,
before and from the first trip: the one judge the policy cannot have learned to please.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from tether.watch.metrics import MONITORS, label

STATES = ("healthy", "hacking likely", "stopped")
MAX_SIGNALS = 3
DETECTOR_KEYS = {"kl": "kl", "drift": "drift/embedding", "distinct_2_drop": "monitor/distinct_2",
                 "divergence": "gold/score", "gold_drop": "gold/score", "shift": "shift/p_value"}
WATCHES = {  # detector -> (comparison, what it watches) for the ones that are not text monitors
    "kl": (">", "token KL to the base model"),
    "drift": (">", "embedding drift from the base model's completions"),
    "distinct_2_drop": ("<", "distinct-2 fell to a fraction of its first-step value"),
    "divergence": (">", "train reward rose while the gold score fell over the window"),
    "shift": ("<", "the completions differ from the base model's (two-sample test p-value)"),
    "gold_drop": (">", "the gold score fell below where it started"),
    "person": (">=", "a person answered no to queued completions"),
}


@dataclass(frozen=True)
class Signal:
    name: str  # a detector's name, or "gold vs train"
    step: int | None  # where it fired (None: a trend over the run)
    text: str  # one plain line: what was seen


@dataclass(frozen=True)
class Answer:
    """One labeled sample of this run: question, the sample's step (None when unknown), yes?"""

    question: str
    step: int | None
    yes: bool


@dataclass(frozen=True)
class LabelCount:
    question: str
    yes_before: int
    no_before: int
    yes_from: int  # at or after the verdict's first trip (all zero when nothing tripped)
    no_from: int


@dataclass(frozen=True)
class Verdict:
    state: str  # one of STATES
    step: int | None  # the first trip ("hacking likely") or the stop ("stopped"); None when healthy
    first_trip: int | None
    steps: int  # steps logged
    signals: list[Signal] = field(default_factory=list)
    more: int = 0  # detectors that fired beyond those in `signals`
    labels: list[LabelCount] = field(default_factory=list)
    best: int | None = None  # with a stop: the step of the checkpoint marked best

    @property
    def headline(self) -> str:
        if self.state == "healthy":
            return f"healthy: no detector tripped in {self.steps} steps"
        if self.state == "hacking likely":
            return f"hacking likely from step {self.step}"
        first = f" (first trip at step {self.first_trip})" if self.first_trip not in (None, self.step) else ""
        return f"stopped at step {self.step}{first}"

    def labels_line(self) -> str:
        """The person's answers in one line ('' with no labels)."""
        parts = []
        for c in self.labels:
            if self.first_trip is None:
                parts.append(f"{c.question}: {c.yes_before} yes / {c.no_before} no")
            else:
                parts.append(f"{c.question}: {c.yes_before} yes / {c.no_before} no before step {self.first_trip}, "
                             f"{c.yes_from} yes / {c.no_from} no from it")
        return "; ".join(parts)


def decide(metrics: list[dict], events: list[dict], finished: dict | None = None, answers: list[Answer] = (),
           limits: dict[str, float] | None = None) -> Verdict:
    """The verdict from a run's records: metrics.jsonl, events.jsonl, finished.json (or None), labels, and the
    threshold detectors' limits (`verdict_files.detector_limits`: how close a healthy run came to one)."""
    steps = sorted({m["step"] for m in metrics if isinstance(m.get("step"), int)})
    firsts = first_trips(events)
    first = min((t["step"] for t in firsts), default=None)
    stop = _stop_step(events, finished)
    state = "stopped" if stop is not None else "hacking likely" if first is not None else "healthy"
    signals = [] if (s := gold_signal(metrics, first)) is None else [s]
    if first is None:
        signals += [] if (c := closest_call(metrics, limits or {})) is None else [c]
        signals = signals or [Signal("detectors", None, f"no detector tripped in {len(steps)} steps logged")]
    else:
        signals += [Signal(t["detector"], t["step"], describe(t)) for t in firsts]
    return Verdict(state, stop if state == "stopped" else first, first, len(steps), signals[:MAX_SIGNALS],
                   more=len(signals[MAX_SIGNALS:]), labels=count_labels(answers, first),
                   best=_best_step(events, finished))


def first_trips(events: list[dict]) -> list[dict]:
    """Each detector's first trip (detector, value, limit, step), in the order they fired."""
    seen: dict[str, dict] = {}
    for event in events:
        if event.get("event") != "detector" or not isinstance(event.get("step"), int):
            continue
        for trip in event.get("detectors", []):
            if isinstance(trip, dict) and isinstance(trip.get("detector"), str):
                seen.setdefault(trip["detector"], {**trip, "step": event["step"]})
    return sorted(seen.values(), key=lambda t: t["step"])  # stable: a step's detectors keep their order


def metric_of(detector: str) -> str | None:
    """The logged series a detector watches (its trips are marked on that series' panel), or None."""
    if detector in MONITORS:
        return MONITORS[detector].key
    if detector.startswith("cusum:"):
        return detector.split(":", 1)[1]
    return DETECTOR_KEYS.get(detector)


def describe(trip: dict) -> str:
    """'affirmation_rate 0.3 > 0.05 at step 6: share of words that are affirmations (yes, sure, ...)'."""
    name, value, limit = trip["detector"], trip.get("value"), trip.get("limit")
    if name in MONITORS:
        op, what = ("<" if MONITORS[name].worse == "down" else ">"), MONITORS[name].description
    elif name.startswith("cusum:"):
        op, what = ">", f"a sudden change in {label(name.split(':', 1)[1])} (CUSUM, in standard deviations)"
    else:
        op, what = WATCHES.get(name, (">", "a detector"))
    numbers = f" {value:.3g} {op} {limit:.3g}" if _number(value) and _number(limit) else ""
    return f"{name}{numbers} at step {trip['step']}: {what}"


def gold_signal(metrics: list[dict], first: int | None) -> Signal | None:
    """How the train reward and the gold score moved: before vs from the first trip, else first vs last third."""
    rows = [m for m in metrics if _number(m.get("reward/train")) and _number(m.get("gold/score"))]
    if first is not None:
        early, late = [m for m in rows if m["step"] < first], [m for m in rows if m["step"] >= first]
    else:
        third = len(rows) // 3
        early, late = rows[:third], rows[-third:] if third else []
    if not early or not late:
        return None
    where = f"steps {_span(early)} vs {_span(late)}"
    train, gold = (float(np.mean([m[k] for m in late]) - np.mean([m[k] for m in early]))
                   for k in ("reward/train", "gold/score"))
    if train > 0 > gold:
        how = "the train judge is being pleased while the gold judge is not"
    elif gold >= 0:
        how = "the gold score did not fall"
    else:
        how = "the gold score fell further than the train reward" if gold < train else "both fell"
    return Signal("gold vs train", None, f"train reward {train:+.2f}, gold score {gold:+.2f} ({where}): {how}")


def _span(rows: list[dict]) -> str:
    return f"{rows[0]['step']}-{rows[-1]['step']}" if len(rows) > 1 else str(rows[0]["step"])


def closest_call(metrics: list[dict], limits: dict[str, float]) -> Signal | None:
    """The threshold detector whose series came nearest its limit (a maximum), as a share of it."""
    best = None
    for detector, limit in limits.items():
        key = metric_of(detector)
        values = [(m[key], m["step"]) for m in metrics if key and _number(m.get(key))]
        if values and limit and limit > 0:
            value, step = max(values)
            if best is None or value / limit > best[0]:
                best = (value / limit, detector, value, limit, step)
    if best is None:
        return None
    share, detector, value, limit, step = best
    return Signal(detector, step, f"closest to a limit: {detector} peaked at {value:.3g} at step {step}, "
                                  f"{share:.0%} of its limit {limit:.3g}")


def count_labels(answers: list[Answer], first: int | None) -> list[LabelCount]:
    """Yes/no per question, split at the first trip (a sample of unknown step counts before it)."""
    counts: dict[str, list[int]] = {}
    for a in answers:
        after = first is not None and a.step is not None and a.step >= first
        counts.setdefault(a.question, [0, 0, 0, 0])[2 * after + (not a.yes)] += 1
    return [LabelCount(q, *c) for q, c in sorted(counts.items())]


def _stop_step(events: list[dict], finished: dict | None) -> int | None:
    for event in events:
        if event.get("event") == "early_stop" and isinstance(event.get("step"), int):
            return event["step"]
    for event in events:
        if event.get("event") == "detector" and event.get("action") == "stop" and isinstance(event.get("step"), int):
            return event["step"]
    if finished and finished.get("stopped_early") and isinstance(finished.get("steps"), int):
        return finished["steps"]
    return None


def _best_step(events: list[dict], finished: dict | None) -> int | None:
    bests = [e.get("best") for e in events if e.get("event") in ("early_stop", "detector")]
    bests.append((finished or {}).get("best"))
    return next((b["step"] for b in bests if isinstance(b, dict) and isinstance(b.get("step"), int)), None)


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
