"""The constitution: what the judge is asked about a text.

A YAML file of principles, each a yes/no question with a weight, the answer a good text
earns (`expect`), an optional negated question for debiased scoring, and optional
few-shot examples. Validated with pydantic; every error names the file, the field and
what to write instead. See examples/*.yaml and the README's config reference.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from tether.errors import TetherError
from tether.infra.texts import read_utf8

DEFAULT_TEMPLATE = "Text: {text}\nQuestion: {question}\nAnswer:"
Answer = Literal["yes", "no"]


def _yes_no(value):
    """YAML 1.1 reads a bare `yes`/`no` as a boolean; accept both spellings."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    return value.strip().lower() if isinstance(value, str) else value


class Example(BaseModel):
    """A few-shot example shown to the judge before the text it scores."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    text: str = Field(min_length=1, description="an example text")
    answer: Answer = Field(description="the right answer to the principle's question: yes or no")

    _answer = field_validator("answer", mode="before")(_yes_no)


class Principle(BaseModel):
    """One yes/no question about a text."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    name: str = Field(pattern=r"^[A-Za-z0-9_\-]+$", description="a short id used as a column name, e.g. cheerful")
    question: str = Field(min_length=1, description="the yes/no question, e.g. 'Is the text cheerful?'")
    negation: str | None = Field(
        None,
        description="the question negated, for debiased scoring; derived from `question` when left out",
    )
    weight: float = Field(1.0, gt=0, description="the principle's weight in the total (a number above 0)")
    expect: Answer = Field("yes", description="the answer a good text earns: yes, or no for 'Is the text rude?'")
    debias: bool | None = Field(None, description="score against the negation too; overrides the constitution's `debias`")
    examples: list[Example] = Field(default_factory=list, description="few-shot examples shown before each text")

    _expect = field_validator("expect", mode="before")(_yes_no)

    @property
    def sign(self) -> float:
        return 1.0 if self.expect == "yes" else -1.0

    def negated_question(self) -> str:
        negation = self.negation or derive_negation(self.question)
        if negation is None:
            raise TetherError(
                f"principle '{self.name}': cannot derive a negation of {self.question!r} for debiased scoring; "
                f"write `negation:` for it (e.g. 'Is the text not cheerful?')"
            )
        return negation


class Constitution(BaseModel):
    """A set of principles and how to ask the judge about them."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    name: str = Field("constitution", description="a name for reports; defaults to the file name without .yaml")
    description: str = Field("", description="what this constitution is for, in a sentence")
    preamble: str = Field("", description="text the judge reads first, before the few-shot examples")
    template: str = Field(
        DEFAULT_TEMPLATE,
        description="how a text and a question are shown; must contain {text} and {question}; the answer follows it",
    )
    format: Literal["plain", "chat"] = Field(
        "plain",
        description="plain: one text prompt; chat: the preamble as the system turn, examples as earlier user/assistant "
        "turns, the template (with the text and question) as the last user turn, read through the judge's chat template",
    )
    chat_template: str | None = Field(
        None,
        description="for format: chat with a judge whose tokenizer has no chat template (a base model): a Jinja chat "
        "template, or the path of a .jinja file (relative to this file, else to the current folder); the tokenizer's own wins",
    )
    combine: Literal["mean", "softmin"] = Field(
        "mean",
        description="how principles make the total: weighted mean of scores, or weighted soft-minimum "
        "(the worst-satisfied principle dominates)",
    )
    softmin_temperature: float = Field(
        1.0, gt=0, description="soft-minimum temperature in log-odds units: small is a hard min, large a mean"
    )
    debias: bool = Field(False, description="score every principle as (question - negation) / 2, cancelling a yes-bias")
    principles: list[Principle] = Field(min_length=1, description="the yes/no questions")

    @field_validator("template")
    @classmethod
    def _template_has_slots(cls, template: str) -> str:
        for slot in ("{text}", "{question}"):
            if template.count(slot) != 1:
                raise ValueError(f"must contain {slot} exactly once, e.g. {DEFAULT_TEMPLATE!r}")
        return template

    @model_validator(mode="after")
    def _unique_names(self):
        names = [p.name for p in self.principles]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"principle names must be unique; rename {', '.join(duplicates)}")
        return self

    def debiased(self, principle: Principle) -> bool:
        return self.debias if principle.debias is None else principle.debias

    def fingerprint(self) -> str:
        """A sha256 of what the judge reads (principles, template, combine rule, debias...), to tell which
        constitution produced a file. The name and description are labels, left out: the name defaults
        to the file's stem, and a corpus keeps its copy as constitution.yaml."""
        data = self.model_dump(exclude={"name", "description"})
        if self.format == "plain":  # the fields added for chat judges; left out so older fingerprints still match
            del data["format"], data["chat_template"]
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


_AUXILIARY = r"(?:is|are|was|were|does|do|did|has|have|had|can|could|will|would|should|may|might|must)"
_SUBJECT = r"(?:it|(?:the|this|that|a|an|its|their|his|her)\s+\S+)"
_NEGATABLE = re.compile(rf"^({_AUXILIARY})\s+({_SUBJECT})\s+(?!not\b)(.+)$", re.IGNORECASE)


def derive_negation(question: str) -> str | None:
    """'Is the text cheerful?' -> 'Is the text not cheerful?'; None when the form is unknown."""
    match = _NEGATABLE.match(question.strip())
    if not match:
        return None
    auxiliary, subject, rest = match.groups()
    return f"{auxiliary} {subject} not {rest}"


def load_constitution(path: str | Path) -> Constitution:
    """Read and validate a constitution YAML file; errors name the file and the field."""
    from tether.infra.config import parse_yaml, value_marks

    path = Path(path)
    text = read_utf8(path)
    # the one YAML reader: errors carry line and column
    data = parse_yaml(text, str(path), expected="a mapping with a `principles:` list at the top level")
    data.setdefault("name", path.stem)
    try:
        constitution = Constitution.model_validate(data)
    except ValidationError as e:
        loc = tuple(e.errors()[0]["loc"])
        marks = value_marks(text)
        mark = next((marks[loc[:i]] for i in range(len(loc), 0, -1) if loc[:i] in marks), None)
        place = f"line {mark[0]}, column {mark[1]}: " if mark else ""
        raise TetherError(f"{path}: {place}{_explain(e, data)}") from None
    return read_chat_template(constitution, path.parent, f"{path}: ")


def read_chat_template(constitution: Constitution, folder: Path | None = None, where: str = "") -> Constitution:
    """`chat_template` given as a file path replaced by the file's text, so the fingerprint covers the template."""
    value = constitution.chat_template
    if value is None or "{{" in value or "{%" in value:  # already a Jinja template
        return constitution
    places = list(dict.fromkeys(([folder / value] if folder is not None else []) + [Path(value)]))
    found = next((p for p in places if p.is_file()), None)
    if found is None:
        raise TetherError(f"{where}chat_template: {value!r} is neither a Jinja template nor a file "
                          f"(looked in {', '.join(str(p) for p in places)})")
    return constitution.model_copy(update={"chat_template": read_utf8(found)})


def _explain(error: ValidationError, data: dict) -> str:
    """The first validation error as 'field: problem (got X); what to write', plus a count of others."""
    first = error.errors()[0]
    loc, kind = first["loc"], first["type"]
    where = _field_path(loc, data)
    more = f" [and {error.error_count() - 1} more problem(s)]" if error.error_count() > 1 else ""
    if kind == "missing":
        return f"{where}: missing; add `{loc[-1]}:` ({_field_help(loc)}){more}"
    if kind == "extra_forbidden":
        valid = ", ".join(_model_at(loc).model_fields)
        return f"{where}: unknown field; remove it or fix its spelling (valid fields: {valid}){more}"
    message = first["msg"].removeprefix("Value error, ")
    if not loc:  # a rule across fields, such as unique principle names
        return f"{message}{more}"
    return f"{where}: {message} (got {first.get('input')!r}); expected {_field_help(loc)}{more}"


def _field_path(loc: tuple, data: dict) -> str:
    parts, node = [], data
    for key in loc:
        if isinstance(key, int):
            name = node[key].get("name") if isinstance(node, list) and isinstance(node[key], dict) else None
            parts[-1] += f"[{key}]" + (f" ({name})" if name else "")
        else:
            parts.append(str(key))
        try:
            node = node[key]
        except (KeyError, IndexError, TypeError):
            node = None
    return ".".join(parts) or "(top level)"


def _model_at(loc: tuple) -> type[BaseModel]:
    model = Constitution
    for key in loc[:-1]:
        if key == "principles":
            model = Principle
        elif key == "examples":
            model = Example
    return model


def _field_help(loc: tuple) -> str:
    field = _model_at(loc).model_fields.get(str(loc[-1]))
    return field.description if field and field.description else "a valid value"

