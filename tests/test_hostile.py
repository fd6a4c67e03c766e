"""Hostile input to every command: one clear line, exit code 2, no traceback, no file changed.

One table of cases, each run as a real subprocess in its own folder (the working directory,
so default outputs land there too). Before and after, every file and folder in that folder
is snapshotted (bytes and mtime): a refused command must leave it exactly as it was. Cases
fail in input checking, before any model loads, wherever the command allows; the few that
need a model use the tiny one. A case in another module's area that still fails is marked
`xfail(strict=True)`, so it flips to an error the day it is fixed.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
CHEERFUL = (EXAMPLES / "cheerful.yaml").read_text()
NO_EXAMPLES = "name: bare\nprinciples:\n  - name: nice\n    question: Is the text nice?\n"
TUNE = "constitution: c.yaml\nprompts: p.txt\npolicy_model: nobody/no-such-model\njudge_model: nobody/no-such-model\n" \
       "output_dir: runs/new\nsteps: 2\n"
SAMPLE = "constitution: c.yaml\nprompts: p.txt\npolicy_model: nobody/no-such-model\noutput_dir: corpus/c\n"
RUN_CONFIG = TUNE.replace("runs/new", "runs/x")
METRICS = "".join(json.dumps({"step": s, "reward/train": 0.1 * s, "kl": 0.01 * s}) + "\n" for s in (1, 2))
SAMPLES = "".join(json.dumps({"step": s, "prompt": "Once", "completion": " upon", "train": 0.5}) + "\n" for s in (1, 2))
EVENTS = json.dumps({"time": "2026-01-01T00:00:00", "event": "start"}) + "\n"
VALUES = json.dumps([{"kind": "terminal", "credit": 1.0, "count": 1, "step": 1, "text": "joy"}])


def run_dir(config: str = RUN_CONFIG, **extra: str | bytes) -> dict[str, str | bytes]:
    """Files of a tether run directory at runs/x (a started run with two logged steps)."""
    files = {"config.yaml": config, "events.jsonl": EVENTS, "metrics.jsonl": METRICS, "samples.jsonl": SAMPLES, **extra}
    return {f"runs/x/{name}": content for name, content in files.items()}


BASE = {"c.yaml": CHEERFUL, "t.txt": "a happy day\na sad day\n", "p.txt": "Once upon a time\n"}


@dataclass
class Case:
    id: str
    args: list[str]
    expect: str  # a fragment of the one error line (or of stdout, when rc is 0)
    files: dict[str, str | bytes] = field(default_factory=dict)
    dirs: tuple[str, ...] = ()
    stdin: str | None = None
    model: bool = False  # substitute {model} with the tiny model folder
    rc: int = 2
    creates: tuple[str, ...] = ()  # rc 0: the new files the command may write
    check: Callable[[Path], None] | None = None
    xfail: str | None = None
    setup: Callable[[Path], None] | None = None


def _mixed_labels_ok(tmp: Path) -> None:
    rows = [json.loads(line) for line in (tmp / "o.jsonl").read_text().splitlines()]
    assert [r.get("label") for r in rows] == ["good", 3, None, ["x"]]
    assert rows[2]["line"] == 3 and all(0 <= r["cheerful/p_yes"] <= 1 for r in rows)  # control-token strings: plain text


def _report_escaped(tmp: Path) -> None:
    page = (tmp / "runs/x/report/report.html").read_text()
    assert "<script>alert(1)</script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page


def _corpus(tmp: Path) -> None:
    from tether.corpus.store import CorpusDir
    from tether.judge.constitution import load_constitution

    (tmp / "corpus").mkdir()
    CorpusDir(tmp / "corpus").start({"constitution": "c.yaml"}, load_constitution(tmp / "c.yaml"), tmp / "c.yaml", False)


HTML_SAMPLES = json.dumps({"step": 1, "prompt": "<b>Once</b>", "completion": "<script>alert(1)</script>", "train": 0.5}) + "\n"
HUGE = b'{"text": "a fine day"}\n' * 200_000 + b'{"text": \n{"text": "x"}\n'
S = ["score", "c.yaml"]

CASES = [
    # --- tether score: the constitution --------------------------------------------------------------
    Case("score-constitution-missing", ["score", "none.yaml", "t.txt"], "none.yaml: no such file"),
    Case("score-constitution-folder", ["score", "d", "t.txt"], "d: is a folder", dirs=("d",)),
    Case("score-constitution-malformed", ["score", "bad.yaml", "t.txt"], "bad.yaml: line 2, column 1: malformed YAML",
         files={"bad.yaml": "principles: [\n"}),
    Case("score-constitution-truncated", ["score", "cut.yaml", "t.txt"], "cut.yaml",
         files={"cut.yaml": CHEERFUL[: CHEERFUL.index("question:")] + "question: \"Is the"}),
    Case("score-constitution-wrong-type", ["score", "w.yaml", "t.txt"], "principles",
         files={"w.yaml": "name: w\nprinciples: 5\n"}),
    Case("score-constitution-unknown-field", ["score", "u.yaml", "t.txt"], "colour",
         files={"u.yaml": CHEERFUL + "colour: red\n"}),
    Case("score-constitution-binary", ["score", "bin.yaml", "t.txt"], "not UTF-8",
         files={"bin.yaml": bytes(range(256)) * 4}),
    Case("score-constitution-empty", ["score", "e.yaml", "t.txt"], "e.yaml", files={"e.yaml": ""}),
    # --- tether score: the texts ---------------------------------------------------------------------
    Case("score-texts-missing", S + ["none.jsonl"], "none.jsonl: no such file"),
    Case("score-texts-folder", S + ["d.jsonl"], "d.jsonl: is a folder", dirs=("d.jsonl",)),
    Case("score-texts-unknown-format", S + ["t.csv"], "unknown text format '.csv'", files={"t.csv": "text\nhi\n"}),
    Case("score-texts-malformed-json", S + ["t.jsonl"], "t.jsonl: line 2: malformed JSON",
         files={"t.jsonl": '{"text": "fine"}\n{"text": \n'}),
    Case("score-texts-truncated-last-line", S + ["t.jsonl"], "t.jsonl: line 2: malformed JSON",
         files={"t.jsonl": '{"text": "fine"}\n{"text": "cut sho'}),
    Case("score-texts-not-an-object", S + ["t.jsonl"], "line 1: expected a JSON object", files={"t.jsonl": "[1, 2]\n"}),
    Case("score-texts-text-a-number", S + ["t.jsonl"], "line 1: `text` must be a string, got int",
         files={"t.jsonl": '{"text": 5}\n'}),
    Case("score-texts-no-text-field", S + ["t.jsonl"], "line 1: no `text` field", files={"t.jsonl": '{"body": "x"}\n'}),
    Case("score-texts-prompt-not-string", S + ["t.jsonl"], "`prompt` (a string or a list of messages) and `completion` (a string) must be given",
         files={"t.jsonl": '{"prompt": 1, "completion": "x"}\n'}),
    Case("score-texts-empty-text", S + ["t.jsonl"], "line 1: the text is empty", files={"t.jsonl": '{"text": "  "}\n'}),
    Case("score-texts-empty-file", S + ["e.txt"], "e.txt: no texts found", files={"e.txt": ""}),
    Case("score-texts-non-utf8", S + ["l1.txt"], "l1.txt: line 2: not UTF-8 text", files={"l1.txt": b"fine\ncaf\xe9\n"}),
    Case("score-texts-binary", S + ["b.jsonl"], "not UTF-8", files={"b.jsonl": b"\x00\xff\xfe" * 1000}),
    Case("score-texts-huge-broken-at-the-end", S + ["h.jsonl"], "h.jsonl: line 200001: malformed JSON",
         files={"h.jsonl": HUGE}),
    Case("score-stdin-empty", S + ["-"], "stdin: no texts found", stdin=""),
    # --- tether score: options and the output ------------------------------------------------------
    Case("score-combine-unknown", S + ["t.txt", "--combine", "max"], "--combine 'max'"),
    Case("score-long-text-unknown", S + ["t.txt", "--long-text", "sideways"], "'sideways' is not one of"),
    Case("score-batch-size-negative", S + ["t.txt", "--batch-size", "-1"], "--batch-size"),
    Case("score-max-text-tokens-zero", S + ["t.txt", "--max-text-tokens", "0"], "--max-text-tokens"),
    Case("score-batch-size-not-a-number", S + ["t.txt", "--batch-size", "1e99"], "'--batch-size': Input should be a valid integer"),
    Case("score-out-is-a-folder", S + ["t.txt", "--out", "d"], "d: is a folder", dirs=("d",)),
    Case("score-out-unknown-format", S + ["t.txt", "--out", "o.xlsx"], "o.xlsx: unknown output format"),
    Case("score-out-is-the-texts", S + ["t.jsonl", "--out", "t.jsonl"], "t.jsonl: --out is the TEXTS file",
         files={"t.jsonl": '{"text": "hi"}\n'}),
    Case("score-out-over-run-metrics", S + ["t.txt", "--out", "runs/x/metrics.jsonl"],
         "runs/x/metrics.jsonl: tether's own file of the run in runs/x", files=run_dir()),
    Case("score-out-over-corpus-candidates", S + ["t.txt", "--out", "corpus/candidates.jsonl"],
         "corpus/candidates.jsonl: tether's own file of the corpus in corpus", setup=_corpus),
    Case("score-out-inside-run-checkpoints", S + ["t.txt", "--out", "runs/x/checkpoints/s.jsonl"],
         "inside runs/x/checkpoints", files=run_dir()),
    Case("score-mixed-label-types-special-tokens-html", S + ["t.jsonl", "-m", "{model}", "-o", "o.jsonl", "-q"], "mean (3)",
         model=True, rc=0, creates=("o.jsonl",), check=_mixed_labels_ok,
         files={"t.jsonl": '{"text": "a", "label": "good"}\n{"text": "b", "label": 3}\n'
                           '{"text": "<start_of_image><start_of_image><eos><bos> hi"}\n'
                           '{"text": "<script>alert(1)</script><unused0>", "label": ["x"]}\n'}),
    # --- tether audit ------------------------------------------------------------------------------
    Case("audit-no-examples-no-texts", ["audit", "bare.yaml"], "no few-shot examples to audit with",
         files={"bare.yaml": NO_EXAMPLES}),
    Case("audit-texts-non-utf8", ["audit", "c.yaml", "l1.txt"], "not UTF-8", files={"l1.txt": b"\xff\xfe\n"}),
    Case("audit-min-share-above-one", ["audit", "c.yaml", "--min-share", "2"], "--min-share"),
    Case("audit-out-is-a-folder", ["audit", "c.yaml", "--out", "d"], "d: is a folder", dirs=("d",)),
    Case("audit-out-over-run-config", ["audit", "c.yaml", "--out", "runs/x/finished.json"],
         "runs/x/finished.json: tether's own file of the run", files=run_dir()),
    # --- tether tune -------------------------------------------------------------------------------
    Case("tune-nothing", ["tune"], "give a CONFIG file to start a run, or --resume"),
    Case("tune-config-and-resume", ["tune", "t.yaml", "--resume", "runs/x"], "give a CONFIG file", files={"t.yaml": TUNE}),
    Case("tune-config-missing", ["tune", "none.yaml"], "none.yaml: no such file"),
    Case("tune-config-folder", ["tune", "d"], "d: is a folder", dirs=("d",)),
    Case("tune-config-malformed", ["tune", "t.yaml"], "t.yaml: line 2, column 1: malformed YAML", files={"t.yaml": "steps: [\n"}),
    Case("tune-config-a-list", ["tune", "t.yaml"], "expected a mapping of config fields", files={"t.yaml": "- steps\n- 5\n"}),
    Case("tune-config-non-utf8", ["tune", "t.yaml"], "t.yaml: line 1: not UTF-8", files={"t.yaml": b"steps: \xff\n"}),
    Case("tune-set-unclosed-list", ["tune", "t.yaml", "--set", "lora_target_modules=[q_proj"],
         "--set 'lora_target_modules=[q_proj': the value is not valid YAML", files={"t.yaml": TUNE}),
    Case("tune-set-nonsense", ["tune", "t.yaml", "--set", "nonsense"], "--set 'nonsense': write field=value",
         files={"t.yaml": TUNE}),
    Case("tune-set-steps-negative", ["tune", "t.yaml", "--set", "steps=-1"], "steps: -1: Input should be greater than",
         files={"t.yaml": TUNE}),
    Case("tune-set-unknown-nested", ["tune", "t.yaml", "--set", "detectors.nonsense=1"], "detectors.nonsense: unknown field",
         files={"t.yaml": TUNE}),
    Case("tune-set-nested-under-a-number", ["tune", "t.yaml", "--set", "steps.x=1"], "steps is not a group of fields",
         files={"t.yaml": TUNE}),
    Case("tune-set-infinite-temperature", ["tune", "t.yaml", "--set", "temperature=.inf"], "temperature",
         files={"t.yaml": TUNE}),
    Case("tune-resume-no-run", ["tune", "--resume", "runs/none"], "runs/none: no run here"),
    Case("tune-resume-malformed-config", ["tune", "--resume", "runs/x"], "runs/x/config.yaml: line 2, column 1: malformed YAML",
         files=run_dir(config="steps: [\n")),
    Case("tune-resume-bad-stored-field", ["tune", "--resume", "runs/x"], "runs/x/config.yaml: steps: -5",
         files=run_dir(config=RUN_CONFIG.replace("steps: 2", "steps: -5"))),
    # --- tether report -----------------------------------------------------------------------------
    Case("report-no-run", ["report", "runs/none"], "runs/none: no such run directory"),
    Case("report-a-file", ["report", "t.txt"], "t.txt: not a folder"),
    Case("report-steps-not-numbers", ["report", "runs/x", "--steps", "1,x"], "--steps '1,x'", files=run_dir()),
    Case("report-malformed-config", ["report", "runs/x"], "runs/x/config.yaml: line 2, column 1: malformed YAML",
         files=run_dir(config="steps: [\n")),
    Case("report-metrics-binary", ["report", "runs/x"], "runs/x/metrics.jsonl", files=run_dir(**{"metrics.jsonl": b"\xff\x00\n"})),
    Case("report-metrics-not-numbers", ["report", "runs/x"], "runs/x/metrics.jsonl: line 1: `kl` must be a number",
         files=run_dir(**{"metrics.jsonl": '{"step": 1, "kl": "high"}\n'})),
    Case("report-metrics-no-step", ["report", "runs/x"], "runs/x/metrics.jsonl: line 1: no integer `step`",
         files=run_dir(**{"metrics.jsonl": '{"kl": 0.1}\n'})),
    Case("report-samples-missing-field", ["report", "runs/x"], "runs/x/samples.jsonl: line 1: no `train`",
         files=run_dir(**{"samples.jsonl": '{"step": 1, "prompt": "a", "completion": "b"}\n'})),
    Case("report-values-malformed", ["report", "runs/x"], "runs/x/values/values.json: malformed JSON",
         files=run_dir(**{"values/values.json": "[{"})),
    Case("report-html-in-samples-is-escaped", ["report", "runs/x"], "report:", rc=0, check=_report_escaped,
         creates=("runs/x/report",), files=run_dir(**{"samples.jsonl": HTML_SAMPLES})),
    # --- tether sample -----------------------------------------------------------------------------
    Case("sample-config-missing", ["sample", "none.yaml"], "none.yaml: no such file"),
    Case("sample-unknown-field", ["sample", "s.yaml"], "s.yaml: line 5, column 9: colour: unknown field",
         files={"s.yaml": SAMPLE + "colour: red\n"}),
    Case("sample-set-negative", ["sample", "s.yaml", "--set", "max_completion_tokens=-5"], "max_completion_tokens: -5",
         files={"s.yaml": SAMPLE}),
    Case("sample-set-unclosed", ["sample", "s.yaml", "--set", "seed={"], "--set 'seed={'", files={"s.yaml": SAMPLE}),
    # --- tether audit-corpus -----------------------------------------------------------------------
    Case("audit-corpus-not-a-corpus", ["audit-corpus", "d"], "d: not a corpus directory", dirs=("d",)),
    Case("audit-corpus-port-out-of-range", ["audit-corpus", "d", "--port", "70000"], "--port", dirs=("d",)),
    Case("audit-corpus-port-in-use", ["audit-corpus", "corpus", "--port", "{port}"], "port {port}: cannot listen on 127.0.0.1 (Address already in use)",
         setup=_corpus),
    # --- tether sft --------------------------------------------------------------------------------
    Case("sft-nothing", ["sft"], "give a CORPUS_DIR to start a run, or --resume"),
    Case("sft-config-unknown-field", ["sft", "corpus", "-c", "f.yaml"], "f.yaml: line 1, column 8: epoch: unknown field",
         files={"f.yaml": "epoch: 2\n"}, dirs=("corpus",)),
    Case("sft-set-negative-epochs", ["sft", "corpus", "--set", "epochs=-1"], "epochs: -1", dirs=("corpus",)),
    Case("sft-corpus-missing", ["sft", "none"], "none: not a corpus directory"),
    Case("sft-resume-malformed", ["sft", "--resume", "runs/x"], "runs/x/config.yaml: line 2, column 1: malformed YAML",
         files=run_dir(config="steps: [\n")),
    # --- tether blend ------------------------------------------------------------------------------
    Case("blend-neither", ["blend", "--tuned", "runs/x"], "give --alpha A to write one blended model", files=run_dir()),
    Case("blend-alpha-without-out", ["blend", "--tuned", "runs/x", "--alpha", "0.5"], "give --out DIR", files=run_dir()),
    Case("blend-alpha-huge", ["blend", "--tuned", "runs/x", "--alpha", "1e308", "--out", "o"], "must be within [0, 1]",
         files=run_dir()),
    Case("blend-sweep-not-numbers", ["blend", "--tuned", "runs/x", "--sweep", "0,half"], "--sweep '0,half'",
         files=run_dir()),
    Case("blend-tuned-missing", ["blend", "--tuned", "none", "--alpha", "0.5", "--out", "o"], "none"),
    Case("blend-malformed-run-config", ["blend", "--tuned", "runs/x", "--alpha", "0.5", "--out", "o"],
         "runs/x/config.yaml: line 2, column 1: malformed YAML", files=run_dir(config="steps: [\n", **{"final/adapter_config.json": "{}"})),
    # --- tether values -----------------------------------------------------------------------------
    Case("values-no-store", ["values", "runs/x"], "no value store", files=run_dir()),
    Case("values-nearest-zero", ["values", "runs/x", "--nearest", "0"], "--nearest", files=run_dir()),
    Case("values-malformed-config", ["values", "runs/x"], "runs/x/config.yaml: line 2, column 1: malformed YAML",
         files=run_dir(config="steps: [\n", **{"values/values.json": VALUES})),
    Case("values-out-over-run-best-json", ["values", "runs/x", "--out", "runs/x/best.json"],
         "runs/x/best.json: tether's own file of the run", files=run_dir(**{"values/values.json": VALUES})),
    # --- the command line itself -------------------------------------------------------------------
    Case("unknown-command", ["scor"], "No such command 'scor'"),
    Case("unknown-option", S + ["t.txt", "--colour", "red"], "No such option: --colour"),
    Case("missing-argument", ["score"], "Missing argument"),
]


def snapshot(root: Path) -> dict[str, tuple]:
    out = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        out[rel] = ("dir",) if path.is_dir() else (path.read_bytes(), path.stat().st_mtime_ns)
    return out


def build(tmp: Path, case: Case) -> None:
    for name, content in {**BASE, **case.files}.items():
        path = tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
    for name in case.dirs:
        (tmp / name).mkdir(parents=True, exist_ok=True)
    if case.setup:
        case.setup(tmp)


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id, marks=[pytest.mark.xfail(strict=True, reason=c.xfail)] if c.xfail else [])
                                  for c in CASES])
def test_hostile_input(case: Case, tmp_path: Path, request):
    build(tmp_path, case)
    subs = {"{model}": str(request.getfixturevalue("tiny_model_dir")) if case.model else "{model}"}
    sock = None
    if any("{port}" in a for a in case.args):
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        subs["{port}"] = str(sock.getsockname()[1])
    args = list(case.args)
    for key, value in subs.items():
        args = [a.replace(key, value) for a in args]
    expect = case.expect
    for key, value in subs.items():
        expect = expect.replace(key, value)
    before = snapshot(tmp_path)
    try:
        run = subprocess.run([sys.executable, "-m", "tether.cli", *args], check=False, capture_output=True, text=True, input=case.stdin,
                             cwd=tmp_path, env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=120)
    finally:
        if sock:
            sock.close()
    after = snapshot(tmp_path)
    assert "Traceback" not in run.stderr, run.stderr
    assert run.returncode == case.rc, run.stderr + run.stdout
    if case.rc:
        assert run.stderr.count("\n") == 1 and run.stderr.startswith("error: "), run.stderr
        assert expect in run.stderr, run.stderr
        assert after == before, "a refused command changed the folder"
    else:
        assert expect in run.stdout, run.stdout
        assert {k: v for k, v in after.items() if k in before} == before, "an existing file changed"
        new = set(after) - set(before)
        assert all(any(n == c or n.startswith(c) for c in case.creates) for n in new), new
        if case.check:
            case.check(tmp_path)


def test_enough_cases_across_every_command():
    commands = {c.args[0] for c in CASES}
    assert len(CASES) >= 50
    assert {"score", "audit", "tune", "report", "sample", "audit-corpus", "sft", "blend", "values"} <= commands
