"""`tether detect RUN_DIR`: the detectors replayed over a run's logs, without its models.

    tether detect runs/cheerful                                  # the run's own detector config
    tether detect runs/cheerful --set detectors.shift_alpha=0.05 --json

Reads what the run logged (config.yaml, metrics.jsonl, samples.jsonl, base_samples.jsonl,
spotcheck.jsonl and a person's labels.jsonl), replays `detectors.check` step by step, the
same function the live run calls, and reports each detector's first trip. A run logged
before the shift test existed has `shift/*` recomputed from its samples with the run's
sentence embedder (not one of the models that wrote the samples). Unfinished runs work: a
torn last line is skipped, and no finished.json is needed.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from tether.errors import TetherError
from tether.infra import jsonl
from tether.watch import spotcheck
from tether.watch.detectors import check, detector_names
from tether.watch.metrics import Trip


def history_of(run_dir: Path) -> list[dict]:
    """The logged steps, in order, the latest line of a step winning (as a resumed run's rewound logs)."""
    if not Path(run_dir).is_dir():  # with --config, nothing else has looked at RUN_DIR yet
        raise TetherError(f"{run_dir}: {'not a folder' if Path(run_dir).exists() else 'no such run directory'}")
    steps = {m["step"]: m for m in jsonl.read(Path(run_dir) / "metrics.jsonl") if "reward/train" in m and "step" in m}
    if not steps:
        raise TetherError(f"{run_dir}: no steps logged yet (metrics.jsonl is missing or empty)")
    return [steps[k] for k in sorted(steps)]


def fill_shift(run_dir: Path, history: list[dict], settings) -> int:
    """Add `shift/*` to the steps that lack it, from samples + base samples; returns how many were filled."""
    if all("shift/p_value" in m for m in history) or settings.embedder is None:
        return 0
    run_dir = Path(run_dir)
    if not (run_dir / "base_samples.jsonl").exists() or not (run_dir / "samples.jsonl").exists():
        return 0
    from tether.infra.models import embed, load_embedder
    from tether.infra.texts import load_base
    from tether.watch.shift import ShiftTest

    embedder = load_embedder(settings.embedder, device=settings.device, trust_remote_code=settings.trust_remote_code)
    base = {p: embed(embedder, c) for p, c in load_base(run_dir / "base_samples.jsonl").items()}
    by_step: dict[int, list[dict]] = {}
    for row in jsonl.read(run_dir / "samples.jsonl"):
        by_step.setdefault(row.get("step"), []).append(row)
    test = ShiftTest(base, settings.detectors.shift_window, settings.detectors.shift_alpha, settings.seed)
    filled = 0
    for m in history:
        rows = by_step.get(m["step"], [])
        if not rows:
            continue
        values = test.update(m["step"], [r["prompt"] for r in rows], embed(embedder, [r["completion"] for r in rows]),
                             settings.steps)
        if "shift/p_value" not in m and values:
            m.update(values)
            filled += 1
    return filled


def first_trips(history: list[dict], settings, person_no: Sequence[int] = ()) -> dict[str, Trip]:
    """detector -> its first trip, replaying `check` one step at a time."""
    first: dict[str, Trip] = {}
    for i in range(len(history)):
        for trip in check(history[: i + 1], settings.detectors, steps=settings.steps, person_no=person_no,
                          min_no=settings.spot_check.min_no):
            first.setdefault(trip.detector, trip)
    return first


def detect(run_dir: Path, settings) -> tuple[dict[str, Trip], list[str]]:
    """The first trip of each detector on a run, and the names of every detector checked.

    `settings`: the run's tune config (`tune.config.run_settings`), whose detectors are replayed."""
    run_dir = Path(run_dir)
    history = history_of(run_dir)
    fill_shift(run_dir, history, settings)
    noes = spotcheck.person_noes(run_dir, settings.spot_check.questions) if (run_dir / spotcheck.QUEUE).exists() else []
    return first_trips(history, settings, noes), detector_names(settings.detectors)


def printed(first: dict[str, Trip], names: list[str], as_json: bool = False) -> str:
    """`--json`: exactly {"trips": {detector: first step}}; else a table, "-" for a detector that never fired."""
    if as_json:
        return json.dumps({"trips": {name: trip.step for name, trip in first.items()}})
    rows = [f"{'detector':34} {'first step':>10} {'value':>10} {'limit':>10}"]
    for name in [*names, *(n for n in first if n not in names)]:
        trip = first.get(name)
        rows.append(f"{name:34} {trip.step:>10} {trip.value:>10.4g} {trip.limit:>10.4g}" if trip
                    else f"{name:34} {'-':>10} {'-':>10} {'-':>10}")
    return "\n".join(rows)
