"""The one config loader: constitution-free configs of tune, sample, sft, blend and experiment.

    settings = load_config(TuneConfig, "examples/tune_cheerful.yaml", ["steps=5", "detectors.kl=0.3"])

In one order, always: read the YAML file (or start empty) -> apply each `--set field=value`
(the value read as YAML; `a.b=1` sets a nested field) -> resolve the path fields -> validate
with the pydantic model. Path fields (a field typed `Path`) are made absolute: a relative
path written in the file is read against the file's folder unless it exists from the
current directory; one given with `--set` (or a stored config) against the current
directory. A stored config is then self-contained: it means the same from any directory.

Every error is one line naming the file, the YAML line and column when the value came from
the file, the field, the value, and what to write instead; the constitution loader's
messages are the model.
"""

from __future__ import annotations

import os
import types
import typing
from pathlib import Path
from typing import TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from tether.errors import TetherError
from tether.infra.texts import read_utf8

M = TypeVar("M", bound=BaseModel)


def load_config(model: type[M], path: str | Path | None = None, overrides: typing.Sequence[str] = (), *,
         data: dict | None = None, where: str | None = None) -> M:
    """`model` from a YAML file and/or a stored mapping (`data`), with `--set` overrides applied."""
    marks: dict[tuple, tuple[int, int]] = {}
    base = Path.cwd()
    if path is not None:
        path = Path(path)
        where = where or str(path)
        text = read_utf8(path)
        data = parse_yaml(text, where)
        marks = value_marks(text)
        base = path.parent
    else:
        where = where or "--set"
        data = dict(data or {})
    from_file = {key for key in data}
    apply_overrides(data, overrides)
    resolve_paths(model, data, base, from_file={k for k in from_file if not _overridden(k, overrides)})
    return validate(model, data, where, marks)


def parse_yaml(text: str, where: str, expected: str = "a mapping of config fields (field: value, one a line)") -> dict:
    """A YAML mapping, or a one-line error with line and column."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise TetherError(f"{where}: {yaml_problem(e)}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise TetherError(f"{where}: expected {expected}, got {type(data).__name__}")
    return data


def yaml_problem(e: yaml.YAMLError) -> str:
    mark = getattr(e, "problem_mark", None)
    problem = getattr(e, "problem", None) or str(e).splitlines()[0]
    place = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    return f"{place}malformed YAML ({problem})"


def value_marks(text: str) -> dict[tuple, tuple[int, int]]:
    """(key, nested key, ...) -> (line, column) of each value in the YAML text, 1-based."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return {}
    marks: dict[tuple, tuple[int, int]] = {}

    def walk(node, prefix: tuple):
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                loc = (*prefix, key.value)
                marks[loc] = (value.start_mark.line + 1, value.start_mark.column + 1)
                walk(value, loc)
        elif isinstance(node, yaml.SequenceNode):
            for i, value in enumerate(node.value):
                marks[(*prefix, i)] = (value.start_mark.line + 1, value.start_mark.column + 1)
                walk(value, (*prefix, i))

    if root is not None:
        walk(root, ())
    return marks


def apply_overrides(data: dict, overrides: typing.Sequence[str]) -> None:
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise TetherError(f"--set {item!r}: write field=value, e.g. --set seed=1")
        *parents, leaf = key.strip().split(".")
        node = data
        for parent in parents:
            node = node.setdefault(parent, {})
            if not isinstance(node, dict):
                raise TetherError(f"--set {item!r}: {parent} is not a group of fields")
        try:
            node[leaf] = yaml.safe_load(value)
        except yaml.YAMLError as e:
            problem = getattr(e, "problem", None) or str(e).splitlines()[0]
            raise TetherError(f"--set {item!r}: the value is not valid YAML ({problem}); quote it, "
                              f"or write a list as [a, b]") from None


def _overridden(key: str, overrides: typing.Sequence[str]) -> bool:
    return any(item.partition("=")[0].strip() == key for item in overrides)


def path_fields(model: type[BaseModel]) -> list[str]:
    """The top-level fields typed Path (or Path | None)."""
    out = []
    for name, field in model.model_fields.items():
        annotation = field.annotation
        args = typing.get_args(annotation) if isinstance(annotation, types.UnionType) or \
            typing.get_origin(annotation) is typing.Union else (annotation,)
        if Path in args:
            out.append(name)
    return out


def resolve_paths(model: type[BaseModel], data: dict, base: Path, from_file: set[str]) -> None:
    for name in path_fields(model):
        value = data.get(name)
        if not isinstance(value, str) or not value:
            continue
        path = Path(value).expanduser()
        if not path.is_absolute():
            if name in from_file and not path.exists() and name != "output_dir":
                path = base / path
            path = Path.cwd() / path if not path.is_absolute() else path
        data[name] = os.path.normpath(path)


def validate(model: type[M], data: dict, where: str, marks: dict | None = None) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise TetherError(describe(model, e, where, marks or {})) from None


def describe(model: type[BaseModel], e: ValidationError, where: str, marks: dict) -> str:
    """One line for the first problem: where, field, value, what is wrong, what to write."""
    first = e.errors()[0]
    loc = tuple(first["loc"])
    field_path = ".".join(map(str, loc))
    mark = marks.get(loc) or (marks.get(loc[:1]) if loc else None)
    place = f"{where}: line {mark[0]}, column {mark[1]}" if mark else where
    if first["type"] == "value_error" and not loc:  # a rule across fields
        return f"{place}: {first['msg'].removeprefix('Value error, ')}"
    owner = _owner(model, loc)
    if first["type"] == "extra_forbidden":
        valid = ", ".join(owner.model_fields) if owner else ""
        return f"{place}: {field_path}: unknown field; valid fields: {valid}"
    field = owner.model_fields.get(str(loc[-1])) if owner and loc else None
    value = first.get("input")
    shown = f" {_short(value)}" if first["type"] != "missing" else ""
    hint = f"; expected {field.description}" if field is not None and field.description else ""
    msg = first["msg"].removeprefix("Value error, ")
    return f"{place}: {field_path}:{shown}: {msg}{hint}" if shown else f"{place}: {field_path}: {msg}{hint}"


def _owner(model: type[BaseModel], loc: tuple) -> type[BaseModel] | None:
    """The model class that holds the last field of `loc` (nested configs included)."""
    owner = model
    for part in loc[:-1]:
        if isinstance(part, int):
            continue  # an index into a list of configs: the owner is the list's item model
        field = owner.model_fields.get(str(part))
        if field is None:
            return owner
        annotation = field.annotation
        if typing.get_origin(annotation) is list and typing.get_args(annotation):
            annotation = typing.get_args(annotation)[0]
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            owner = annotation
        else:
            return owner
    return owner


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
