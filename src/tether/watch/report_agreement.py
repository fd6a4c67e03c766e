"""The report's judge agreement: the run's own signals against a person's labels on its samples.

    results = run_agreement(run_path, samples, [Path("more_labels.jsonl")])  # RUN_DIR/labels.jsonl read too
    agreement_html(results, run_path)                                           # the page's section

Why on the run's page: the train reward rose, but did it rise on what the person calls good?
Each signal the run logged per sample (train reward, gold score, drift, each defense's value)
is checked against the person's yes/no labels and pairwise choices with the maths of
`tether agreement` (AUC with a bootstrap CI, a verdict line). A labels file written by
`tether label RUN_DIR` keeps each item's prompt, completion and step; a label is matched to
the run's samples.jsonl rows by prompt + completion text (so a moved run folder still
matches), at the labeled step when that step holds the text, else averaged over its steps.
Labels on other texts (the base model's step 0, another run) are counted and left out.
"""

from __future__ import annotations

import html
from dataclasses import replace
from pathlib import Path

import numpy as np

from tether.errors import TetherError
from tether.labels.agreement import Judge, Labels, _cell, agreement_report, read_labels

LABELS_FILE = "labels.jsonl"  # where `tether report` looks by default: the --out this page suggests
NOT_SIGNALS = {"step", "train", "gold", "drift"}  # a sample's other plain numbers are its defense values


def label_files(run_path: Path, extra: list[Path]) -> list[Path]:
    """RUN_DIR/labels.jsonl when present, then each --labels file, each once."""
    files = [run_path / LABELS_FILE] if (run_path / LABELS_FILE).is_file() else []
    for path in map(Path, extra):
        if path.resolve() not in {f.resolve() for f in files}:
            files.append(path)
    return files


def signals(samples: list[dict]) -> list[tuple[str, str, float]]:
    """(name shown, sample field, sign): every signal signed so that higher means better."""
    logged = {k for row in samples for k, v in row.items() if _number(v)}
    out = [("train", "train", 1.0)]
    if "gold" in logged:
        out.append(("gold", "gold", 1.0))
    if "drift" in logged:
        out.append(("-drift (less drift = better)", "drift", -1.0))
    out += [(name, name, 1.0) for name in sorted(logged - NOT_SIGNALS) if "/" not in name]
    return out


def run_agreement(run_path: Path, samples: list[dict], extra: list[Path] = ()) -> list[dict]:
    """One agreement report per labels file, with how many of its items and pairs are this run's; [] with no labels."""
    index: dict[tuple[str, str], list[dict]] = {}
    for row in samples:
        index.setdefault((row["prompt"], row["completion"]), []).append(row)
    chosen = signals(samples)
    results = []
    for path in label_files(run_path, list(extra)):
        try:
            labels = read_labels(path)  # a missing or damaged file: one line naming it, before anything is written
        except TetherError as e:
            if "no yes/no labels and no compare choices" not in str(e):
                raise
            labels = Labels(path, "")  # labeling has begun, nothing decided yet: the page says so
        mine = _matched(labels, index)
        counts = {"labels": str(path), "items": len(labels.sources), "matched": len(mine.sources),
                  "pairs_in_file": len(labels.pairs), "pairs_matched": len(mine.pairs)}
        if mine.answers or mine.pairs:
            judges = [Judge(name, _scorer(index, key, sign)) for name, key, sign in chosen]
            results.append({**agreement_report(mine, judges), **counts})
        else:
            results.append({**counts, "judges": []})
    return results


def _matched(labels: Labels, index: dict) -> Labels:
    """The labels on this run's samples only: items and pairs whose texts are in samples.jsonl."""
    def here(source: dict) -> bool:
        return ((source.get("prompt") or ""), source["completion"]) in index

    sources = {i: s for i, s in labels.sources.items() if here(s)}
    answers = {q: {i: a for i, a in items.items() if i in sources} for q, items in labels.answers.items()}
    return replace(labels, sources=sources, answers={q: a for q, a in answers.items() if a},
                   pairs=[p for p in labels.pairs if here(p.winner) and here(p.loser)])


def _scorer(index: dict, key: str, sign: float):
    def score(rows: list[dict]) -> np.ndarray:
        return np.array([sign * _value(index.get(((r.get("prompt") or ""), r["completion"]), []), r.get("step"), key)
                         for r in rows])
    return score


def _value(rows: list[dict], step, key: str) -> float:
    """The signal at the labeled step when that step holds the text; else its mean over the run's steps."""
    at_step = [r for r in rows if r.get("step") == step and step is not None]
    values = [float(r[key]) for r in (at_step or rows) if _number(r.get(key))]
    return float(np.mean(values)) if values else float("nan")


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


# --- what a person sees -----------------------------------------------------------------


def how_to_label(run_path: Path) -> str:
    return f"tether label {run_path} --spec SPEC.yaml --out {run_path / LABELS_FILE}"


def agreement_html(results: list[dict], run_path: Path) -> str:
    e = html.escape
    parts = ["<h2>Judge agreement with your labels</h2>"]
    if not results:
        return parts[0] + (f"<p class='agreement-none'>No labels for this run. Label some of its samples with "
                           f"<code>{e(how_to_label(run_path))}</code> (examples/labels_cheerful.yaml is a spec), "
                           f"then run <code>tether report</code> again; <code>--labels FILE</code> reads another file.</p>")
    for r in results:
        parts.append(f"<p class='agreement-file'>{e(r['labels'])}: {_counts(r)}.</p>")
        if not r["judges"]:
            parts.append("<p>None of them are this run's samples: nothing to compare.</p>")
            continue
        questions = list(r["questions"])
        head = ["signal", *[f"{q} (yes/no {c['yes']}/{c['no']})" for q, c in r["questions"].items()]]
        if r["pairs"]["decided"]:
            head.append(f"pairs ({r['pairs']['decided']} decided)")
        parts.append("<table class='agreement'><tr>" + "".join(f"<th>{e(h)}</th>" for h in head) + "</tr>")
        for j in r["judges"]:
            cells = [j["judge"], *[_cell(j["questions"][q]["auc"], j["questions"][q]["ci"]) for q in questions]]
            if j["pairs"]:
                cells.append(_cell(j["pairs"]["agreement"], j["pairs"]["ci"]))
            parts.append(f"<tr data-signal='{e(j['judge'])}'>" + "".join(f"<td>{e(c)}</td>" for c in cells) + "</tr>")
        parts.append("</table><p>AUC with its 95% bootstrap CI (0.5 = chance; + agrees, - disagrees, ? cannot tell).</p>")
        parts += [f"<p class='verdict'>{e(j['verdict'])}</p>" for j in r["judges"]]
    return "\n".join(parts)


def _counts(r: dict) -> str:
    pairs = f"; {r['pairs_matched']} of its {r['pairs_in_file']} compared pairs" if r["pairs_in_file"] else ""
    return (f"n labeled {r['matched']}: the file's labeled samples that are this run's (of {r['items']}, "
            f"matched by prompt + completion){pairs}")


def printed_summary(report_dir: Path) -> list:
    """What `tether report` prints, from the report/agreement.json it wrote: per labels file, the table and verdicts."""
    import json

    from rich.text import Text

    from tether.labels.agreement import report_table

    results, run_path = json.loads((report_dir / "agreement.json").read_text(encoding="utf-8")), report_dir.parent
    if not results:
        return [Text(f"judge agreement: no labels for this run; label some: {how_to_label(run_path)}")]
    out = []
    for r in results:
        out.append(Text(f"judge agreement, {r['labels']}: {_counts(r)}"))
        if r["judges"]:
            out.append(report_table(r))
            out += [Text(f"verdict: {j['verdict']}") for j in r["judges"]]
    return out
