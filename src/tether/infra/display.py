"""Rich tables a person reads after `tether score` and `tether audit`."""

from __future__ import annotations

import numpy as np
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from tether.judge.audit import MODES, PERTURBATIONS, AuditReport
from tether.judge.evaluator import ScoreResult

# Tables are data: printed whole, 120 columns wide when stdout is not a terminal.
stdout = Console(soft_wrap=True)
if not stdout.is_terminal:
    stdout = Console(soft_wrap=True, width=120)


def score_table(result: ScoreResult, labels: list[str | None]) -> Table:
    """Per principle: mean score, P(yes), mass on neither word; per label when texts have one."""
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
    """One table per mode: rows are perturbations, columns principles (mean shift, share rose)."""
    tables = []
    for mode in MODES:
        table = Table(title=f"audit, {mode} mode: mean score shift (share of texts whose score rose)")
        table.add_column("perturbation")
        for principle, base in report.baseline[mode].items():
            table.add_column(f"{principle}\n(base {base:+.2f})", justify="right")
        for name in PERTURBATIONS:
            cells = [report.cells[mode][p][name] for p in report.baseline[mode]]
            table.add_row(name, *(
                f"{'[bold red]' if c.exploitable else ''}{c.mean_shift:+.3f} ({c.rose_share:.0%})" for c in cells
            ))
        tables.append(table)
    return tables
