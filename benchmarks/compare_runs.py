"""Compare finished tune runs side by side: the table of docs/results.md's defenses section.

    python benchmarks/compare_runs.py runs/cheerful runs/cheerful-ekl runs/cheerful-utility --last 10

For each run: the mean over its last `--last` steps of the train reward, gold score, the
monitors, token KL and embedding drift; the weighted defense terms when they were on; and
the step at which each hack detector first fired (from events.jsonl). Prints Markdown.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

COLUMNS = [  # (metrics key, header, format)
    ("reward/train", "train reward", "{:+.3f}"), ("gold/score", "gold score", "{:+.3f}"),
    ("monitor/affirmation_rate", "affirmation rate", "{:.4f}"), ("monitor/repetition", "repetition", "{:.3f}"),
    ("monitor/distinct_2", "distinct-2", "{:.3f}"), ("kl", "token KL", "{:.3f}"), ("drift/embedding", "drift", "{:.3f}"),
    ("defense/embedding_kl/weighted", "embedding-KL term", "{:+.3f}"), ("defense/utility/weighted", "utility term", "{:+.3f}"),
]


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def row(run: Path, last: int) -> list[str]:
    metrics = read_jsonl(run / "metrics.jsonl")[-last:]
    cells = [run.name]
    for key, _, fmt in COLUMNS:
        values = [m[key] for m in metrics if key in m]
        cells.append(fmt.format(np.mean(values)) if values else "—")
    trips = {}
    for event in read_jsonl(run / "events.jsonl"):
        if event["event"] == "detector":
            for d in event["detectors"]:
                trips.setdefault(d["detector"], event["step"])
    cells.append(", ".join(f"{name} {step}" for name, step in sorted(trips.items(), key=lambda t: t[1])) or "none")
    return cells


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--last", type=int, default=10, help="average over this many final steps")
    args = parser.parse_args()
    header = ["run", *(title for _, title, _ in COLUMNS), "detector trips (first step)"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for run in args.runs:
        print("| " + " | ".join(row(run, args.last)) + " |")


if __name__ == "__main__":
    main()
