"""The label spec: the questions a person answers about each sample, in a small YAML file.

    questions:
      - name: on_task
        question: Does the completion continue the prompt's story?
        help: same people, place and situation

`name` is the key in the labels file (an identifier, so analysis code can use it as a column);
`question` is the wording on the page. Loaded by the one config loader, so every error is one
line with the file, the YAML line and the field.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator

from tether.infra.config import load_config

DEFAULT_COMPARE = "Which completion is better?"


class Question(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
                      description="an identifier (letters, digits, _), e.g. on_task: the key in the labels file")
    question: str = Field(min_length=1, description="the wording shown to the person, answered yes / no / skip")
    help: str = Field("", description="optional: a line shown under the question (what counts, an example)")


class LabelSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    questions: list[Question] = Field(min_length=1, description="a list of questions, each with name and question")
    compare: str = Field(DEFAULT_COMPARE, min_length=1,
                         description="the wording shown in compare mode, where the person picks left, right or tie")

    @field_validator("questions")
    @classmethod
    def _unique(cls, questions: list[Question]) -> list[Question]:
        names = [q.name for q in questions]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"the name {twice[0]!r} is used twice; give each question its own name")
        return questions

    def names(self) -> list[str]:
        return [q.name for q in self.questions]


def load_spec(path: str | Path) -> LabelSpec:
    """The spec in `path`, or a one-line TetherError naming the file, line and field."""
    return load_config(LabelSpec, path)
