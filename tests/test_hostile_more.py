"""Hostile input to the commands tests/test_hostile.py leaves out, and a meta-test over every command.

The cases run through test_hostile's own runner (a real subprocess in its own folder: one
`error: ` line on stderr, exit code 2, no traceback, the folder unchanged in bytes and mtime);
`{free}` in an argument becomes a port nothing listens on (test_hostile's `{port}` is one in
use). The meta-test reads the commands from the CLI itself (the Typer app, sub-groups
included), so a new command without at least three refusal cases fails the suite.

A few commands pay seconds of imports (torch, transformers) before their first check
(detect, experiment, serve, sample); they get fewer cases, each on a different check.
"""

from __future__ import annotations

import dataclasses
import json
import socket
from collections import Counter
from pathlib import Path

import pytest
import test_hostile
from test_hostile import METRICS, SAMPLE, TUNE, Case, _corpus, run_dir

SPEC = "questions:\n  - name: good\n    question: Is it good?\n"
PC = "".join(
    json.dumps({"prompt": "Once upon a time", "completion": c}) + "\n" for c in (" a girl laughed.", " it rained.")
)


def label_row(item: str, answer: str, question: str = "good") -> str:
    """One answer of a labels file, as the labeling page writes it."""
    source = {"prompt": "Once", "completion": f" text {item}"}
    return (
        json.dumps(
            {"kind": "label", "item": item, "question": question, "answer": answer, "who": "r1", "source": source}
        )
        + "\n"
    )


LABELS = label_row("a", "yes") + label_row("b", "no")
GOLD = json.dumps(
    {
        "format": "tether-gold/1",
        "features": "minilm",
        "label": "good",
        "coef": [0.0],
        "intercept": 0.0,
        "scaler": {"mean": [0.0], "scale": [1.0]},
        "labels": {"path": "l.jsonl", "sha256": "0" * 64},
    }
)
SAMPLE_EMBEDDED = SAMPLE.replace("nobody/no-such-model", "embedded:gemma-3-270m")  # checked by name, never loaded
EXPERIMENT = "tune: t.yaml\noutput_dir: exp\nseeds: [0]\neval_prompts: p.txt\narms:\n  plain: {}\n"
EXP = {"t.yaml": TUNE, "e.yaml": EXPERIMENT}
E = ["experiment", "e.yaml"]
G = {"g/gold.json": GOLD, "pc.jsonl": PC}
L = {"l.jsonl": LABELS}
LS = {"pc.jsonl": PC, "s.yaml": SPEC}
LAB = ["label", "pc.jsonl", "-o", "o.jsonl", "--spec", "s.yaml"]
AG = ["agreement", "l.jsonl", "-j", "field:train"]
FIT = ["gold", "fit", "l.jsonl", "--label", "good", "-o", "g"]
GS = ["gold", "score", "g", "pc.jsonl", "-o", "o.jsonl"]
NOBODY = ["-m", "nobody/no-such-model"]
ST = ["steer", "It was a day.", "It rained.", *NOBODY]


def _damaged_corpus(tmp: Path) -> None:
    _corpus(tmp)
    (tmp / "corpus" / "decisions.jsonl").write_bytes(b'{"id": \n{}\n')


MORE = [
    # --- tether detect (each case pays ~8 s of imports: a few, each on its own check) ---------------------
    Case(
        "detect-with-config-no-run",
        ["detect", "runs/none", "--config", "t.yaml"],
        "runs/none: no such run directory",
        files={"t.yaml": TUNE},
    ),
    Case(
        "detect-metrics-malformed-mid-file",
        ["detect", "runs/x"],
        "runs/x/metrics.jsonl: line 1: malformed JSON",
        files=run_dir(**{"metrics.jsonl": '{"step": 1, \n' + METRICS}),
    ),
    Case(
        "detect-json-given-a-value",
        ["detect", "runs/x", "--json=maybe"],
        "Option '--json' does not take a value",
        files=run_dir(),
    ),
    # --- tether label ------------------------------------------------------------------------------------
    Case("label-no-out", ["label", "pc.jsonl", "--spec", "s.yaml"], "--out FILE.jsonl: where the answers go", files=LS),
    Case(
        "label-no-spec",
        ["label", "pc.jsonl", "-o", "o.jsonl"],
        "label mode asks the spec's questions: give --spec",
        files=LS,
    ),
    Case(
        "label-spec-missing",
        ["label", "pc.jsonl", "-o", "o.jsonl", "--spec", "none.yaml"],
        "none.yaml: no such file",
        files=LS,
    ),
    Case(
        "label-spec-malformed",
        LAB,
        "s.yaml: line 2, column 1: malformed YAML",
        files={**LS, "s.yaml": "questions: [\n"},
    ),
    Case(
        "label-spec-no-questions",
        LAB,
        "s.yaml: line 1, column 12: questions: []: List should have at least 1 item",
        files={**LS, "s.yaml": "questions: []\n"},
    ),
    Case(
        "label-spec-bad-name",
        LAB,
        "s.yaml: line 2, column 11: questions.0.name: '1 bad': String should match pattern",
        files={**LS, "s.yaml": "questions:\n  - name: 1 bad\n    question: Is it good?\n"},
    ),
    Case(
        "label-mode-unknown",
        ["label", "pc.jsonl", "-o", "o.jsonl", "--mode", "rank"],
        "Invalid value for '--mode': 'rank' is not one of label, compare",
        files=LS,
    ),
    Case(
        "label-source-missing",
        ["label", "none.jsonl", "-o", "o.jsonl", "--spec", "s.yaml"],
        "none.jsonl: no such file or folder",
        files=LS,
    ),
    Case(
        "label-source-non-utf8",
        ["label", "b.jsonl", "-o", "o.jsonl", "--spec", "s.yaml"],
        "b.jsonl: line 1: not UTF-8 text",
        files={**LS, "b.jsonl": b'{"prompt": "caf\xe9", "completion": "x"}\n'},
    ),
    Case(
        "label-source-not-an-object",
        ["label", "b.jsonl", "-o", "o.jsonl", "--spec", "s.yaml"],
        "b.jsonl: line 1: expected a JSON object, got list",
        files={**LS, "b.jsonl": "[1, 2]\n"},
    ),
    Case(
        "label-source-empty",
        ["label", "e.jsonl", "-o", "o.jsonl", "--spec", "s.yaml"],
        "e.jsonl: no samples; check the SOURCE",
        files={**LS, "e.jsonl": ""},
    ),
    Case(
        "label-filter-matches-nothing",
        ["label", "runs/x@step=50-60", "-o", "o.jsonl", "--spec", "s.yaml"],
        "runs/x@step=50-60: no samples match step=50-60",
        files={**run_dir(), **LS},
    ),
    Case(
        "label-compare-one-source",
        ["label", "pc.jsonl", "-o", "o.jsonl", "--mode", "compare"],
        "compare mode needs two sources",
        files=LS,
    ),
    Case(
        "label-out-wrong-format",
        [*LAB[:3], "o.csv", *LAB[4:]],
        "o.csv: unknown output format '.csv'; use .jsonl",
        files=LS,
    ),
    Case(
        "label-out-is-a-folder",
        [*LAB[:3], "d", *LAB[4:]],
        "d: is a folder; --out takes a file name",
        files=LS,
        dirs=("d",),
    ),
    Case("label-out-is-the-source", [*LAB[:3], "pc.jsonl", *LAB[4:]], "pc.jsonl: --out is a SOURCE file", files=LS),
    Case("label-out-damaged", LAB, "o.jsonl: line 1: malformed JSON", files={**LS, "o.jsonl": '{"kind": "label", \n'}),
    Case(
        "label-out-over-run-samples",
        [*LAB[:3], "runs/x/samples.jsonl", *LAB[4:]],
        "runs/x/samples.jsonl: tether's own file of the run in runs/x",
        files={**run_dir(), **LS},
    ),
    Case(
        "label-limit-zero",
        [*LAB, "--limit", "0"],
        "Invalid value for '--limit': Input should be greater than or equal to 1",
        files=LS,
    ),
    Case(
        "label-port-negative",
        [*LAB, "--port", "-1"],
        "Invalid value for '--port': Input should be greater than or equal to 0",
        files=LS,
    ),
    Case(
        "label-who-padded",
        [*LAB, "--who", " r1"],
        "--who ' r1': write a name on one line, without leading or trailing spaces",
        files=LS,
    ),
    Case(
        "label-port-in-use",
        [*LAB, "--port", "{port}"],
        "port {port}: cannot listen on 127.0.0.1 (Address already in use)",
        files=LS,
    ),
    # --- tether agreement --------------------------------------------------------------------------------
    Case("agreement-labels-missing", ["agreement", "none.jsonl", "-j", "field:train"], "none.jsonl: no such file"),
    Case(
        "agreement-labels-folder",
        ["agreement", "d", "-j", "field:train"],
        "d: is a folder, expected a JSONL file",
        dirs=("d",),
    ),
    Case(
        "agreement-labels-malformed", AG, "l.jsonl: line 3: malformed JSON", files={"l.jsonl": LABELS + '{"kind": \n'}
    ),
    Case(
        "agreement-labels-non-utf8",
        AG,
        "l.jsonl: line 3: not UTF-8 text",
        files={"l.jsonl": LABELS.encode() + b'{"who": "caf\xe9"}\n'},
    ),
    Case(
        "agreement-labels-not-an-object",
        AG,
        "l.jsonl: line 3: expected a JSON object, got int",
        files={"l.jsonl": LABELS + "5\n"},
    ),
    Case(
        "agreement-labels-bad-answer",
        AG,
        "l.jsonl: record 3: a label needs `item`, `question` and `answer` yes, no or skip",
        files={"l.jsonl": LABELS + label_row("c", "maybe")},
    ),
    Case("agreement-labels-empty", AG, "l.jsonl: no yes/no labels and no compare choices", files={"l.jsonl": ""}),
    Case(
        "agreement-who-unknown",
        [*AG, "--who", "nobody"],
        "l.jsonl: no yes/no labels and no compare choices by 'nobody'",
        files=L,
    ),
    Case("agreement-no-judge", ["agreement", "l.jsonl"], "tether agreement: Missing option '--judge'", files=L),
    Case(
        "agreement-judge-unknown-kind",
        ["agreement", "l.jsonl", "-j", "oracle:x"],
        "--judge 'oracle:x': write one of",
        files=L,
    ),
    Case(
        "agreement-judge-unknown-monitor",
        ["agreement", "l.jsonl", "-j", "monitor:nonsense"],
        "--judge monitor:nonsense: unknown monitor 'nonsense'; the monitors are",
        files=L,
    ),
    Case(
        "agreement-judge-constitution-missing",
        ["agreement", "l.jsonl", "-j", "constitution:none.yaml"],
        "none.yaml: no such file",
        files=L,
    ),
    Case(
        "agreement-judge-constitution-malformed",
        ["agreement", "l.jsonl", "-j", "constitution:bad.yaml"],
        "bad.yaml: line 2, column 1: malformed YAML",
        files={**L, "bad.yaml": "principles: [\n"},
    ),
    Case(
        "agreement-judge-gold-missing",
        ["agreement", "l.jsonl", "-j", "gold:none"],
        "none: not a gold judge folder (no gold.json)",
        files=L,
    ),
    Case(
        "agreement-judge-base-missing",
        ["agreement", "l.jsonl", "-j", "similarity:base=none.jsonl"],
        "none.jsonl: no such file",
        files=L,
    ),
    Case(
        "agreement-resamples-low",
        [*AG, "--resamples", "10"],
        "Invalid value for '--resamples': Input should be greater than or equal to 100",
        files=L,
    ),
    Case("agreement-out-wrong-format", [*AG, "-o", "r.txt"], "r.txt: unknown output format '.txt'; use .json", files=L),
    Case(
        "agreement-out-is-a-folder", [*AG, "-o", "d"], "d: is a folder; --out takes a file name", files=L, dirs=("d",)
    ),
    Case(
        "agreement-out-over-run-best",
        [*AG, "-o", "runs/x/best.json"],
        "runs/x/best.json: tether's own file of the run",
        files={**L, **run_dir()},
    ),
    # --- tether gold fit ---------------------------------------------------------------------------------
    Case(
        "gold-fit-labels-missing",
        ["gold", "fit", "none.jsonl", "--label", "good", "-o", "g"],
        "none.jsonl: no such file",
    ),
    Case(
        "gold-fit-labels-folder",
        ["gold", "fit", "d", "--label", "good", "-o", "g"],
        "d: is a folder, expected a JSONL file",
        dirs=("d",),
    ),
    Case("gold-fit-labels-malformed", FIT, "l.jsonl: line 1: malformed JSON", files={"l.jsonl": '{"kind": "label"\n'}),
    Case(
        "gold-fit-no-label", ["gold", "fit", "l.jsonl", "-o", "g"], "tether gold fit: Missing option '--label'", files=L
    ),
    Case(
        "gold-fit-label-unknown",
        ["gold", "fit", "l.jsonl", "--label", "nope", "-o", "g"],
        "l.jsonl: no yes/no answers to 'nope'; questions answered: good",
        files=L,
    ),
    Case(
        "gold-fit-only-yes",
        FIT,
        "l.jsonl: 'good' has 2 yes and 0 no answers; a judge needs both",
        files={"l.jsonl": label_row("a", "yes") + label_row("b", "yes")},
    ),
    Case(
        "gold-fit-too-few-for-folds", FIT, "--folds 5 needs at least 5 of each (label more, or lower --folds)", files=L
    ),
    Case(
        "gold-fit-folds-one",
        [*FIT, "--folds", "1"],
        "Invalid value for '--folds': Input should be greater than or equal to 2",
        files=L,
    ),
    Case(
        "gold-fit-folds-huge",
        [*FIT, "--folds", "1000000000"],
        "--folds 1000000000 needs at least 1000000000 of each",
        files=L,
    ),
    Case(
        "gold-fit-features-unknown",
        [*FIT, "--features", "tfidf"],
        "--features 'tfidf': write minilm or hidden:MODEL",
        files=L,
    ),
    Case(
        "gold-fit-features-hidden-no-model",
        [*FIT, "--features", "hidden:"],
        "--features 'hidden:': write minilm or hidden:MODEL",
        files=L,
    ),
    Case(
        "gold-fit-out-is-a-file",
        [*FIT[:-1], "t.txt"],
        "t.txt: is a file; --out takes a folder for the gold judge",
        files=L,
    ),
    Case(
        "gold-fit-out-exists-without-force",
        FIT,
        "g: already holds a gold judge; pass --force to replace it",
        files={**L, "g/gold.json": GOLD},
    ),
    Case(
        "gold-fit-out-holds-foreign-files",
        [*FIT, "--force"],
        "g: holds files tether did not write (notes.txt)",
        files={**L, "g/notes.txt": "mine\n"},
    ),
    # --- tether gold score -------------------------------------------------------------------------------
    Case(
        "gold-score-no-gold",
        ["gold", "score", "none", "pc.jsonl", "-o", "o.jsonl"],
        "none: not a gold judge folder (no gold.json)",
        files={"pc.jsonl": PC},
    ),
    Case(
        "gold-score-gold-is-a-file",
        ["gold", "score", "t.txt", "pc.jsonl", "-o", "o.jsonl"],
        "t.txt: not a gold judge folder (no gold.json)",
        files={"pc.jsonl": PC},
    ),
    Case(
        "gold-score-gold-malformed",
        GS,
        "g/gold.json: cannot read (Expecting property name",
        files={**G, "g/gold.json": "{"},
    ),
    Case(
        "gold-score-gold-not-utf8",
        GS,
        "g/gold.json: cannot read ('utf-8' codec can't decode byte 0xff",
        files={**G, "g/gold.json": b"\xff\xfe{}"},
    ),
    Case(
        "gold-score-gold-missing-fields",
        GS,
        "g/gold.json: not a tether-gold/1 file (missing features, coef, intercept, scaler)",
        files={**G, "g/gold.json": '{"format": "tether-gold/1", "label": "good"}'},
    ),
    Case(
        "gold-score-gold-a-list",
        GS,
        "g/gold.json: not a tether-gold/1 file (expected a JSON object, got list)",
        files={**G, "g/gold.json": "[1, 2]"},
    ),
    Case(
        "gold-score-gold-a-number",
        GS,
        "g/gold.json: not a tether-gold/1 file (expected a JSON object, got int)",
        files={**G, "g/gold.json": "5"},
    ),  # was a TypeError traceback
    Case(
        "gold-score-texts-missing",
        ["gold", "score", "g", "none.jsonl", "-o", "o.jsonl"],
        "none.jsonl: no such file",
        files=G,
    ),
    Case(
        "gold-score-texts-folder",
        ["gold", "score", "g", "d.jsonl", "-o", "o.jsonl"],
        "d.jsonl: is a folder",
        files=G,
        dirs=("d.jsonl",),
    ),
    Case(
        "gold-score-texts-not-jsonl",
        ["gold", "score", "g", "t.txt", "-o", "o.jsonl"],
        "t.txt: a gold judge reads .jsonl rows with `prompt` and `completion`",
        files=G,
    ),
    Case(
        "gold-score-texts-no-completion",
        ["gold", "score", "g", "x.jsonl", "-o", "o.jsonl"],
        "x.jsonl: line 1: no `completion` field",
        files={**G, "x.jsonl": '{"text": "hi"}\n'},
    ),
    Case(
        "gold-score-texts-malformed",
        ["gold", "score", "g", "x.jsonl", "-o", "o.jsonl"],
        "x.jsonl: line 3: malformed JSON",
        files={**G, "x.jsonl": PC + '{"prompt": \n'},
    ),
    Case(
        "gold-score-texts-empty",
        ["gold", "score", "g", "x.jsonl", "-o", "o.jsonl"],
        "x.jsonl: no texts found",
        files={**G, "x.jsonl": ""},
    ),
    Case(
        "gold-score-out-wrong-format",
        [*GS[:-1], "o.xlsx"],
        "o.xlsx: unknown output format '.xlsx'; use .jsonl or .csv",
        files=G,
    ),
    Case("gold-score-out-is-the-texts", [*GS[:-1], "pc.jsonl"], "pc.jsonl: --out is the TEXTS file", files=G),
    Case(
        "gold-score-out-is-a-folder", [*GS[:-1], "d"], "d: is a folder; --out takes a file name", files=G, dirs=("d",)
    ),
    Case("gold-score-no-out", GS[:-2], "tether gold score: Missing option '--out'", files=G),
    Case("gold-unknown-subcommand", ["gold", "fitt"], "tether gold: No such command 'fitt'. Did you mean 'fit'?"),
    # --- tether serve (a case past the option checks pays ~4 s of imports) --------------------------------
    Case(
        "serve-port-in-use",
        ["serve", "c.yaml", "--port", "{port}"],
        "--port {port}: cannot listen there (Address already in use",
    ),
    Case(
        "serve-port-zero",
        ["serve", "c.yaml", "--port", "0"],
        "Invalid value for '--port': Input should be greater than or equal to 1",
    ),
    Case(
        "serve-port-huge",
        ["serve", "c.yaml", "--port", "70000"],
        "Invalid value for '--port': Input should be less than or equal to 65535",
    ),
    Case(
        "serve-window-zero",
        ["serve", "c.yaml", "--window", "0"],
        "Invalid value for '--window': Input should be greater than or equal to 1",
    ),
    Case("serve-max-body-zero", ["serve", "c.yaml", "--max-body-mb", "0"], "Invalid value for '--max-body-mb'"),
    Case("serve-max-wait-negative", ["serve", "c.yaml", "--max-wait-ms", "-1"], "Invalid value for '--max-wait-ms'"),
    Case(
        "serve-max-batch-not-a-number",
        ["serve", "c.yaml", "--max-batch", "lots"],
        "Invalid value for '--max-batch': Input should be a valid integer",
    ),
    Case(
        "serve-out-is-a-tune-run",
        ["serve", "c.yaml", "-o", "runs/x", "--port", "{free}"],
        "runs/x: holds a `tether tune` run; give --out another folder",
        files=run_dir(),
    ),
    # --- tether steer ------------------------------------------------------------------------------------
    Case("steer-method-unknown", [*ST, "--method", "push"], "--method 'push': write one of add, guide"),
    Case("steer-context-file-missing", ["steer", "@none.txt", "It rained.", *NOBODY], "none.txt: no such file"),
    Case(
        "steer-context-folder", ["steer", "@d", "It rained.", *NOBODY], "d: is a folder, expected a file", dirs=("d",)
    ),
    Case(
        "steer-passage-non-utf8",
        ["steer", "It was a day.", "@l1.txt", *NOBODY],
        "l1.txt: line 1: not UTF-8 text",
        files={"l1.txt": b"caf\xe9\n"},
    ),
    Case(
        "steer-passage-empty",
        ["steer", "It was a day.", "   ", *NOBODY],
        "PASSAGE: empty; give some text to steer with",
    ),
    Case(
        "steer-context-empty-file",
        ["steer", "@e.txt", "It rained.", *NOBODY],
        "CONTEXT (@e.txt): empty",
        files={"e.txt": "\n\n"},
    ),
    Case("steer-baseline-missing", [*ST, "--method", "add", "--baseline", "@none.txt"], "none.txt: no such file"),
    Case(
        "steer-layer-negative",
        [*ST, "--method", "add", "--layer", "-1"],
        "--layer -1: out of range; layers count from 0",
    ),
    Case(
        "steer-max-tokens-zero",
        [*ST, "--max-tokens", "0"],
        "Invalid value for '--max-tokens': Input should be greater than or equal to 1",
    ),
    Case(
        "steer-samples-negative",
        [*ST, "--samples", "-3"],
        "Invalid value for '--samples': Input should be greater than or equal to 1",
    ),
    Case(
        "steer-temperature-zero",
        [*ST, "--temperature", "0"],
        "Invalid value for '--temperature': Input should be greater than or equal to 0.01",
    ),
    Case("steer-candidates-zero", [*ST, "--candidates", "0"], "Invalid value for '--candidates'"),
    Case(
        "steer-alpha-not-a-number",
        [*ST, "--alpha", "strong"],
        "Invalid value for '--alpha': Input should be a valid number",
    ),
    Case("steer-out-wrong-format", [*ST, "-o", "o.txt"], "o.txt: unknown output format '.txt'; use .json"),
    Case("steer-out-is-a-folder", [*ST, "-o", "d"], "d: is a folder; --out takes a file name", dirs=("d",)),
    Case(
        "steer-out-over-run-finished",
        [*ST, "-o", "runs/x/finished.json"],
        "runs/x/finished.json: tether's own file of the run",
        files=run_dir(),
    ),
    # --- tether experiment (a case that reaches the arms' tune configs pays ~8 s of imports) --------------
    Case("experiment-config-missing", ["experiment", "none.yaml"], "none.yaml: no such file"),
    Case(
        "experiment-unknown-field",
        E,
        "e.yaml: line 7, column 9: colour: unknown field",
        files={**EXP, "e.yaml": EXPERIMENT + "colour: red\n"},
    ),
    Case("experiment-tune-missing", E, "e.yaml: tune:", files={"e.yaml": EXPERIMENT}),
    Case(
        "experiment-output-dir-a-file",
        [*E, "--set", "output_dir=t.txt"],
        "t.txt: is a file; give a folder for the experiment",
        files=EXP,
    ),  # was "t.txt/experiment.yaml: cannot write here (File exists)", after every check had passed
    Case(
        "experiment-arm-named-base",
        [*E, "--set", "arms={base: {}}"],
        "arm name 'base': letters, digits, _ . - only, and not 'base'",
        files=EXP,
    ),
    Case(
        "experiment-set-unclosed", [*E, "--set", "seeds=[0"], "--set 'seeds=[0': the value is not valid YAML", files=EXP
    ),
    Case(
        "experiment-jobs-zero",
        [*E, "--jobs", "0"],
        "Invalid value for '--jobs': Input should be greater than or equal to 1",
        files=EXP,
    ),
    Case(
        "experiment-gold-missing",
        [*E, "--set", "golds=[none]"],
        "golds: none: no such file or folder; a gold is a constitution YAML",
        files=EXP,
    ),  # said "gold_constitution takes ...", a field of tune configs, not of this file
    Case(
        "experiment-summary-never-run",
        [*E, "--summary"],
        "exp: no such folder; the experiment has not run yet",
        files=EXP,
    ),  # wrote exp/ with an empty summary
    # --- commands test_hostile.py covers thinly ------------------------------------------------------------
    Case("sample-config-folder", ["sample", "d"], "d: is a folder, expected a file", dirs=("d",)),
    Case(
        "sample-config-malformed",
        ["sample", "s.yaml"],
        "s.yaml: line 2, column 1: malformed YAML",
        files={"s.yaml": "prompts: [\n"},
    ),
    Case(
        "sample-output-over-a-run",
        ["sample", "s.yaml", "--set", "output_dir=runs/x"],
        "runs/x: holds files tether did not write (events.jsonl, metrics.jsonl, samples.jsonl); give output_dir an",
        files={**run_dir(), "s.yaml": SAMPLE_EMBEDDED},
    ),  # overwrote the run's config.yaml, then sampled into it
    Case(
        "sample-output-a-file",
        ["sample", "s.yaml", "--set", "output_dir=t.txt"],
        "t.txt: not a folder; give output_dir a folder",
        files={"s.yaml": SAMPLE_EMBEDDED},
    ),
    Case("audit-corpus-a-file", ["audit-corpus", "t.txt"], "t.txt: not a corpus directory (no meta.json)"),
    Case(
        "audit-corpus-port-negative",
        ["audit-corpus", "corpus", "--port", "-1"],
        "Invalid value for '--port': Input should be greater than or equal to 0",
        setup=_corpus,
    ),
    Case(
        "audit-corpus-decisions-damaged",
        ["audit-corpus", "corpus", "--port", "{free}"],
        "corpus/decisions.jsonl: line 1: malformed JSON",
        setup=_damaged_corpus,
    ),  # served a page that failed to load
    Case(
        "values-out-wrong-format",
        ["values", "runs/x", "--out", "v.txt"],
        "v.txt: unknown output format '.txt'; use .json",
        files=run_dir(**{"values/values.json": "[]"}),
    ),
    Case(
        "values-nearest-negative",
        ["values", "runs/x", "--nearest", "-2"],
        "Invalid value for '--nearest'",
        files=run_dir(),
    ),
    Case("sft-corpus-a-file", ["sft", "t.txt"], "t.txt: not a corpus directory (no meta.json)"),
    Case("audit-constitution-missing", ["audit", "none.yaml"], "none.yaml: no such file"),
    # --- tether deploy ---------------------------------------------------------------------------------------
    Case("deploy-config-missing", ["deploy", "none.yaml"], "none.yaml: no such file"),
    Case(
        "deploy-config-unknown-field",
        ["deploy", "d.yaml"],
        "d.yaml: line 2, column 8: bogus: unknown field",
        files={"d.yaml": "constitution: c.yaml\nbogus: 1\n"},
    ),
    Case(
        "deploy-rollback-on-not-a-detector",
        ["deploy", "d.yaml"],
        "d.yaml: rollback_on: 'nonsense' is not a detector",
        files={"d.yaml": "constitution: c.yaml\nrollback_on: [nonsense]\n"},
    ),
    Case("deploy-second-argument", ["deploy", "d.yaml", "v3"], "a second argument only follows `rollback`"),
    Case("deploy-rollback-no-version", ["deploy", "rollback"], "name the version to serve"),
    Case(
        "deploy-rollback-not-a-deployment",
        ["deploy", "rollback", "v1", "--deployment", "nope"],
        "nope: not a deployment folder (no deploy.yaml)",
    ),
]


def _free_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return str(s.getsockname()[1])


@pytest.mark.parametrize(
    "case",
    [pytest.param(c, id=c.id, marks=[pytest.mark.xfail(strict=True, reason=c.xfail)] if c.xfail else []) for c in MORE],
)
def test_more_hostile_input(case: Case, tmp_path: Path, request):
    if any("{free}" in a for a in case.args):  # a port nothing listens on, so the check after it is reached
        port = _free_port()
        case = dataclasses.replace(case, args=[a.replace("{free}", port) for a in case.args])
    test_hostile.test_hostile_input(case, tmp_path, request)


def command_paths() -> list[tuple[str, ...]]:
    """Every command and subcommand of the CLI, as the words that call it: ("score",), ("gold", "fit"), ..."""
    import typer

    from tether.cli import app

    def walk(command, path: tuple[str, ...]):
        subcommands = getattr(command, "commands", None)  # a group (typer vendors click: no isinstance on click.Group)
        if subcommands is None:
            yield path
            return
        for name, sub in subcommands.items():
            yield from walk(sub, (*path, name))

    return sorted(walk(typer.main.get_command(app), ()))


def test_every_command_has_hostile_cases():
    paths = command_paths()
    assert ("score",) in paths and ("gold", "fit") in paths, paths  # the walk reaches commands and sub-groups
    refusals = [c for c in [*test_hostile.CASES, *MORE] if c.rc == 2 and not c.xfail]
    per_path = Counter(p for c in refusals for p in paths if tuple(c.args[: len(p)]) == p)
    few = {" ".join(p): per_path[p] for p in paths if per_path[p] < 3}
    assert not few, f"commands with fewer than 3 hostile-input cases: {few}"
    assert len(refusals) >= 130, len(refusals)
    ids = [c.id for c in [*test_hostile.CASES, *MORE]]
    assert len(set(ids)) == len(ids), [i for i in ids if ids.count(i) > 1]
