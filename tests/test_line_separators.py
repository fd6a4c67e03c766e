"""tether reads what tether wrote: a JSONL line ends at "\\n" only.

tether writes JSONL with `ensure_ascii=False`, so a model-written U+2028, U+2029 or U+0085
inside a string is stored raw (JSON escapes the control characters \\v, \\f, \\x1c-\\x1e).
`str.splitlines` breaks a line at every one of them; no reader of JSONL here may, and a
.txt line keeps all of them in its text.
"""

import io
import json
import sys

import pytest
import yaml

from tether.cli import main
from tether.infra import jsonl

SEPARATORS = ["\u2028", "\u2029", "\u0085", "\v", "\f", "\x1c", "\x1d", "\x1e"]
RAW_IN_JSON = ["\u2028", "\u2029", "\u0085"]  # json.dumps escapes only control characters (< U+0020)
IDS = ["U+2028", "U+2029", "U+0085", "VT", "FF", "FS", "GS", "RS"]


def texts() -> list[str]:
    """One text per separator, the separator inside it, and one with all of them."""
    return [f"Hello{s}world, line {k}." for k, s in enumerate(SEPARATORS)] + ["all:" + "".join(SEPARATORS) + "end"]


def write_jsonl(path, rows):
    """As tether writes it: UTF-8, no ASCII escaping, U+2028, U+2029 and U+0085 raw."""
    path.write_text("".join(jsonl.line(r) for r in rows), encoding="utf-8")
    data = path.read_bytes()
    assert all(s.encode() in data for s in RAW_IN_JSON if s in json.dumps(rows, ensure_ascii=False))
    return path


def test_jsonl_read_and_append_keep_the_separators(tmp_path):
    log = write_jsonl(tmp_path / "samples.jsonl", [{"completion": t} for t in texts()])
    assert [r["completion"] for r in jsonl.read(log)] == texts()
    jsonl.append(log, [{"completion": "after"}])
    assert [r["completion"] for r in jsonl.read(log)] == [*texts(), "after"]
    assert [n for n, _ in jsonl.read_numbered(log)] == list(range(1, len(texts()) + 2))


@pytest.mark.parametrize("sep", SEPARATORS, ids=IDS)
def test_read_texts_jsonl(tmp_path, sep):
    from tether.infra.texts import read_texts

    rows = [{"text": f"one{sep}two", "id": "a"}, {"prompt": f"Q{sep}", "completion": f"A{sep}B", "id": "b"}]
    records = read_texts(write_jsonl(tmp_path / "t.jsonl", rows))
    assert [r.text for r in records] == [f"one{sep}two", f"Q{sep}A{sep}B"]
    assert [(r.meta["id"], r.meta["line"]) for r in records] == [("a", 1), ("b", 2)]


def test_read_texts_jsonl_every_separator_and_stdin(tmp_path, monkeypatch):
    from tether.infra.texts import read_texts

    path = write_jsonl(tmp_path / "t.jsonl", [{"text": t} for t in texts()])
    assert [r.text for r in read_texts(path)] == texts()
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(path.read_bytes())))
    assert [r.text for r in read_texts("-")] == texts()


def test_read_texts_txt_splits_at_newline_only(tmp_path, monkeypatch):
    from tether.infra.texts import read_texts

    path = tmp_path / "t.txt"
    path.write_bytes(("\n".join(texts()) + "\r\n\nlast\r\n").encode("utf-8"))
    assert [(r.text, r.meta["line"]) for r in read_texts(path)] == [
        *((t, n) for n, t in enumerate(texts(), 1)), ("last", len(texts()) + 2)]
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO("a\u2028b\nc\x1cd\n".encode())))
    assert [r.text for r in read_texts("-")] == ["a\u2028b", "c\x1cd"]


def test_read_prompts_jsonl_and_txt(tmp_path):
    from tether.infra.texts import read_prompts

    plain = write_jsonl(tmp_path / "p.jsonl", [{"prompt": t} for t in texts()])
    assert read_prompts(plain) == texts()
    chats = write_jsonl(tmp_path / "c.jsonl", [{"messages": [{"role": "user", "content": t}]} for t in texts()])
    assert read_prompts(chats) == [[{"role": "user", "content": t}] for t in texts()]
    txt = tmp_path / "p.txt"
    txt.write_text("\n".join(texts()) + "\n", encoding="utf-8")
    assert read_prompts(txt) == texts()


def label_rows(answers=("yes", "no")):
    rows = []
    for k, t in enumerate(texts()):
        answer = answers[k % 2]
        rows.append({"kind": "label", "item": f"i{k}", "question": "good", "answer": answer, "who": "ana",
                     "time": "2025-06-01T10:00:00+00:00",
                     "source": {"prompt": f"prompt{SEPARATORS[k % len(SEPARATORS)]}{k}", "completion": t,
                                "train": 1.0 if answer == "yes" else 0.0}})
    rows.append({"kind": "compare", "left": "i0", "right": "i1", "prompt": rows[0]["source"]["prompt"],
                 "choice": "left", "winner": "i0", "who": "ana",
                 "sources": {"left": rows[0]["source"], "right": rows[1]["source"]}})
    return rows


def test_labels_readers(tmp_path):
    from tether.labels.agreement import read_labels
    from tether.labels.store import LabelsFile

    path = write_jsonl(tmp_path / "labels.jsonl", label_rows())
    labels = read_labels(path)
    assert [labels.sources[f"i{k}"]["completion"] for k in range(len(texts()))] == texts()
    assert [p.winner["completion"] for p in labels.pairs] == [texts()[0]]
    records = LabelsFile(path).records()
    assert [r["source"]["completion"] for r in records if r["kind"] == "label"] == texts()


def test_label_items_from_a_file_and_a_run(tmp_path):
    from tether.labels.items import read_items

    rows = [{"prompt": f"p{k}{SEPARATORS[k % len(SEPARATORS)]}", "completion": t} for k, t in enumerate(texts())]
    items = read_items(write_jsonl(tmp_path / "pairs.jsonl", rows))
    assert [(i.prompt, i.completion) for i in items] == [(r["prompt"], r["completion"]) for r in rows]
    run = tmp_path / "run"
    run.mkdir()
    write_jsonl(run / "samples.jsonl", [{"step": 1, **r, "train": 0.5} for r in rows])
    write_jsonl(run / "base_samples.jsonl", [{"prompt": rows[0]["prompt"], "completions": texts()}])
    assert sorted(i.completion for i in read_items(run)) == sorted(texts() * 2)


def test_corpus_store(tmp_path):
    from tether.corpus.store import CorpusDir

    corpus = CorpusDir(tmp_path / "corpus")
    corpus.path.mkdir()
    candidates = [{"id": f"c{k}", "prompt_index": k, "prompt": f"p{SEPARATORS[k % len(SEPARATORS)]}", "completion": t,
                   "status": "kept", "total": 0.5, "scores": {"cheerful": 0.5}} for k, t in enumerate(texts())]
    corpus.append_candidates(candidates)
    assert corpus.candidates() == candidates
    edited = "edited\u2028\u2029\x1c text"
    jsonl.append(corpus.decisions_path, [{"id": "c0", "action": "edit", "note": "n\u0085\v\f", "text": edited}])
    assert corpus.decisions()["c0"]["text"] == edited and corpus.decisions()["c0"]["note"] == "n\u0085\v\f"
    corpus.rebuild()
    assert [r["completion"] for r in corpus.corpus()] == [edited, *texts()[1:]]


def test_run_logs_base_samples_and_detector_replay(tmp_path):
    from tether.infra.texts import load_base
    from tether.watch.replay import history_of

    run = tmp_path / "run"
    run.mkdir()
    write_jsonl(run / "base_samples.jsonl", [{"prompt": f"p{s}", "completions": [f"c{s}"]} for s in SEPARATORS])
    assert load_base(run / "base_samples.jsonl") == {f"p{s}": [f"c{s}"] for s in SEPARATORS}
    write_jsonl(run / "metrics.jsonl", [{"step": k, "reward/train": 0.1, "note": t} for k, t in enumerate(texts(), 1)])
    assert [m["note"] for m in history_of(run)] == texts()


# --- the CLI: commands that read JSONL --------------------------------------------------------


def test_cli_score_reads_what_tether_wrote(tmp_path, capsys, tiny_model_dir, examples_dir):
    """The reported failure: `tether score` on JSONL holding a raw U+2028 said "line N: malformed JSON"."""
    source = write_jsonl(tmp_path / "t.jsonl", [{"text": t, "id": f"t{k}"} for k, t in enumerate(texts())])
    out = tmp_path / "scores.jsonl"
    main(["score", str(examples_dir / "cheerful.yaml"), str(source), "--model", str(tiny_model_dir), "--out", str(out),
          "--device", "cpu", "-q"])
    rows = jsonl.read(out)
    assert [r["id"] for r in rows] == [f"t{k}" for k in range(len(texts()))]
    assert [r["line"] for r in rows] == list(range(1, len(texts()) + 1))
    assert f"wrote {len(texts())} rows" in capsys.readouterr().out


def test_cli_agreement_reads_a_labels_file_with_separators(tmp_path, capsys):
    path = write_jsonl(tmp_path / "labels.jsonl", label_rows())
    out = tmp_path / "agreement.json"
    main(["agreement", str(path), "--judge", "field:train", "--out", str(out), "-q", "--resamples", "200"])
    report = json.loads(out.read_text())
    good = report["judges"][0]["questions"]["good"]
    assert (good["yes"], good["no"], good["auc"]) == (5, 4, 1.0)
    assert report["pairs"]["decided"] == 1


def test_cli_report_shows_completions_with_separators(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text(yaml.safe_dump({"policy_model": "tiny", "algorithm": "grpo"}))
    write_jsonl(run / "metrics.jsonl", [{"step": s, "reward/train": 0.1 * s, "kl": 0.01 * s} for s in (1, 2, 3)])
    write_jsonl(run / "samples.jsonl", [{"step": s, "prompt": f"Once{SEPARATORS[k]}", "completion": t, "train": 0.1 * k}
                                        for s in (1, 2, 3) for k, t in enumerate(texts()[:len(SEPARATORS)])])
    write_jsonl(run / "events.jsonl", [{"event": "start", "note": "".join(SEPARATORS)}])
    main(["report", str(run), "--steps", "1,2,3"])
    page = (run / "report" / "report.html").read_text(encoding="utf-8")
    assert "report:" in capsys.readouterr().out
    assert any(t in page for t in texts()[:len(SEPARATORS)])  # a chosen completion, its separator kept
