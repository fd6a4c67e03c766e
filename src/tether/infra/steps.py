"""A completion split into steps, with character offsets: what process supervision judges one at a time.

    split_steps(" She smiled. Then it", "sentences")
    -> [Step("She smiled. ", 1, 13), Step("Then it", 13, 20)]

`how` says where a step ends:
- `sentences` (default): pysbd, a rule-based sentence boundary detector ("Dr. Smith", "3.5" and "U.S."
  do not end a sentence); a completion cut mid-sentence keeps its last, partial sentence as a step.
- `lines`: each non-blank line.
- `re:PATTERN`: each match of the regular expression is a step (e.g. `re:[^,;.]+[,;.]?` for clauses).
- `python:MODULE:FUNCTION`: FUNCTION(text) -> [(start, end), ...], character offsets, in order.

Offsets index the completion (`completion[start:end] == text`); steps are in order and never overlap.
With `max_steps`, the steps past the cap are merged into the last one kept, so every character that
was a step still belongs to one (a token's step is where its characters are).
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

from tether.errors import TetherError

KINDS = "sentences, lines, re:PATTERN or python:MODULE:FUNCTION"


@dataclass(frozen=True)
class Step:
    text: str
    start: int
    end: int

    def as_dict(self) -> dict:
        return {"text": self.text, "start": self.start, "end": self.end}


def check_how(how: str) -> None:
    """Refuse a splitter that cannot work, before any model loads."""
    if how in ("sentences", "lines"):
        return
    if how.startswith("re:"):
        try:
            pattern = re.compile(how[3:])
        except re.error as e:
            raise TetherError(f"steps {how!r}: not a regular expression ({e})") from None
        if pattern.match(""):
            raise TetherError(f"steps {how!r}: the pattern matches an empty string, so it cannot mark steps")
        return
    if how.startswith("python:"):
        _function(how)
        return
    raise TetherError(f"steps {how!r}: write {KINDS}")


def split_steps(text: str, how: str = "sentences", max_steps: int | None = None) -> list[Step]:
    """The steps of `text` (see the module docstring); [] for a blank text."""
    if max_steps is not None and max_steps < 1:
        raise TetherError(f"max_steps {max_steps}: must be at least 1")
    spans = _spans(text, how)
    spans = [(s, e) for s, e in spans if text[s:e].strip()]
    for (_, e0), (s1, _) in zip(spans, spans[1:]):
        if s1 < e0:
            raise TetherError(f"steps {how!r}: steps overlap at character {s1}; a splitter's spans must be in order")
    if max_steps is not None and len(spans) > max_steps:
        spans = spans[: max_steps - 1] + [(spans[max_steps - 1][0], spans[-1][1])]
    return [Step(text[s:e], s, e) for s, e in spans]


def _spans(text: str, how: str) -> list[tuple[int, int]]:
    if how == "sentences":
        return [(s.start, s.end) for s in _segmenter().segment(text)] if text.strip() else []
    if how == "lines":
        out, start = [], 0
        for line in text.split("\n"):
            out.append((start, start + len(line)))
            start += len(line) + 1
        return out
    if how.startswith("re:"):
        check_how(how)
        return [m.span() for m in re.finditer(how[3:], text)]
    if how.startswith("python:"):
        spans = _function(how)(text)
        try:
            spans = [(int(s), int(e)) for s, e in spans]
        except (TypeError, ValueError):
            raise TetherError(f"steps {how!r}: must return a list of (start, end) character offsets") from None
        if any(not 0 <= s <= e <= len(text) for s, e in spans):
            raise TetherError(f"steps {how!r}: an offset is outside the text (0..{len(text)})")
        return spans
    raise TetherError(f"steps {how!r}: write {KINDS}")


@functools.cache
def _segmenter():
    import pysbd

    return pysbd.Segmenter(language="en", clean=False, char_span=True)


def _function(how: str):
    from tether.infra.callables import python_callable

    return python_callable(how, "steps")
