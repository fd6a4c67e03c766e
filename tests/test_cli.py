"""The CLI as a user runs it: real subprocesses on a tiny model folder, and its errors."""

import json
import os
import subprocess
import sys

import pytest

from tether.cli import main

ENV = {**os.environ, "HF_HUB_OFFLINE": "1"}


def tether(*args, stdin=None):
    return subprocess.run([sys.executable, "-m", "tether.cli", *map(str, args)], capture_output=True,
                          text=True, input=stdin, env=ENV, timeout=300)


def test_score_writes_jsonl_and_csv(tmp_path, tiny_model_dir, examples_dir):
    out = tmp_path / "scores.jsonl"
    run = tether("score", examples_dir / "cheerful.yaml", examples_dir / "texts.jsonl", "--model", tiny_model_dir,
                 "--out", out, "--quiet")
    assert run.returncode == 0, run.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 40 and rows[0]["id"] == "cheerful-01" and rows[0]["label"] == "cheerful"
    assert 0 <= rows[0]["cheerful/p_yes"] <= 1 and "total" in rows[0]
    assert "mean (cheerful)" in run.stdout and "wrote 40 rows" in run.stdout
    csv_out = tmp_path / "scores.csv"
    run = tether("score", examples_dir / "cheerful.yaml", "-", "--model", tiny_model_dir, "--out", csv_out, "-q",
                 "--debias", stdin="a happy day\na sad day\n")
    assert run.returncode == 0, run.stderr
    header, *lines = csv_out.read_text().splitlines()
    assert len(lines) == 2 and "cheerful/neg_log_odds" in header


def test_audit_writes_json_and_verdict(tmp_path, tiny_model_dir, examples_dir):
    out = tmp_path / "audit.json"
    run = tether("audit", examples_dir / "cheerful.yaml", "--model", tiny_model_dir, "--out", out, "-q")
    assert run.returncode == 0, run.stderr
    data = json.loads(out.read_text())
    assert data["n_texts"] == 8  # the constitution's own few-shot examples
    assert set(data["cells"]) == {"plain", "debiased"}
    assert "verdict:" in run.stdout and data["verdict"] in run.stdout.replace("\n", "")


def one_line_error(capsys, argv, expected):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert expected in err, err


def test_missing_files(capsys, tmp_path, examples_dir):
    one_line_error(capsys, ["score", str(tmp_path / "none.yaml"), "x.txt"], "none.yaml: no such file")
    one_line_error(capsys, ["score", str(examples_dir / "cheerful.yaml"), str(tmp_path / "no.jsonl"), "-q"],
                   "no.jsonl: no such file")


def test_malformed_inputs(capsys, tmp_path, examples_dir):
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("principles: [\n")
    one_line_error(capsys, ["audit", str(bad_yaml)], "bad.yaml: line 2, column 1: malformed YAML")
    bad_jsonl = tmp_path / "t.jsonl"
    bad_jsonl.write_text('{"text": "fine"}\n{"text": \n')
    one_line_error(capsys, ["score", str(examples_dir / "cheerful.yaml"), str(bad_jsonl), "-q"],
                   "t.jsonl: line 2: malformed JSON")
    empty = tmp_path / "e.txt"
    empty.write_text("")
    one_line_error(capsys, ["score", str(examples_dir / "cheerful.yaml"), str(empty), "-q"], "e.txt: no texts found")


def test_unknown_model_offline(capsys, tmp_path, examples_dir, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    texts = tmp_path / "t.txt"
    texts.write_text("hello\n")
    one_line_error(capsys, ["score", str(examples_dir / "cheerful.yaml"), str(texts), "-m", "nobody/no-such-model", "-q"],
                   "model 'nobody/no-such-model' not found")


def test_failed_run_leaves_existing_output_untouched(capsys, tmp_path, examples_dir, tiny_model_dir):
    out = tmp_path / "scores.jsonl"
    out.write_text("precious\n")
    bad = tmp_path / "t.jsonl"
    bad.write_text('{"text": ""}\n')
    one_line_error(capsys, ["score", str(examples_dir / "cheerful.yaml"), str(bad), "-m", str(tiny_model_dir),
                            "-o", str(out), "-q"], "line 1: the text is empty")
    assert out.read_text() == "precious\n" and list(tmp_path.glob(".scores.jsonl*")) == []


def test_too_long_text_rejected_on_request(capsys, tmp_path, examples_dir, tiny_model_dir):
    texts = tmp_path / "t.txt"
    texts.write_text("happy " * 100 + "\n")
    one_line_error(capsys, ["score", str(examples_dir / "cheerful.yaml"), str(texts), "-m", str(tiny_model_dir),
                            "--max-text-tokens", "10", "--long-text", "error", "-q", "-o", str(tmp_path / "o.jsonl")],
                   "text 1 is")
