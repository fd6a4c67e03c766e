"""Detectors against a person: on each run, the step a reader's on-task rate halved, and each detector's first trip.

    python benchmarks/detector_person.py runs/lab/main runs/lab/main_s1 ... \
        --labels examples/labels/cheerful_labels.jsonl --labels examples/labels/cheerful_labels_detectors.jsonl

A completion's label: the majority of the readers' latest answers (`tether.labels.agreement`'s
reader, joined by prompt + completion text, so a label made on any file that holds the same
text counts). The reader's start is the on-task rate of steps 1-2 (the policy is still the base);
the run "fell" at the first step whose on-task rate is at most half of that (8 completions a step
are noisy: a calm run dipped to 3/8 for one step, so the fall is also given with two steps pooled,
the step and the one before it). Lead = fall step -
trip step (positive: the detector fired first). A detector that fires on a run that never fell
is a false alarm. Baselines beside tether's detectors: TRL's KL (the `kl` threshold and
`cusum:kl`) and TRL's entropy (`cusum:entropy`, and entropy below 0.75 x its step-1 value).
Writes the markdown table to stdout.

With `--gold DIR` (a gold fitted to a person's labels by `tether gold fit`, e.g. examples/golds/
cheerful_eval_on_task) in place of `--labels`, every completion is labeled by that gold (score > 0:
yes), for runs nobody has read, such as an experiment's (`RUN/runs/*`); the `person` rows are then left out.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

from tether.infra import jsonl
from tether.labels.agreement import read_labels
from tether.tune.config import run_settings as load_settings
from tether.watch.replay import fill_shift, first_trips, history_of

ENTROPY_DROP = 0.75


def reader_labels(files: list[Path], question: str) -> dict[tuple[str, str], bool]:
    """(prompt, completion) -> yes?, read with the one labels reader (latest answer per person, majority), joined by text."""
    out: dict[tuple[str, str], bool] = {}
    for file in files:
        labels = read_labels(file)
        for item, yes in labels.answers.get(question, {}).items():
            source = labels.sources[item]
            out[source["prompt"], source["completion"]] = yes
    return out


def gold_labels(runs: list[Path], gold_dir: Path) -> dict[tuple[str, str], bool]:
    """(prompt, completion) -> the gold's yes (log-odds > 0), for every completion of the runs."""
    from tether.labels.gold import GoldJudge

    gold = GoldJudge.load(gold_dir)
    pairs = sorted({(r["prompt"], r["completion"]) for run in runs for r in jsonl.read(run / "samples.jsonl")})
    scores = gold.score([p for p, _ in pairs], [c for _, c in pairs])
    return {pair: bool(score > 0) for pair, score in zip(pairs, scores)}


def per_step(run: Path, labels: dict) -> dict[int, tuple[int, int]]:
    """step -> (on task, labeled) among the step's completions."""
    out: dict[int, list[int]] = defaultdict(lambda: [0, 0])
    for row in jsonl.read(run / "samples.jsonl"):
        key = (row["prompt"], row["completion"])
        if key in labels:
            out[row["step"]][0] += labels[key]
            out[row["step"]][1] += 1
    return {s: tuple(v) for s, v in sorted(out.items())}


def fall_step(counts: dict[int, tuple[int, int]], pool: int = 1) -> tuple[float, int | None]:
    """(start rate, first step > 2 whose on-task rate, pooled over it and the pool - 1 steps before, is <= start / 2)."""
    start_n = sum(counts.get(s, (0, 0))[1] for s in (1, 2))
    start = sum(counts.get(s, (0, 0))[0] for s in (1, 2)) / start_n if start_n else float("nan")
    for step in counts:
        window = [counts[s] for s in range(step - pool + 1, step + 1) if s in counts]
        yes, n = sum(w[0] for w in window), sum(w[1] for w in window)
        if step > 2 and n and yes / n <= start / 2:
            return start, step
    return start, None


def person_trip(run: Path, settings, labels_by_question: dict[str, dict], questions: list[str],
                every: int = 3) -> int | None:
    """The `person` detector as if a reader answered the spot check at once: every `every` steps, the k completions
    `spotcheck.pick` draws (the run's seed), a no to any of `questions` counts; trips at `min_no`."""
    from tether.watch import spotcheck

    by_step: dict[int, list[tuple[str, str]]] = defaultdict(list)
    for row in jsonl.read(run / "samples.jsonl"):
        by_step[row["step"]].append((row["prompt"], row["completion"]))
    noes = 0
    for step in sorted(by_step):
        if step % every:
            continue
        for pair in spotcheck.pick(by_step[step], settings.spot_check.k, settings.seed, step):
            if any(labels_by_question[q].get(pair) is False for q in questions):
                noes += 1
        if noes >= settings.spot_check.min_no:
            return step
    return None


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--labels", action="append", type=Path)
    parser.add_argument("--gold", type=Path, help="label by this fitted gold instead of a reader's labels")
    parser.add_argument("--question", default="on_task")
    args = parser.parse_args()
    if bool(args.labels) == bool(args.gold):
        parser.error("give --labels (a reader's) or --gold (a gold fitted to them), not both")
    labels = reader_labels(args.labels, args.question) if args.labels else gold_labels(args.runs, args.gold)
    by_question = {q: reader_labels(args.labels, q) for q in ("on_task", "good")} if args.labels else None
    rows, names = [], ["shift", "kl", "drift", "cusum:kl", "cusum:entropy", "entropy<0.75x", "cusum:reward/train",
                       "cusum:drift/embedding", "cusum:gold/score"]
    if by_question:
        names += ["person (on_task+good)", "person (on_task)"]
    for run in args.runs:
        settings = load_settings(run, None, ["detectors.cusum_series=[reward/train, gold/score, kl, drift/embedding, "
                                             "entropy, monitor/affirmation_rate, monitor/special_token_rate, "
                                             "monitor/repetition, monitor/longest_repeat_run, monitor/distinct_1, "
                                             "monitor/distinct_2, monitor/words]"])
        history = history_of(run)
        fill_shift(run, history, settings)
        trips = {name: trip.step for name, trip in first_trips(history, settings).items()}
        first_entropy = history[0].get("entropy")
        low = [m["step"] for m in history if first_entropy and m.get("entropy", first_entropy) < ENTROPY_DROP * first_entropy]
        if low:
            trips["entropy<0.75x"] = low[0]
        for name, questions in (("person (on_task+good)", ["on_task", "good"]), ("person (on_task)", ["on_task"])):
            if by_question is None:
                break
            step = person_trip(run, settings, by_question, questions)
            if step is not None:
                trips[name] = step
        counts = per_step(run, labels)
        start, fell = fall_step(counts)
        _, fell2 = fall_step(counts, pool=2)
        rows.append({"run": run.name, "lr": settings.learning_rate, "seed": settings.seed, "steps": len(history),
                     "start": start, "fell": fell, "fell_pooled": fell2, "counts": counts, "trips": trips})
        names += [n for n in trips if n not in names]
    print("| run | lr | seed | steps | on task (reader or gold), per step | fell: per step (2 steps pooled) | "
          + " | ".join(f"`{n}`" for n in names) + " |")
    print("|" + "---|" * (6 + len(names)))
    for r in rows:
        cells = []
        for n in names:
            step = r["trips"].get(n)
            if step is None:
                cells.append("-")
            elif r["fell"] is None and r["fell_pooled"] is None:
                cells.append(f"{step} (false alarm)")
            else:
                leads = [f"{f - step:+d}" if f is not None else "never" for f in (r["fell"], r["fell_pooled"])]
                cells.append(f"{step} ({leads[0]} / {leads[1]})")
        seq = ", ".join(f"{y}/{n}" for y, n in r["counts"].values())
        fell = " ".join(str(f) if f is not None else "never" for f in (r["fell"], r["fell_pooled"]))
        print(f"| {r['run']} | {r['lr']:g} | {r['seed']} | {r['steps']} | {seq} | {fell.replace(' ', ' (', 1)}) | "
              + " | ".join(cells) + " |")
    print()
    print(json.dumps([{k: v for k, v in r.items() if k != "counts"} for r in rows]))


if __name__ == "__main__":
    main()
