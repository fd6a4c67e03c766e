"""How a question about a text is put to the judge, as token ids.

One *probe* is one question in one polarity (the principle's question, or its negation for
debiased scoring). Its prompt is split where the judged text goes:

    prefix = [BOS] preamble, few-shot examples, the template up to {text}   (shared by all texts)
    text   = the judged text, tokenized as untrusted                         (per text)
    tail   = the template after {text}, ending where the answer goes          (shared)

The prefix is the same for every text, so the evaluator runs it once and reuses its KV
cache. Whitespace just before {text} travels with the text ("Text:" + " Once upon"), so the
text's first word is tokenized as it would be in running prose.

With `format: chat` the same three parts come from the judge's chat template instead
(`tether.judge.chat`): the template, with {question} filled in, is the last user turn.
"""

from __future__ import annotations

from dataclasses import dataclass

from tether.infra.tokens import SafeTokenizer
from tether.judge.chat import chat_prompt, judge_template
from tether.judge.constitution import Constitution, Principle

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
    template = judge_template(safe.tokenizer, constitution.chat_template) if constitution.format == "chat" else None
    probes = []
    for i, principle in enumerate(constitution.principles):
        probes.append(_probe(constitution, safe, i, principle, negated=False, template=template))
        if with_negations or constitution.debiased(principle):
            probes.append(_probe(constitution, safe, i, principle, negated=True, template=template))
    return probes


def _probe(constitution: Constitution, safe: SafeTokenizer, index: int, principle: Principle, negated: bool,
           template: str | None = None) -> Probe:
    question = principle.negated_question() if negated else principle.question
    if template is not None:  # chat: the answers as an assistant would write them
        examples = [(e.text, (FLIP[e.answer] if negated else e.answer).capitalize()) for e in principle.examples]
        prefix, tail = chat_prompt(safe, template, constitution.preamble, constitution.template.replace("{question}", question),
                                   examples, text_lead(constitution))
        return Probe(index, negated, question, tuple(prefix), tuple(tail))
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
