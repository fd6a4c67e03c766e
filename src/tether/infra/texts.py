"""Read the texts to judge: JSONL (`text`, or `prompt` + `completion`), plain text, or stdin; and prompts.

A prompt may be a conversation (a list of {role, content}); a reader sees it as `plain_text` shows it.

Every problem is a `TetherError` naming the file and line: invalid UTF-8 (with the byte
offset), malformed JSON, a missing or empty text, an empty file.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tether.errors import TetherError
from tether.infra.files import decode_utf8, read_bytes, read_utf8  # noqa: F401  (read here by most callers)


@dataclass
class TextRecord:
    """One text to judge, with the input line's other fields kept for the output."""

    text: str
    meta: dict = field(default_factory=dict)


def read_texts(source: str | Path) -> list[TextRecord]:
    """Texts from a .jsonl or .txt file, or from stdin when `source` is '-'."""
    if str(source) == "-":
        data, where = sys.stdin.buffer.read(), "stdin"
        is_jsonl = data.lstrip().startswith(b"{")
    else:
        path = Path(source)
        suffix = path.suffix.lower()
        if suffix not in (".jsonl", ".txt"):
            raise TetherError(f"{path}: unknown text format '{suffix}'; use .jsonl (field `text`) or .txt (one per line)")
        data, where, is_jsonl = read_bytes(path), str(path), suffix == ".jsonl"
    records = _parse_jsonl(data, where) if is_jsonl else _parse_lines(decode_utf8(data, where))
    if not records:
        raise TetherError(f"{where}: no texts found; write one text per line (.txt) or one JSON object per line (.jsonl)")
    return records


def text_lines(content: str) -> list[str]:
    """Lines of a text file: split at "\n" only (a trailing "\r" dropped), so a U+2028, \f or \x1c inside a
    line stays in its text (`str.splitlines` would break there)."""
    return [line.removesuffix("\r") for line in content.split("\n")]


def _parse_lines(content: str) -> list[TextRecord]:
    return [TextRecord(line, {"line": n}) for n, line in enumerate(text_lines(content), 1) if line.strip()]


def _jsonl_objects(data: bytes, where: str) -> list[tuple[int, dict]]:
    """(line number, object) for each non-blank line, read by `jsonl` (a cut last line is an error here:
    an input is written whole); malformed lines are named."""
    from tether.infra import jsonl

    return jsonl.parse_numbered(data, where, torn_ok=False)


def _parse_jsonl(data: bytes, where: str) -> list[TextRecord]:
    return [TextRecord(_text_of(obj, where, n), {"line": n, **obj}) for n, obj in _jsonl_objects(data, where)]


def _text_of(obj: dict, where: str, n: int) -> str:
    if "text" in obj:
        text = obj["text"]
    elif "prompt" in obj and "completion" in obj:
        prompt = _messages(obj["prompt"], f"{where}: line {n}") if isinstance(obj["prompt"], list) else obj["prompt"]
        if not isinstance(prompt, (str, list)) or not isinstance(obj["completion"], str):
            raise TetherError(f"{where}: line {n}: `prompt` (a string or a list of messages) and `completion` (a string) "
                              f"must be given")
        text = plain_text(prompt) + obj["completion"]  # judged as the reader sees it: prompt, then completion
    else:
        raise TetherError(f"{where}: line {n}: no `text` field (or `prompt` + `completion`) in this object")
    if not isinstance(text, str):
        raise TetherError(f"{where}: line {n}: `text` must be a string, got {type(text).__name__}")
    if not text.strip():
        raise TetherError(f"{where}: line {n}: the text is empty; remove the line or write a text")
    return text


Prompt = str | list[dict]  # plain text, or a conversation: [{"role": "user", "content": "..."}, ...]
ROLES = ("system", "user", "assistant")


def read_prompts(source: str | Path) -> list[Prompt]:
    """Prompts from .txt (one per non-empty line) or .jsonl (field `prompt` or `text`; or `messages`, a conversation).

    A conversation (`messages`, or a `prompt` that is a list of {role, content}) reaches TRL as a
    conversational prompt, so the policy's chat template is applied; one kind per file.
    """
    path = Path(source)
    if path.suffix.lower() == ".jsonl":
        prompts: list[Prompt] = []
        for n, obj in _jsonl_objects(read_bytes(path), str(path)):
            prompt = obj.get("messages", obj.get("prompt", obj.get("text")))
            if isinstance(prompt, list):
                prompts.append(_messages(prompt, f"{path}: line {n}"))
            elif not isinstance(prompt, str) or not prompt.strip():
                raise TetherError(f"{path}: line {n}: expected a non-empty string `prompt` or a `messages` list")
            else:
                prompts.append(prompt)
            if isinstance(prompts[-1], list) != isinstance(prompts[0], list):
                raise TetherError(f"{path}: line {n}: plain prompts and conversations (`messages`) are mixed; "
                                  f"use one kind per file")
    else:
        prompts = [r.text for r in read_texts(path)]
    if not prompts:
        raise TetherError(f"{path}: no prompts found")
    return prompts


def _messages(value: list, where: str) -> list[dict]:
    """A conversation checked: {role, content} objects, string contents, not ending with the assistant."""
    if not value:
        raise TetherError(f"{where}: `messages` is empty; write at least one {{\"role\": \"user\", \"content\": ...}}")
    for k, m in enumerate(value):
        if not isinstance(m, dict) or m.get("role") not in ROLES or not isinstance(m.get("content"), str):
            raise TetherError(f"{where}: message {k + 1} must be {{\"role\": system|user|assistant, "
                              f"\"content\": a string}}, got {json.dumps(m)[:80]}")
        if set(m) - {"role", "content"}:
            raise TetherError(f"{where}: message {k + 1} has fields {sorted(set(m) - {'role', 'content'})}; "
                              f"only role and content are read")
    if value[-1]["role"] == "assistant":
        raise TetherError(f"{where}: the conversation ends with an assistant message; end it with the user's turn, "
                          f"which the policy answers")
    return [{"role": m["role"], "content": m["content"]} for m in value]


def output_rows(records: list[TextRecord], scored: list[dict]) -> list[dict]:
    """Each input line's own fields (`id`, `label`, ...; not its text) followed by its scores."""
    return [{**{k: v for k, v in r.meta.items() if k != "text"}, **row} for r, row in zip(records, scored)]


def plain_text(item) -> str:
    """What a reader sees of a prompt or completion: TRL passes strings, or for chat datasets lists of
    {role, content} messages. A conversation is shown with its roles, ending where the reply goes; a
    completion (assistant messages only) is its content.

    >>> plain_text([{"role": "user", "content": "Hi."}])
    'User: Hi.\\n\\nAssistant: '
    >>> plain_text([{"role": "assistant", "content": "Hello!"}])
    'Hello!'
    """
    if isinstance(item, str):
        return item
    if all(message["role"] == "assistant" for message in item):
        return "".join(message["content"] for message in item)
    return "".join(f"{m['role'].capitalize()}: {m['content']}\n\n" for m in item) + "Assistant: "


def is_conversation(prompt) -> bool:
    return isinstance(prompt, list)


def judged_texts(prompts: Sequence, completions: Sequence, include_prompt: bool = True) -> list[str]:
    """What the judge reads of a completion; one function, so `tether audit --run` judges as the run's reward did (`rewards.constitution`).

    >>> judged_texts([[{"role": "user", "content": "Hi."}]], [[{"role": "assistant", "content": "Hello!"}]])
    ['User: Hi.\\n\\nAssistant: Hello!']
    """
    completions = [plain_text(c) for c in completions]
    return [plain_text(p) + c for p, c in zip(prompts, completions)] if include_prompt else completions


def load_base(path: str | Path) -> dict[str, list[str]]:
    """The base model's completions per prompt (`base_samples.jsonl`: {prompt, completions} a line)."""
    from tether.infra import jsonl

    return {row["prompt"]: row["completions"] for row in jsonl.read(path, missing_ok=False)}


def read_text_arg(value: str, what: str) -> str:
    """A literal text, or `@PATH` for a UTF-8 file's content (`@@...` is a literal starting with @).

    >>> read_text_arg("  It rained.  ", "PASSAGE")
    'It rained.'
    >>> read_text_arg("@@home", "PASSAGE")
    '@home'
    """
    if value.startswith("@@"):
        text = value[1:]
    elif value.startswith("@"):
        text = read_utf8(value[1:])
    else:
        text = value
    text = text.strip()
    if not text:
        raise TetherError(f"{what}{f' ({value})' if value.startswith('@') else ''}: empty; give some text to steer with")
    return text


def prompt_hash(prompt) -> str:
    """The first 16 hex digits of the SHA-256 of a prompt's text, trimmed: how a gold records the
    prompts it was fitted on, so a later evaluation can refuse them (`experiment.leaks`)."""
    import hashlib

    return hashlib.sha256(plain_text(prompt).strip().encode("utf-8")).hexdigest()[:16]
