"""`tether score --steps`: each text's steps judged blind to what follows (judge/steps.py), and their summary."""

from __future__ import annotations

from rich.console import Group
from rich.table import Table


def add_steps(evaluator, records, rows: list[dict], how: str, max_steps: int | None, table):
    """Add a `steps` list to each output row; returns the score table with the per-position summary below it.

    A record with `prompt` and `completion` is split on its completion, read after its prompt; a bare
    `text` is split whole."""
    from tether.infra.texts import plain_text
    from tether.judge.steps import by_position, constitution_scorer, score_steps

    pairs = [(plain_text(r.meta["prompt"]), r.meta["completion"]) if "text" not in r.meta and "completion" in r.meta
             else ("", r.text) for r in records]
    steps = score_steps(constitution_scorer(evaluator), [p for p, _ in pairs], [c for _, c in pairs], how, max_steps)
    for row, s in zip(rows, steps):
        row["steps"] = s
    summary = Table(title=f"steps ({how}): each judged on the prompt and the steps before it, never after")
    for column in ("step", "texts", "mean score", "min .. max"):
        summary.add_column(column, justify="right")
    for position, n, mean, low, high in by_position(steps):
        summary.add_row(str(position), str(n), f"{mean:+.3f}", f"{low:+.2f} .. {high:+.2f}")
    return Group(table, summary)
