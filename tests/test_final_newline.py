"""A JSONL file without a final newline keeps its last record; a torn tail is still skipped and cut.

The rule (`tether.infra.jsonl`): an unterminated last line that parses as JSON is a record (a
person's file often lacks the final newline; a crash's torn append parses only when exactly
the newline was lost, and then the record is whole). One that does not parse is a torn tail:
readers skip it, the next append cuts it. An append after a complete unterminated record
adds the missing newline instead of deleting the record.
"""

import json

import pytest
import yaml

from tether.errors import TetherError
from tether.infra import jsonl


def unterminated(rows: list[dict]) -> bytes:
    return "\n".join(json.dumps(r) for r in rows).encode()  # as a person's editor may save it


def label(item: str, answer: str, completion: str, who: str = "ana") -> dict:
    return {"kind": "label", "item": item, "question": "good", "answer": answer, "who": who,
            "source": {"prompt": "p", "completion": completion}}


def test_a_file_without_a_final_newline_keeps_its_last_record(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_bytes(b'{"a": 1}\n\n{"a": 2}')
    assert jsonl.read(path) == [{"a": 1}, {"a": 2}]
    assert jsonl.read_numbered(path) == [(1, {"a": 1}), (3, {"a": 2})]
    path.write_bytes(b'{"a": 1}')  # a single line, no newline at all
    assert jsonl.read(path) == [{"a": 1}]
    assert jsonl.parse(b'{"a": 1}\r', "x") == [{"a": 1}]  # a CRLF file cut after the \r: whole too


def test_a_torn_tail_is_still_skipped(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_bytes(b'{"a": 1}\n{"a": 1')
    assert jsonl.read(path) == [{"a": 1}]
    with pytest.raises(TetherError, match=r"rows.jsonl: line 2: malformed JSON"):
        jsonl.read(path, torn_ok=False)  # an input a person wrote: a cut line is an error, not skipped
    path.write_bytes(b'{"a": 1}\n{"a": "caf' + "\u00e9".encode()[:1])  # cut inside a UTF-8 character
    assert jsonl.read(path) == [{"a": 1}]


def test_an_unterminated_last_line_that_is_not_an_object_is_an_error(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_bytes(b'{"a": 1}\n[1, 2]')  # parses, so not a crash's trace: damage, named
    with pytest.raises(TetherError, match=r"rows.jsonl: line 2: expected a JSON object, got list"):
        jsonl.read(path)


def test_append_after_a_complete_unterminated_record_keeps_both(tmp_path):
    path = tmp_path / "labels.jsonl"
    path.write_bytes(b'{"a": 1}\n{"a": 2}')
    jsonl.append(path, [{"a": 3}])
    assert path.read_bytes() == b'{"a": 1}\n{"a": 2}\n{"a": 3}\n'
    assert jsonl.read(path) == [{"a": 1}, {"a": 2}, {"a": 3}]


def test_append_after_a_torn_tail_cuts_it(tmp_path):
    path = tmp_path / "labels.jsonl"
    path.write_bytes(b'{"a": 1}\n{"a": 1')
    jsonl.append(path, [{"a": 3}])
    assert path.read_bytes() == b'{"a": 1}\n{"a": 3}\n'


def test_cut_torn_tail_ends_a_complete_line_and_cuts_a_torn_one(tmp_path):
    path = tmp_path / "log.jsonl"
    path.write_bytes(b'{"a": 1}')
    assert jsonl.cut_torn_tail(path) == 0 and path.read_bytes() == b'{"a": 1}\n'
    path.write_bytes(b'{"a": 1}\n{"a"')
    assert jsonl.cut_torn_tail(path) == 4 and path.read_bytes() == b'{"a": 1}\n'
    assert jsonl.cut_torn_tail(path) == 0 and path.read_bytes() == b'{"a": 1}\n'


def test_a_labels_file_a_person_wrote_keeps_its_last_label(tmp_path):
    from tether.labels.agreement import read_labels
    from tether.labels.items import Item
    from tether.labels.store import LabelsFile

    path = tmp_path / "labels.jsonl"
    path.write_bytes(unterminated([label("a", "yes", "happy"), label("b", "no", "sad")]))
    assert read_labels(path).answers == {"good": {"a": True, "b": False}}
    labels = LabelsFile(path)
    assert [r["item"] for r in labels.records()] == ["a", "b"]
    labels.add_label(Item("c", "p", "fine", {}), "good", "yes", "ana")  # the page appends after the person's last line
    assert [r["item"] for r in labels.records()] == ["a", "b", "c"]
    assert read_labels(path).answers == {"good": {"a": True, "b": False, "c": True}}


def test_texts_and_prompts_without_a_final_newline(tmp_path):
    from tether.infra.texts import read_prompts, read_texts

    path = tmp_path / "t.jsonl"
    path.write_bytes(unterminated([{"text": "one"}, {"text": "two"}]))
    assert [r.text for r in read_texts(path)] == ["one", "two"]
    assert read_prompts(path) == ["one", "two"]
    path.write_bytes(b'{"text": "one"}\n{"text": "tw')
    with pytest.raises(TetherError, match=r"t.jsonl: line 2: malformed JSON"):  # an input is never torn-skipped
        read_texts(path)


def test_the_report_checks_an_unterminated_last_log_line(tmp_path):
    from tether.watch.report import build_report

    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text(yaml.safe_dump({"policy_model": "tiny", "algorithm": "grpo"}))
    (run / "metrics.jsonl").write_bytes(b'{"step": 1, "reward/train": 0.1}\n\n{"step": "two", "reward/train": 0.2}')
    with pytest.raises(TetherError, match=r"metrics.jsonl: line 3: no integer `step`"):
        build_report(run)
