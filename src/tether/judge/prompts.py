"""How a question about a text is put to the judge, as token ids.

One *probe* is one question in one polarity (the principle's question, or its negation for
debiased scoring). Its prompt is split where the judged text goes:

    prefix = [BOS] preamble, few-shot examples, the template up to {text}   (shared by all texts)
    text   = the judged text, tokenized as untrusted                         (per text)
    tail   = the template after {text}, ending where the answer goes          (shared)

The prefix is the same for every text, so the evaluator runs it once and reuses its KV
cache. Whitespace just before {text} travels with the text ("Text:" + " Once upon"), so the
text's first word is tokenized as it would be in running prose.
"""

from __future__ import annotations

from dataclasses import dataclass

from tether.judge.constitution import Constitution, Principle
from tether.judge.tokens import SafeTokenizer

FLIP = {"yes": "no", "no": "yes"}


@dataclass(frozen=True)
class Probe:
    """One question (or its negation) about any text, ready for the model."""

    principle: int  # index into constitution.principles
    negated: bool
    question: str
    prefix_ids: tuple[int, ...]
    tail_ids: tuple[int, ...]


def text_lead(constitution: Constitution) -> str:
    """The whitespace between the template's head and {text}; it is tokenized with the text."""
    head = constitution.template.split("{text}")[0]
    return head[len(head.rstrip()) :]


def build_probes(constitution: Constitution, safe: SafeTokenizer, with_negations: bool = False) -> list[Probe]:
    """A probe per principle, plus a negated one where debiasing is on (or `with_negations`)."""
    probes = []
    for i, principle in enumerate(constitution.principles):
        probes.append(_probe(constitution, safe, i, principle, negated=False))
        if with_negations or constitution.debiased(principle):
            probes.append(_probe(constitution, safe, i, principle, negated=True))
    return probes


def _probe(constitution: Constitution, safe: SafeTokenizer, index: int, principle: Principle, negated: bool) -> Probe:
    question = principle.negated_question() if negated else principle.question
    head, tail = constitution.template.replace("{question}", question).split("{text}")
    head, lead = head.rstrip(), text_lead(constitution)
    ids = list(safe.bos())
    if constitution.preamble.strip():
        ids += safe.encode_trusted(constitution.preamble.rstrip() + "\n\n")
    for example in principle.examples:
        answer = FLIP[example.answer] if negated else example.answer
        ids += safe.encode_trusted(head) + safe.encode_untrusted(lead + example.text)
        ids += safe.encode_trusted(f"{tail} {answer}\n\n")
    ids += safe.encode_trusted(head)
    return Probe(index, negated, question, tuple(ids), tuple(safe.encode_trusted(tail)))
