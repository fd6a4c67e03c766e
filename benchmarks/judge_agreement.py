"""Judges against a reader on the policy's own samples: the tables of docs/results.md (issue 11).

    python benchmarks/judge_agreement.py examples/labels/cheerful_labels.jsonl \
        --base runs/lab/main/base_samples.jsonl --out /tmp/agreement.md

For the shipped labels: (1) every judge's AUC against each question, with bootstrap 95% CIs
(`tether agreement`'s maths); (2) golds fitted to the labels, cross-validated with folds
grouped by prompt, on MiniLM features and on the embedded Gemma's hidden states, overall and
on each source's items (a MiniLM gold on the samples of a run whose defense optimized
MiniLM similarity is where a shared blind spot would show); (3) the reader's rates by source.
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from pathlib import Path

import numpy as np

from tether.labels.agreement import agreement_report, auc, auc_ci, read_labels
from tether.labels.gold import cross_validate, features
from tether.watch.signals import parse_judge

QUESTIONS = ("on_task", "cheerful", "good")
FEATURES = ("minilm", "hidden:embedded:gemma-3-270m")


def cell(a: float, ci) -> str:
    return "n/a" if np.isnan(a) else f"{a:.2f} [{ci[0]:.2f}, {ci[1]:.2f}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("labels", type=Path)
    parser.add_argument("--base", type=Path, required=True, help="the run's base_samples.jsonl")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    labels = read_labels(args.labels)
    lines = []

    specs = ["constitution:examples/cheerful.yaml", "constitution:examples/on_topic.yaml",
             "constitution:examples/fluent.yaml", "field:train", "field:gold", f"similarity:base={args.base}",
             "similarity:prompt", "monitor:repetition"]
    report = agreement_report(labels, [parse_judge(s, "cpu") for s in specs], resamples=2000, seed=0)
    yes = {q: f"{report['questions'][q]['yes']}/{report['questions'][q]['yes'] + report['questions'][q]['no']}"
           for q in QUESTIONS}
    lines += ["| signal | " + " | ".join(f"AUC {q} ({yes[q]} yes)" for q in QUESTIONS) + " |",
              "| --- | " + " | ".join("---:" for _ in QUESTIONS) + " |"]
    for entry in report["judges"]:
        qs = entry["questions"]
        lines.append(f"| `{entry['judge']}` | " + " | ".join(
            cell(qs[q]["auc"], qs[q]["ci"]) + (f" (n={qs[q]['yes'] + qs[q]['no']})" if qs[q]["missing"] else "")
            for q in QUESTIONS) + " |")

    lines += ["", "| fitted gold (CV, grouped by prompt) | " + " | ".join(QUESTIONS) + " |",
              "| --- | " + " | ".join("---:" for _ in QUESTIONS) + " |"]
    by_tag: dict = defaultdict(dict)
    for kind in FEATURES:
        row = []
        for q in QUESTIONS:
            sources, y = labels.question(q)
            prompts = [s.get("prompt") or "" for s in sources]
            X = features(kind, prompts, [s["completion"] for s in sources], "cpu")
            oof, _, _ = cross_validate(X, y, np.array(prompts), 5, 0)
            row.append(cell(auc(oof, y), auc_ci(oof, y, 2000, 0)))
            tags = np.array([s.get("tag", "?") for s in sources])
            for tag in sorted(set(tags)):
                m = tags == tag
                by_tag[(kind, q)][tag] = (auc(oof[m], y[m]) if 0 < y[m].sum() < m.sum() else float("nan"), int(m.sum()))
        lines.append(f"| {kind} | " + " | ".join(row) + " |")

    lines += ["", "| gold features | question | " + " | ".join(sorted({t for v in by_tag.values() for t in v})) + " |",
              "| --- | --- | " + " | ".join("---:" for _ in sorted({t for v in by_tag.values() for t in v})) + " |"]
    tags = sorted({t for v in by_tag.values() for t in v})
    for (kind, q), per in by_tag.items():
        lines.append(f"| {kind} | {q} | " + " | ".join(
            "n/a" if t not in per or np.isnan(per[t][0]) else f"{per[t][0]:.2f} (n={per[t][1]})" for t in tags) + " |")

    rates: dict = defaultdict(lambda: defaultdict(list))
    for q in QUESTIONS:
        for item, answer in labels.answers[q].items():
            rates[labels.sources[item].get("tag", "?")][q].append(answer)
    lines += ["", "| source | n | " + " | ".join(QUESTIONS) + " |", "| --- | ---: | " + " | ".join("---:" for _ in QUESTIONS) + " |"]
    for tag in sorted(rates):
        n = max(len(v) for v in rates[tag].values())
        lines.append(f"| {tag} | {n} | " + " | ".join(f"{100 * np.mean(rates[tag][q]):.0f}%" for q in QUESTIONS) + " |")
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
