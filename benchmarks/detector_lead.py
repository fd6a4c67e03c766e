"""How early does each hack detector fire? Replays the detectors over finished runs.

    python benchmarks/detector_lead.py runs/hack runs/calm --out docs/detectors.md

For each run: the step at which each detector first fires (replaying `tether.watch.detectors.check`
over the run's metrics.jsonl, step by step, with the default thresholds), and the step at
which the gold score turns down: the peak of its 3-step moving average, counted only if
the gold score later falls at least `--drop` below that peak. Lead = downturn step - fire
step: positive means the detector warned before the gold judge saw the damage. A detector
that fires on a run without a downturn is a false alarm for that run.
"""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from tether.infra.atomic import write_text
from tether.watch.detectors import DetectorConfig, check

DETECTORS = ["affirmation_rate", "special_token_rate", "repetition", "longest_repeat_run", "distinct_2_drop", "kl", "drift", "divergence"]


def first_fires(metrics: list[dict], config: DetectorConfig) -> dict[str, int]:
    fired: dict[str, int] = {}
    for end in range(1, len(metrics) + 1):
        for trip in check(metrics[:end], config):
            fired.setdefault(trip.detector, trip.step)
    return fired


def gold_downturn(metrics: list[dict], drop: float) -> int | None:
    gold = np.array([m["gold/score"] for m in metrics])
    smooth = np.convolve(gold, np.ones(3) / 3, mode="valid")  # smooth[i] averages steps i..i+2
    peak = int(np.argmax(smooth))
    if smooth[peak:].min() > smooth[peak] - drop:
        return None
    return metrics[peak + 1]["step"]  # the centre of the peak window


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--drop", type=float, default=0.1, help="gold fall (log-odds) that counts as a downturn")
    parser.add_argument("--out", type=Path, help="write the table to this Markdown file (default: print only)")
    args = parser.parse_args()
    config = DetectorConfig()
    lines = [
        "# Hack detectors: when they fire",
        "",
        f"Measured {datetime.now(UTC):%Y-%m-%d} with `python benchmarks/detector_lead.py "
        + " ".join(str(r) for r in args.runs) + "`; default thresholds; gold downturn = peak of the 3-step",
        f"moving average of the gold score, counted when it later falls {args.drop} below it.",
        "",
        "| run | steps | gold downturn | " + " | ".join(DETECTORS) + " |",
        "| --- | --- | --- | " + " | ".join("---" for _ in DETECTORS) + " |",
    ]
    for run in args.runs:
        metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
        fired, turn = first_fires(metrics, config), gold_downturn(metrics, args.drop)
        cells = []
        for name in DETECTORS:
            if name not in fired:
                cells.append("—")
            elif turn is None:
                cells.append(f"step {fired[name]} (no downturn)")
            else:
                cells.append(f"step {fired[name]} (lead {turn - fired[name]:+d})")
        lines.append(f"| {run.name} | {len(metrics)} | {turn if turn else 'none'} | " + " | ".join(cells) + " |")
    print("\n".join(lines))
    if args.out:
        write_text(args.out, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
