"""Reading texts: JSONL, TXT, stdin, and every malformed input named by file and line."""

import io
import sys

import pytest

from tether.errors import TetherError
from tether.infra.texts import read_texts


def test_jsonl_text_and_prompt_completion(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_text('{"text": "a", "id": 7}\n\n{"prompt": "Once", "completion": " upon"}\n')
    records = read_texts(path)
    assert [r.text for r in records] == ["a", "Once upon"]
    assert records[0].meta["id"] == 7 and records[1].meta["line"] == 3


def test_txt_one_per_line_skipping_blank(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text("first\n\nsecond\n")
    assert [r.text for r in read_texts(path)] == ["first", "second"]


def test_stdin_detects_jsonl(monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b'{"text": "x"}\n')))
    assert [r.text for r in read_texts("-")] == ["x"]


@pytest.mark.parametrize("name, content, expected", [
    ("t.jsonl", b'{"text": "ok"}\n{"text": "oops"\n', r"t.jsonl: line 2: malformed JSON"),
    ("t.jsonl", b'{"text": "ok"}\n["a"]\n', r"t.jsonl: line 2: expected a JSON object, got list"),
    ("t.jsonl", b'{"body": "x"}\n', r"line 1: no `text` field"),
    ("t.jsonl", b'{"text": "  "}\n', r"line 1: the text is empty"),
    ("t.jsonl", b'{"text": 3}\n', r"line 1: `text` must be a string"),
    ("t.jsonl", b"", r"t.jsonl: no texts found"),
    ("t.txt", b"\n \n", r"t.txt: no texts found"),
    ("t.txt", b"ok\n\xff\xfe bad\n", r"t.txt: line 2: not UTF-8 text \(byte offset 3\)"),
    ("t.csv", b"text\nx\n", r"t.csv: unknown text format '.csv'"),
])
def test_bad_input_names_file_and_line(tmp_path, name, content, expected):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(TetherError, match=expected):
        read_texts(path)


def test_missing_file(tmp_path):
    with pytest.raises(TetherError, match="nope.jsonl: no such file"):
        read_texts(tmp_path / "nope.jsonl")


def test_prompts_from_txt_and_jsonl(tmp_path):
    from tether.infra.texts import read_prompts

    txt = tmp_path / "p.txt"
    txt.write_text("Once upon a time\n\nThe dog\n")
    assert read_prompts(txt) == ["Once upon a time", "The dog"]
    jsonl = tmp_path / "p.jsonl"
    jsonl.write_text('{"prompt": "A"}\n{"text": "B"}\n')
    assert read_prompts(jsonl) == ["A", "B"]
    jsonl.write_text('{"prompt": ""}\n')
    with pytest.raises(TetherError, match=r"p.jsonl: line 1: expected a non-empty string `prompt`"):
        read_prompts(jsonl)
