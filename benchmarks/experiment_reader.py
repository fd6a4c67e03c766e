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
from pathlib import Path

from tether.experiment.stats import mean_ci, paired, win_rate
from tether.infra import jsonl
from detector_person import reader_labels  # run as a script: benchmarks/ is on the path

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
            seeds = sorted(by_seed)
            rates, base_rates, wins, losses, ties = [], [], 0, 0, 0
            cells = []
            for seed in seeds:
                mine = by_seed[seed][q]
                keys = [k for k in mine if k in base[q]]
                if not keys:
                    continue
                cells.append(f"s{seed}: {sum(mine[k] for k in keys)}/{len(keys)}")
                rates.append(sum(mine[k] for k in keys) / len(keys))
                base_rates.append(sum(base[q][k] for k in keys) / len(keys))
                for k in keys:
                    wins += mine[k] and not base[q][k]
                    losses += base[q][k] and not mine[k]
                    ties += mine[k] == base[q][k]
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
            a, b = by_seed[seed][q], runs[reference][seed][q]
            keys = [k for k in a if k in b]
            if not keys:
                continue
            mine.append(sum(a[k] for k in keys) / len(keys))
            theirs.append(sum(b[k] for k in keys) / len(keys))
            wins += sum(a[k] and not b[k] for k in keys)
            losses += sum(b[k] and not a[k] for k in keys)
            ties += sum(a[k] == b[k] for k in keys)
        if mine:
            print(f"| {arm} | {len(mine)} | {paired(mine, theirs).text(2)} | {wins} / {losses} / {ties} | "
                  f"{win_rate(wins, losses, ties).p:.2g} |")


if __name__ == "__main__":
    main()
