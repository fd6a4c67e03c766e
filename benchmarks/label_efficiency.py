"""How many labels does a gold need, and does picking them beat drawing them at random? (issue 29, item 3: the proxy)

A gold (`tether gold fit`: hidden-state features of the embedded Gemma, an L2 logistic regression whose C is
chosen by grouped inner cross-validation) is fitted on n labels of a POOL and scored by its AUC on a TEST set of
labels on other prompts, read by other readers. The n labels are drawn two ways, as `tether label --pick` would
draw them (labels/pick.py: its ranking, then round-robin across prompts, near-duplicates passed over):

- random: `--by random`, n at once;
- picked: `--by uncertain`, simulated on the pool: the first `start` drawn at random, then rounds of `round`
  picked where the gold fitted on everything revealed so far is least sure. A label is revealed only when
  picked, as when a person reads.

Each (way, n) is repeated over `repeats` seeds; the table gives the mean test AUC with a 95% t-interval over
seeds, and the mean count of yes labels among the n (a gold needs both answers). This is the cheap proxy of
the curve; the tuned-and-read curve is the expensive half (docs/results.md says which was run).

    python benchmarks/label_efficiency.py                      # cheerful: good, ~10 min on 2 cores
    python benchmarks/label_efficiency.py --label on_task --repeats 5

Writes OUT/result.json, OUT/curve.png and OUT/table.md (default OUT: runs/label-efficiency/LABEL).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
LABELS = ROOT / "examples" / "labels"
POOL = [LABELS / "cheerful_labels.jsonl", LABELS / "cheerful_labels_calm.jsonl", LABELS / "cheerful_labels_detectors.jsonl"]
TEST = [LABELS / "cheerful_labels_experiment.jsonl"]
FEATURES = "hidden:embedded:gemma-3-270m"


def load(paths: list[Path], label: str):
    """(Items, yes/no) over the files, one per item (the package's reader: latest answer, majority over people)."""
    from tether.labels.agreement import read_labels
    from tether.labels.items import Item

    items, ys, seen = [], [], set()
    for path in paths:
        sources, y = read_labels(path).question(label)
        for s, yes in zip(sources, y):
            key = (s.get("prompt") or "", s["completion"])
            if key not in seen:
                seen.add(key)
                items.append(Item(hashlib.sha256("\0".join(key).encode()).hexdigest()[:12], key[0], key[1], s))
                ys.append(bool(yes))
    return items, np.array(ys)


def cached_features(items, out: Path) -> np.ndarray:
    from tether.labels.gold import features

    digest = hashlib.sha256("\n".join(f"{i.prompt}\0{i.completion}" for i in items).encode()).hexdigest()[:16]
    path = out / f"features-{digest}.npy"
    if not path.exists():
        out.mkdir(parents=True, exist_ok=True)
        np.save(path, features(FEATURES, [i.prompt for i in items], [i.completion for i in items]))
    return np.load(path)


def fit_auc(X, y, groups, train: list[int], X_test, y_test) -> float:
    """The gold fitted on `train` as `tether gold fit` fits it, scored on the test labels (NaN: one answer only)."""
    from tether.labels.agreement import auc
    from tether.labels.gold_fit import _fit, choose_c

    rows = np.array(train)
    if y[rows].all() or not y[rows].any():
        return float("nan")
    C = choose_c(X[rows], y[rows], groups[rows])
    scaler, model = _fit(X[rows], y[rows], C)
    return float(auc(model.decision_function(scaler.transform(X_test)), y_test))


def draw(items, vectors, n: int, by: str, seed: int, p_yes=None, exclude=()) -> list[int]:
    """`tether label --pick n --by BY`'s choice among the items not in `exclude` (labels/pick.py)."""
    from tether.labels.pick import _rank, _spread

    free = [k for k in range(len(items)) if k not in set(exclude)]
    sub = [items[k] for k in free]
    value, _ = _rank(sub, by, None if p_yes is None else p_yes[free], seed)
    order = sorted(range(len(sub)), key=lambda k: -value[k])
    return [free[k] for k in _spread(sub, order, n, 0.95, None, "cpu", vectors=vectors[free])]


def picked_curve(items, y, X, groups, vectors, sizes, seed, start, step, X_test, y_test) -> dict[int, tuple]:
    """(test AUC, yes labels) at each size, labels revealed only as they are picked, a refit between rounds."""
    from tether.labels.gold_fit import _fit, choose_c

    revealed, out = draw(items, vectors, min(start, sizes[0]), "random", seed), {}
    for n in sizes:
        while len(revealed) < n:
            take, rows = min(step, n - len(revealed)), np.array(revealed)
            if y[rows].all() or not y[rows].any():  # one answer only: nothing to be unsure about yet
                more = draw(items, vectors, take, "random", seed + len(revealed), exclude=revealed)
            else:
                scaler, model = _fit(X[rows], y[rows], choose_c(X[rows], y[rows], groups[rows]))
                p_yes = 1 / (1 + np.exp(-model.decision_function(scaler.transform(X))))
                more = draw(items, vectors, take, "uncertain", seed, p_yes=p_yes, exclude=revealed)
            revealed += more
        out[n] = (fit_auc(X, y, groups, revealed, X_test, y_test), int(y[revealed].sum()))
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--label", default="good")
    parser.add_argument("--sizes", default="25,50,100,200,all")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--start", type=int, default=25, help="picked: labels drawn at random before the first pick")
    parser.add_argument("--round", type=int, default=25, help="picked: labels picked a round, between refits")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    from scipy import stats

    from tether.infra.models import embed, load_embedder

    out = args.out or ROOT / "runs" / "label-efficiency" / args.label
    items, y = load(POOL, args.label)
    test, y_test = load(TEST, args.label)
    pool_prompts = {i.prompt for i in items}
    leaks = sum(i.prompt in pool_prompts for i in test)
    X_all = cached_features(items + test, out.parent)
    X, X_test = X_all[: len(items)], X_all[len(items):]
    groups = np.array([i.prompt for i in items])
    vectors = np.asarray(embed(load_embedder(), [i.completion for i in items]))
    sizes = sorted({len(items) if s == "all" else min(int(s), len(items)) for s in args.sizes.split(",")})
    print(f"pool: {len(items)} labels ({int(y.sum())} yes) on {len(pool_prompts)} prompts; test: {len(test)} "
          f"({int(y_test.sum())} yes) on {len({i.prompt for i in test})} prompts, {leaks} sharing a pool prompt",
          file=sys.stderr)
    runs: dict[str, dict[int, list]] = {"random": {n: [] for n in sizes}, "picked": {n: [] for n in sizes}}
    for seed in range(args.repeats):
        for n in sizes:
            chosen = draw(items, vectors, n, "random", seed)
            runs["random"][n].append((fit_auc(X, y, groups, chosen, X_test, y_test), int(y[chosen].sum())))
        for n, value in picked_curve(items, y, X, groups, vectors, sizes, seed, args.start, args.round,
                                     X_test, y_test).items():
            runs["picked"][n].append(value)
        print(f"repeat {seed + 1}/{args.repeats}: " + ", ".join(
            f"{w} n={n} {runs[w][n][-1][0]:.3f}" for w in runs for n in sizes if runs[w][n]), file=sys.stderr)

    def summary(values):
        aucs = np.array([a for a, _ in values], dtype=float)
        ok = aucs[~np.isnan(aucs)]
        half = stats.t.ppf(0.975, len(ok) - 1) * ok.std(ddof=1) / np.sqrt(len(ok)) if len(ok) > 1 else float("nan")
        return {"auc": float(ok.mean()) if len(ok) else None, "ci": [float(ok.mean() - half), float(ok.mean() + half)]
                if len(ok) > 1 else None, "fitted": int(len(ok)), "repeats": len(values),
                "yes": float(np.mean([k for _, k in values]))}

    result = {"label": args.label, "features": FEATURES, "pool": [str(p.relative_to(ROOT)) for p in POOL],
              "test": [str(p.relative_to(ROOT)) for p in TEST], "pool_n": len(items), "pool_yes": int(y.sum()),
              "test_n": len(test), "test_yes": int(y_test.sum()), "start": args.start, "round": args.round,
              "curve": {w: {n: summary(v) for n, v in by.items()} for w, by in runs.items()}}
    out.mkdir(parents=True, exist_ok=True)
    (out / "result.json").write_text(json.dumps(result, indent=1))
    lines = ["| labels | random: test AUC [95% CI] (yes among them) | picked (uncertain) | picked minus random |",
             "|---|---|---|---|"]
    for n in sizes:
        r, p = result["curve"]["random"][n], result["curve"]["picked"][n]
        diff = [a - b for (a, _), (b, _) in zip(runs["picked"][n], runs["random"][n])]
        diff = np.array([d for d in diff if not np.isnan(d)])
        d_half = stats.t.ppf(0.975, len(diff) - 1) * diff.std(ddof=1) / np.sqrt(len(diff)) if len(diff) > 1 else np.nan

        def cell(s):
            return "no fit" if s["auc"] is None else (f"{s['auc']:.3f} [{s['ci'][0]:.3f}, {s['ci'][1]:.3f}] ({s['yes']:.1f})"
                                                      if s["ci"] else f"{s['auc']:.3f} ({s['yes']:.1f})")
        lines.append(f"| {n} | {cell(r)} | {cell(p)} | {diff.mean():+.3f} [{diff.mean() - d_half:+.3f}, "
                     f"{diff.mean() + d_half:+.3f}] |" if len(diff) > 1 else f"| {n} | {cell(r)} | {cell(p)} | - |")
    (out / "table.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for way, colour in (("random", "tab:gray"), ("picked", "tab:blue")):
        pts = [(n, s) for n, s in result["curve"][way].items() if s["auc"] is not None]
        ax.errorbar([n for n, _ in pts], [s["auc"] for _, s in pts], capsize=3, color=colour, marker="o", label=way,
                    yerr=np.array([[s["auc"] - s["ci"][0], s["ci"][1] - s["auc"]] if s["ci"] else [0, 0]
                                   for _, s in pts]).T)
    ax.set_xscale("log")
    ax.set_xlabel("labels the gold is fitted on")
    ax.set_ylabel(f"AUC on held-out labels ({args.label})")
    ax.set_title("A gold's labels: picked (least sure) vs random")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "curve.png", dpi=120)
    return 0


if __name__ == "__main__":
    sys.exit(main())
