"""Does a judge agree with a person on the policy's own samples?

A judge that ranks curated texts well can rank the policy's text backwards: the policy
writes exactly what the judge overpays for. So each judge signal is checked against a
person's yes/no labels on the samples themselves (AUC with a bootstrap 95% CI) and against
their pairwise choices (the share of non-tie pairs where the judge ranks the person's
winner first), and a verdict line says, per question, agrees / disagrees / cannot tell.

    tether agreement labels.jsonl --judge constitution:examples/cheerful.yaml \\
        --judge gold:golds/good --judge monitor:repetition --judge field:train --out agreement.json

Judge specs (every signal is signed so that higher means better):
    constitution:PATH[@MODEL]  an `Evaluator` on prompt + completion (default: the embedded Gemma)
    gold:DIR                   a gold judge fitted by `tether gold fit`
    monitor:NAME               a registered text monitor, negated when higher is worse
    field:NAME                 a number already in the labels' source (train, gold, drift, ...)

The labels file is read here with its own small reader (`read_labels`), kept apart from the
labeling page's store: the latest answer per item, question and person counts; skip answers
do not; several people's answers on one item are a majority vote (a tie drops the item).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tether.errors import TetherError
from tether.infra import jsonl

RESAMPLES = 2000  # bootstrap resamples: the CI's ends move by < 0.01 AUC between seeds at this count
MARKS = {"agrees": "+", "disagrees": "-", "cannot tell": "?"}  # the table's verdict per cell


# --- the labels file ------------------------------------------------------------------


@dataclass
class Pair:
    """One non-tie compare answer: the source dicts of the side the person chose and the other."""

    winner: dict
    loser: dict


@dataclass
class Labels:
    path: Path
    sha256: str
    sources: dict[str, dict] = field(default_factory=dict)  # item id -> its source (prompt, completion, ...)
    answers: dict[str, dict[str, bool]] = field(default_factory=dict)  # question -> item id -> yes?
    pairs: list[Pair] = field(default_factory=list)
    ties: int = 0
    people: set[str] = field(default_factory=set)

    def question(self, name: str) -> tuple[list[dict], np.ndarray]:
        """The sources and yes/no labels of one question, or a one-line error naming the file."""
        if name not in self.answers:
            asked = ", ".join(sorted(self.answers)) or "none"
            raise TetherError(f"{self.path}: no yes/no answers to {name!r}; questions answered: {asked}")
        items = self.answers[name]
        return [self.sources[i] for i in items], np.array(list(items.values()), dtype=bool)


def read_labels(path: str | Path, who: str | None = None) -> Labels:
    """The labels file: latest answer per item + question + person, skips dropped, majority over people."""
    path = Path(path)
    records = jsonl.read(path, missing_ok=False)
    labels = Labels(path, hashlib.sha256(path.read_bytes()).hexdigest())
    latest: dict[tuple, str] = {}
    compares: dict[tuple, dict] = {}
    for n, r in enumerate(records, 1):
        if who is not None and r.get("who") != who:
            continue
        kind = r.get("kind")
        if kind == "label":
            item, question, answer = r.get("item"), r.get("question"), r.get("answer")
            if item is None or not isinstance(question, str) or answer not in ("yes", "no", "skip"):
                raise TetherError(f"{path}: record {n}: a label needs `item`, `question` and `answer` yes, no or skip")
            source = r.get("source") or {}
            if not isinstance(source, dict) or not isinstance(source.get("completion"), str):
                raise TetherError(f"{path}: record {n}: a label needs `source` with a `completion` string")
            labels.sources[str(item)] = source
            latest[(str(item), question, r.get("who"))] = answer
        elif kind == "compare":
            if r.get("choice") not in ("left", "right", "tie") or not isinstance(r.get("sources"), dict):
                raise TetherError(f"{path}: record {n}: a compare needs `choice` left, right or tie and `sources`")
            compares[(frozenset((str(r.get("left")), str(r.get("right")))), r.get("who"))] = r
        else:
            continue  # other kinds (page settings, notes) are not answers
        labels.people.add(str(r.get("who")))
    votes: dict[tuple[str, str], list[bool]] = {}
    for (item, question, _), answer in latest.items():
        if answer != "skip":
            votes.setdefault((question, item), []).append(answer == "yes")
    for (question, item), says in votes.items():
        if 2 * sum(says) != len(says):  # an even split between people is no label
            labels.answers.setdefault(question, {})[item] = 2 * sum(says) > len(says)
    for r in compares.values():
        if r["choice"] == "tie":
            labels.ties += 1
            continue
        sides = {s: {"prompt": r.get("prompt", ""), **(r["sources"].get(s) or {})} for s in ("left", "right")}
        if not all(isinstance(s.get("completion"), str) for s in sides.values()):
            raise TetherError(f"{path}: a compare of {r.get('left')} and {r.get('right')} lacks a `completion` in `sources`")
        other = "right" if r["choice"] == "left" else "left"
        labels.pairs.append(Pair(sides[r["choice"]], sides[other]))
    if not labels.answers and not labels.pairs:
        raise TetherError(f"{path}: no yes/no labels and no compare choices" + (f" by {who!r}" if who else ""))
    return labels


# --- the maths: pure functions --------------------------------------------------------


def auc(scores: Sequence[float], labels: Sequence[bool]) -> float:
    """AUC by Mann-Whitney: the chance a random yes outscores a random no, a tie counting half.

    >>> auc([0.1, 0.4, 0.35, 0.8], [False, False, True, True])
    0.75
    """
    from scipy.stats import rankdata

    s, y = np.asarray(scores, dtype=float), np.asarray(labels, dtype=bool)
    n1, n0 = int(y.sum()), int((~y).sum())
    if n1 == 0 or n0 == 0:
        return float("nan")
    ranks = rankdata(s)  # tied scores share their average rank
    return float((ranks[y].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def auc_ci(scores: Sequence[float], labels: Sequence[bool], resamples: int = RESAMPLES,
           seed: int = 0) -> tuple[float, float]:
    """Bootstrap 95% CI of the AUC: items resampled within each class, so every resample has both.

    A resample's AUC is c_yes · H · c_no / (n_yes · n_no), with H the yes-by-no win matrix
    (1, ½ for a tie, 0) and c the times each item was drawn: all resamples in two products.
    """
    s, y = np.asarray(scores, dtype=float), np.asarray(labels, dtype=bool)
    pos, neg = s[y], s[~y]
    if not len(pos) or not len(neg):
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    wins = (pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])  # (n_yes, n_no)
    drawn_yes = rng.multinomial(len(pos), np.full(len(pos), 1 / len(pos)), size=resamples)  # (B, n_yes)
    drawn_no = rng.multinomial(len(neg), np.full(len(neg), 1 / len(neg)), size=resamples)  # (B, n_no)
    draws = ((drawn_yes @ wins) * drawn_no).sum(axis=1) / (len(pos) * len(neg))
    lo, hi = np.percentile(draws, [2.5, 97.5])
    return float(lo), float(hi)


def pair_agreement(winner: Sequence[float], loser: Sequence[float]) -> float:
    """The share of pairs where the signal ranks the person's winner first (a tie in the signal counts half).

    >>> pair_agreement([2.0, 1.0, 0.5], [1.0, 3.0, 0.5])
    0.5
    """
    w, lo = np.asarray(winner, dtype=float), np.asarray(loser, dtype=float)
    if not len(w):
        return float("nan")
    return float(np.mean((w > lo) + 0.5 * (w == lo)))


def pair_ci(winner: Sequence[float], loser: Sequence[float], resamples: int = RESAMPLES,
            seed: int = 0) -> tuple[float, float]:
    """Bootstrap 95% CI of `pair_agreement`, pairs resampled."""
    hits = (np.asarray(winner, float) > np.asarray(loser, float)) + 0.5 * (np.asarray(winner, float) == np.asarray(loser, float))
    if not len(hits):
        return float("nan"), float("nan")
    means = np.random.default_rng(seed).choice(hits, (resamples, len(hits))).mean(axis=1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    return float(lo), float(hi)


def stance(ci: Sequence[float]) -> str:
    """'agrees' when the CI is above 0.5, 'disagrees' when below, else 'cannot tell'."""
    lo, hi = ci
    if lo > 0.5:
        return "agrees"
    if hi < 0.5:
        return "disagrees"
    return "cannot tell"


def verdict(name: str, questions: dict[str, dict], pairs: dict | None) -> str:
    """One line per judge: where it agrees with the person, disagrees, or the labels cannot tell."""
    parts: dict[str, list[str]] = {"agrees": [], "disagrees": [], "cannot tell": [], "no data": []}
    for q, row in questions.items():
        if np.isnan(row["auc"]):
            parts["no data"].append(q)
            continue
        side = stance(row["ci"])
        parts[side].append(f"AUC {row['auc']:.2f} for {q}" if side == "disagrees" else f"{q} (AUC {row['auc']:.2f})")
    if pairs and pairs["n"]:
        parts[stance(pairs["ci"])].append(f"your pairwise choices ({pairs['agreement']:.0%} of {pairs['n']})")
    out = []
    if parts["agrees"]:
        out.append("agrees with you on " + ", ".join(parts["agrees"]))
    if parts["disagrees"]:
        out.append("disagrees with you on your policy's samples: " + ", ".join(parts["disagrees"]))
    if parts["cannot tell"]:
        out.append("cannot tell on " + ", ".join(parts["cannot tell"]) + " (the CI covers 0.5: label more)")
    if parts["no data"]:
        out.append("no scores on both yes and no items for " + ", ".join(parts["no data"]))
    return f"{name}: " + "; ".join(out)


# --- judges ---------------------------------------------------------------------------


@dataclass
class Judge:
    """A signal over labelled sources (dicts with prompt and completion), higher = better; NaN = no value."""

    spec: str
    score: Callable[[list[dict]], np.ndarray]
    note: str = ""


# --- the report -----------------------------------------------------------------------


def agreement_report(labels: Labels, judges: Sequence[Judge], resamples: int = RESAMPLES, seed: int = 0) -> dict:
    """Every judge against every question and the pairwise choices, as a JSON-ready report."""
    items = list(labels.sources)
    rows = [labels.sources[i] for i in items] + [p.winner for p in labels.pairs] + [p.loser for p in labels.pairs]
    out = {"labels": str(labels.path), "labels_sha256": labels.sha256, "people": sorted(labels.people),
           "questions": {q: {"yes": int(sum(a.values())), "no": int(len(a) - sum(a.values()))}
                         for q, a in sorted(labels.answers.items())},
           "pairs": {"decided": len(labels.pairs), "ties": labels.ties},
           "resamples": resamples, "seed": seed, "judges": []}
    for judge in judges:
        values = np.asarray(judge.score(rows), dtype=float)
        by_item = dict(zip(items, values[: len(items)]))
        entry = {"judge": judge.spec, "questions": {}, "pairs": None, "note": judge.note}
        for q, answers in sorted(labels.answers.items()):
            s = np.array([by_item[i] for i in answers])
            y = np.array(list(answers.values()), dtype=bool)
            keep = ~np.isnan(s)
            s, y = s[keep], y[keep]
            entry["questions"][q] = {"auc": auc(s, y), "ci": list(auc_ci(s, y, resamples, seed)),
                                     "yes": int(y.sum()), "no": int((~y).sum()), "missing": int((~keep).sum())}
        if labels.pairs:
            k = len(labels.pairs)
            w, lo = values[len(items): len(items) + k], values[len(items) + k:]
            keep = ~(np.isnan(w) | np.isnan(lo))
            entry["pairs"] = {"agreement": pair_agreement(w[keep], lo[keep]), "ci": list(pair_ci(w[keep], lo[keep], resamples, seed)),
                              "n": int(keep.sum())}
        entry["verdict"] = verdict(judge.spec, entry["questions"], entry["pairs"])
        out["judges"].append(_null_nans(entry))
    return out


def _null_nans(value):
    """NaN (no data) as JSON null: `NaN` is not JSON, and a reader of the report would choke on it."""
    if isinstance(value, dict):
        return {k: _null_nans(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_null_nans(v) for v in value]
    return None if isinstance(value, float) and np.isnan(value) else value


def report_table(report: dict):
    """A rich table: one row per judge, one AUC column per question, and the pairwise agreement."""
    from rich.table import Table
    from rich.text import Text

    questions = list(report["questions"])
    out = Table(title=f"judges against {report['labels']} (AUC, 95% bootstrap CI; 0.5 = chance; + agrees, - disagrees)")
    for name in ["judge", *[f"{q} (yes/no {c['yes']}/{c['no']})" for q, c in report["questions"].items()]]:
        out.add_column(name)
    if report["pairs"]["decided"]:
        out.add_column(f"pairs ({report['pairs']['decided']} decided)")
    for entry in report["judges"]:
        row = [entry["judge"], *[_cell(entry["questions"][q]["auc"], entry["questions"][q]["ci"]) for q in questions]]
        if entry["pairs"]:
            row.append(_cell(entry["pairs"]["agreement"], entry["pairs"]["ci"]))
        out.add_row(*map(Text, row))  # Text: a spec such as field:smile: is shown, never turned into markup or emoji
    return out


def _cell(value: float, ci: Sequence[float]) -> str:
    if value is None:
        return "-"
    return f"{value:.2f} [{ci[0]:.2f}, {ci[1]:.2f}] {MARKS[stance(ci)]}"
