"""The labels file: one JSONL line per answer a person gives, appended and fsynced before the page hears back.

    {"kind": "label", "item": "3f2a9c01be4d", "question": "on_task", "answer": "yes", "who": "ana",
     "time": "2025-06-01T10:22:03+00:00", "source": {"prompt": ..., "completion": ..., "file": ..., "step": 21, ...}}
    {"kind": "compare", "left": "3f2a...", "right": "9b1c...", "prompt": ..., "choice": "left", "winner": "3f2a...",
     "who": "ana", "time": ..., "sources": {"left": {...}, "right": {...}}}

Append-only: a changed mind is a later line, and the latest answer per (item, question, person)
counts. Each line carries the sample's text and source (run, step, arm, scores), so the file
alone is enough for later analysis (agreement, fitting a gold judge); the page never shows the
source. A crash mid-append leaves a torn last line, which readers skip and the next answer cuts.
Appends run under a lock beside the file, so two pages on one file never interleave.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from tether.errors import TetherError
from tether.infra import jsonl
from tether.labels.items import Item

ANSWERS = ("yes", "no", "skip")
CHOICES = ("left", "right", "tie")


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def source_of(item: Item) -> dict:
    """What the labels file keeps about an item: its text and its hidden source."""
    return {"prompt": item.prompt, "completion": item.completion, **item.source}


class LabelsFile:
    def __init__(self, path: str | Path):
        self.path = Path(path)

    def _append(self, record: dict) -> dict:
        if self.path.is_dir():
            raise TetherError(f"{self.path}: is a folder; the labels file is a .jsonl file")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with jsonl.locked(self.path.parent, f".{self.path.name}.lock"):
            jsonl.append(self.path, [record])
        return record

    def add_label(self, item: Item, question: str, answer: str, who: str) -> dict:
        if answer not in ANSWERS:
            raise TetherError(f"answer {answer!r}: write one of {', '.join(ANSWERS)}")
        return self._append({"kind": "label", "item": item.id, "question": question, "answer": answer,
                             "who": who, "time": now(), "source": source_of(item)})

    def add_compare(self, prompt: str, left: Item, right: Item, choice: str, who: str) -> dict:
        if choice not in CHOICES:
            raise TetherError(f"choice {choice!r}: write one of {', '.join(CHOICES)}")
        winner = {"left": left.id, "right": right.id}.get(choice)
        return self._append({"kind": "compare", "left": left.id, "right": right.id, "prompt": prompt,
                             "choice": choice, "winner": winner, "who": who, "time": now(),
                             "sources": {"left": source_of(left), "right": source_of(right)}})

    def records(self) -> list[dict]:
        """Every complete line (a torn last line skipped); a label or compare missing its keys is an error."""
        rows = jsonl.read(self.path)
        for n, r in enumerate(rows, 1):
            if r.get("kind") == "label" and not (isinstance(r.get("item"), str) and isinstance(r.get("question"), str)
                                                 and r.get("answer") in ANSWERS):
                raise TetherError(f"{self.path}: record {n}: a label needs item, question and answer yes, no or skip")
            if r.get("kind") == "compare" and not (isinstance(r.get("left"), str) and isinstance(r.get("right"), str)
                                                   and r.get("choice") in CHOICES):
                raise TetherError(f"{self.path}: record {n}: a compare needs left, right and choice left, right or tie")
        return rows

    def latest(self, who: str | None = None) -> dict[tuple[str, str, str], str]:
        """(item, question, who) -> the latest answer; only this person's when `who` is given."""
        return {(r["item"], r["question"], r.get("who", "")): r["answer"] for r in self.records()
                if r.get("kind") == "label" and (who is None or r.get("who") == who)}

    def answers_of(self, who: str) -> dict[str, dict[str, str]]:
        """item -> {question: latest answer} for one person."""
        out: dict[str, dict[str, str]] = {}
        for (item, question, _), answer in self.latest(who).items():
            out.setdefault(item, {})[question] = answer
        return out

    def unanswered(self, items: list[Item], questions: list[str], who: str) -> list[Item]:
        """The items this person has not yet answered every question of (a skip is an answer)."""
        answers = self.answers_of(who)
        return [i for i in items if any(q not in answers.get(i.id, {}) for q in questions)]

    def compared(self, who: str) -> dict[frozenset, str]:
        """{left id, right id} -> the latest choice of this person (sides as shown then)."""
        return {frozenset((r["left"], r["right"])): r["choice"] for r in self.records()
                if r.get("kind") == "compare" and r.get("who") == who}
