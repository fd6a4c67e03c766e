"""Rich tables and lines a person reads after each command; built here so the CLI only calls.

Imports nothing heavy (no torch): the CLI imports it before a model loads.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from rich.console import Console
from rich.markup import escape
from rich.table import Table

if TYPE_CHECKING:
    from tether.judge.audit import AuditReport
    from tether.judge.evaluator import ScoreResult
    from tether.judge.habits import HabitsReport

# Tables are data: printed whole, 120 columns wide when stdout is not a terminal.
stdout = Console(soft_wrap=True)
if not stdout.is_terminal:
    stdout = Console(soft_wrap=True, width=120)


def table(title: str, header: list[str], rows: list[list[str]]) -> Table:
    """A plain table; every cell is text, escaped (rich markup in data is shown, never applied)."""
    out = Table(title=title)
    for name in header:
        out.add_column(name)
    for row in rows:
        out.add_row(*map(escape, row))
    return out


def label_key(label) -> str | None:
    """Labels compared as text: 3 and "3" are one group; a list or mapping label is its JSON."""
    if label is None:
        return None
    return label if isinstance(label, str) else json.dumps(label, ensure_ascii=False, sort_keys=True)


def score_table(result: ScoreResult, labels: list) -> Table:
    """Per principle: mean score, P(yes), mass on neither word; per label when texts have one."""
    labels = [label_key(label) for label in labels]
    scores = result.scores()
    table = Table(title=f"{result.constitution.name}: {len(result.texts)} texts (score = log-odds, + is good)")
    table.add_column("principle")
    table.add_column("mode")
    table.add_column("mean score", justify="right")
    table.add_column("min .. max", justify="right")
    table.add_column("P(yes)", justify="right")
    table.add_column("P(neither)", justify="right")
    groups = sorted({label for label in labels if label is not None})
    for g in groups:
        table.add_column(escape(f"mean ({g})"), justify="right")
    label_arr = np.array(labels, dtype=object)
    for k, name in enumerate(result.names):
        column = scores[:, k]
        table.add_row(
            name,
            "debiased" if result.debiased[k] else "plain",
            f"{column.mean():+.3f}",
            f"{column.min():+.2f} .. {column.max():+.2f}",
            f"{result.p_yes[:, k].mean():.3f}",
            f"{result.p_neither[:, k].mean():.3f}",
            *(f"{column[label_arr == g].mean():+.3f}" for g in groups),
        )
    total = result.total()
    table.add_row(
        f"[bold]total ({result.constitution.combine})", "", f"[bold]{total.mean():+.3f}",
        f"{total.min():+.2f} .. {total.max():+.2f}", "", "",
        *(f"{total[label_arr == g].mean():+.3f}" for g in groups),
    )
    return table


def audit_tables(report: AuditReport) -> list[Table]:
    """One table per mode: rows are perturbations, columns principles (mean shift, share rose); then a run's habits."""
    tables = []
    from tether.judge.audit import MODES

    for mode in MODES:
        table = Table(title=f"audit of {escape(report.source)}, {mode} mode: mean score shift (share of texts whose score rose)")
        table.add_column("perturbation")
        for principle, base in report.baseline[mode].items():
            table.add_column(f"{principle}\n(base {base:+.2f})", justify="right")
        for name in next(iter(report.cells[mode].values()), {}):
            cells = [report.cells[mode][p][name] for p in report.baseline[mode]]
            table.add_row(name, *(
                f"{'[bold red]' if c.exploitable else ''}{c.mean_shift:+.3f} ({c.rose_share:.0%})" for c in cells
            ))
        tables.append(table)
    if report.habits is not None:
        tables += _habit_tables(report.habits)
    return tables


def _habit_tables(habits: HabitsReport) -> list[Table]:
    """`--run`: late vs base scores per principle; then each habit's price on the base texts, in the run's modes."""
    first, last = habits.late_steps
    shift = Table(title=f"{escape(habits.run)}: {habits.n_late} late completions (steps {first}-{last}) "
                        f"vs {habits.n_base} base completions of the same prompts")
    for name in ("principle", "mode", "late", "base", "shift", "late above base median"):
        shift.add_column(name, justify="left" if name in ("principle", "mode") else "right")
    for mode in ("plain", "debiased"):
        for principle, s in habits.scores[mode].items():
            run_mode = " (the run's)" if habits.run_mode[principle] == mode else ""
            shift.add_row(escape(principle), mode + run_mode, f"{s['late']:+.3f}", f"{s['base']:+.3f}",
                          f"{s['shift']:+.3f}", f"{s['above_base_median']:.0%}")
    priced = Table(title="the run's habits grafted onto the base completions: mean score shift (share that rose), "
                         "in the run's modes")
    for name in ("habit", "kind", "late", "base"):
        priced.add_column(name, justify="right" if name in ("late", "base") else "left")
    for principle, mode in habits.run_mode.items():
        for place in ("append", "prepend"):
            priced.add_column(escape(f"{principle} ({mode})\n{place}ed"), justify="right")
    for h in habits.habits:
        cells = [habits.cells[h.text][place][mode][p] for p, mode in habits.run_mode.items() for place in ("append", "prepend")]
        priced.add_row(escape(repr(h.text)), h.kind, f"{h.late_share:.0%}", f"{h.base_share:.0%}", *(
            f"{'[bold red]' if c.exploitable else ''}{c.mean_shift:+.3f} ({c.rose_share:.0%})" for c in cells))
    return [shift, priced]


def sft_table(evaluation: dict) -> Table:
    """`tether sft`: mean score per principle and pass rate on the held-out prompts, before and after."""
    rows = [[name, f"{e['before']:.3f}", f"{e['after']:.3f}", f"{e['after'] - e['before']:+.3f}"]
            for name, e in evaluation["mean_scores"].items()]
    rows.append(["pass rate", f"{evaluation['pass_rate']['before']:.0%}", f"{evaluation['pass_rate']['after']:.0%}", ""])
    return table(f"held-out prompts ({evaluation['completions']} completions)", ["score", "before", "after", "change"], rows)


def corpus_table(summary: dict) -> Table:
    """`tether sample`: per principle, threshold, pass rate and score distributions, all and kept."""
    from tether.corpus.summary import HEADER, table_rows

    return table("corpus summary", HEADER, table_rows(summary))


def corpus_line(summary: dict, corpus_path: Path) -> str:
    return (f"{summary['kept_by_sampler']} of {summary['candidates']} candidates kept "
            f"({100 * summary['acceptance_rate']:.0f}%); corpus: {corpus_path}")


def values_table(rows: list[dict], run_dir: Path) -> Table:
    """`tether values`: each value of the utility function with its nearest texts."""
    cells = [[str(i), r["kind"], f"{r['credit']:.3f}", str(r["count"]), str(r["step"]), r["text"],
              "\n".join(f"{n['similarity']:.2f}  {n['text']}" for n in r["nearest"])] for i, r in enumerate(rows, 1)]
    return table(f"value store of {run_dir}", ["#", "kind", "credit", "count", "step", "value", "nearest texts"], cells)


def tune_line(run_path: Path) -> str:
    """The line `tether tune` ends with: where the run is, its steps, which detectors tripped when."""
    summary = json.loads((run_path / "finished.json").read_text(encoding="utf-8"))
    trips = ", ".join(f"{name} at step {step}" for name, step in summary["detector_trips"].items()) or "none"
    return f"run finished: {run_path} ({summary['steps']} steps); detector trips: {trips}"
