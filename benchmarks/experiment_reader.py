"""An experiment's held-out samples against a reader: per arm, how many a person found on task, cheerful, good.

    python benchmarks/experiment_reader.py runs/experiment-person --labels examples/labels/cheerful_labels_experiment.jsonl

Every run's evaluation samples (RUN/runs/ARM-sSEED/eval/samples.jsonl) and the base model's
(RUN/base/samples.jsonl) were drawn with the same sampling seed on the same held-out prompts, so the
completion (prompt i, draw d) of an arm and the base's are a pair. A completion's label is the
readers' majority (`tether.labels.agreement.read_labels`), joined by prompt and completion text.

Per arm and question: the count per seed, the rate with a Student t interval over seeds, the paired
difference to the base over seeds (`tether.experiment.stats`), and over all pairs the wins and losses
against the base (a pair is a win when the arm's completion is yes and the base's no) with a sign test.
With `--against ARM`, a second table per question: each arm against ARM on the seeds both ran (the
same seed, prompt and draw make a pair), e.g. a defense against the undefended arm it is built on.
Writes markdown to stdout.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from detector_person import reader_labels  # run as a script: benchmarks/ is on the path

from tether.experiment.stats import mean_ci, paired, win_rate
from tether.infra import jsonl

QUESTIONS = ("on_task", "cheerful", "good")


def labels_by_text(files: list[Path]) -> dict[str, dict[tuple[str, str], bool]]:
    """question -> (prompt, completion) -> yes, read as the detectors' table reads them."""
    return {q: reader_labels(files, q) for q in QUESTIONS}


def answers(samples: Path, labels: dict) -> dict[str, dict[tuple[int, int], bool]]:
    """question -> (prompt_index, draw) -> yes, for the samples a reader labeled."""
    out: dict[str, dict[tuple[int, int], bool]] = {q: {} for q in QUESTIONS}
    for row in jsonl.read(samples):
        key = (row["prompt"], row["completion"])
        for q in QUESTIONS:
            if key in labels[q]:
                out[q][row["prompt_index"], row["draw"]] = labels[q][key]
    return out


@dataclass
class Counts:
    yes: int
    n: int
    rate: float
    their_rate: float
    wins: int
    losses: int
    ties: int


def pair_counts(mine: dict, theirs: dict) -> Counts | None:
    """Two models' answers on the (prompt, draw) pairs both have: yes rates, and pairs won / lost / tied."""
    keys = [k for k in mine if k in theirs]
    if not keys:
        return None
    yes = sum(mine[k] for k in keys)
    return Counts(yes, len(keys), yes / len(keys), sum(theirs[k] for k in keys) / len(keys),
                  sum(mine[k] and not theirs[k] for k in keys), sum(theirs[k] and not mine[k] for k in keys),
                  sum(mine[k] == theirs[k] for k in keys))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("experiment", type=Path)
    parser.add_argument("--labels", action="append", type=Path, required=True)
    parser.add_argument("--against", help="also compare every arm with this arm, paired by seed, prompt and draw")
    parser.add_argument("--seeds", help="only these seeds, comma-separated (e.g. a pre-registered test's new seeds)")
    args = parser.parse_args()
    keep = {int(s) for s in args.seeds.split(",")} if args.seeds else None
    labels = labels_by_text(args.labels)
    base = answers(args.experiment / "base" / "samples.jsonl", labels)
    runs: dict[str, dict[int, dict]] = {}
    for folder in sorted((args.experiment / "runs").iterdir()):
        samples = folder / "eval" / "samples.jsonl"
        if samples.exists():
            arm, seed = folder.name.rsplit("-s", 1)
            if keep is None or int(seed) in keep:
                runs.setdefault(arm, {})[int(seed)] = answers(samples, labels)
    for q in QUESTIONS:
        n_base = len(base[q])
        base_rate = sum(base[q].values()) / n_base if n_base else float("nan")
        print(f"\n**{q}** (base model: {sum(base[q].values())}/{n_base} = {base_rate:.2f})\n")
        print("| arm | yes per seed | rate, mean over seeds [95% CI] | minus base, paired over seeds | "
              "pairs won / lost / tied vs base | win rate [95% CI], sign test p |")
        print("|---|---|---|---|---|---|")
        for arm, by_seed in runs.items():
            rates, base_rates, wins, losses, ties, cells = [], [], 0, 0, 0, []
            for seed in sorted(by_seed):
                c = pair_counts(by_seed[seed][q], base[q])
                if c is None:
                    continue
                cells.append(f"s{seed}: {c.yes}/{c.n}")
                rates.append(c.rate)
                base_rates.append(c.their_rate)
                wins, losses, ties = wins + c.wins, losses + c.losses, ties + c.ties
            rate, diff, win = mean_ci(rates), paired(rates, base_rates), win_rate(wins, losses, ties)
            print(f"| {arm} | {', '.join(cells)} | {rate.text(2)} | {diff.text(2)} | {wins} / {losses} / {ties} | "
                  f"{win.text(2)} |")
        if args.against:
            against(runs, args.against, q)


def against(runs: dict, reference: str, q: str) -> None:
    """Each arm minus `reference` on the seeds both have: paired over seeds, and pairs won / lost."""
    print(f"\n{q}, against `{reference}` (same seeds):\n")
    print(f"| arm | seeds | minus {reference}, paired over seeds | pairs won / lost / tied | sign test p |")
    print("|---|---|---|---|---|")
    for arm, by_seed in runs.items():
        seeds = [s for s in sorted(by_seed) if arm != reference and s in runs.get(reference, {})]
        mine, theirs, wins, losses, ties = [], [], 0, 0, 0
        for seed in seeds:
            c = pair_counts(by_seed[seed][q], runs[reference][seed][q])
            if c is None:
                continue
            mine.append(c.rate)
            theirs.append(c.their_rate)
            wins, losses, ties = wins + c.wins, losses + c.losses, ties + c.ties
        if mine:
            print(f"| {arm} | {len(mine)} | {paired(mine, theirs).text(2)} | {wins} / {losses} / {ties} | "
                  f"{win_rate(wins, losses, ties).p:.2g} |")


if __name__ == "__main__":
    main()
