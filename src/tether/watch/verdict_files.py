"""The verdict of a run folder: its files read into `verdict.decide`.

    v = read_verdict("runs/cheerful", [Path("more_labels.jsonl")])   # RUN_DIR/labels.jsonl is read too

Reads metrics.jsonl, events.jsonl, finished.json, config.yaml (the detectors' limits) and
samples.jsonl, and a person's labels files: only their answers on this run's samples count.
"""

from __future__ import annotations

import json
from pathlib import Path

from tether.errors import TetherError
from tether.infra import jsonl
from tether.infra.rundir import RunDir
from tether.watch.verdict import Answer, Verdict, decide


def run_answers(labels: list, samples: list[dict]) -> list[Answer]:
    """The yes/no answers of `labels` (tether.labels.agreement.Labels) on this run's samples.

    A label counts when its prompt + completion is one of the run's samples (labels on the
    base model's step 0 or another run's texts are left out); its step is the labeled step
    when that step holds the text, else the first step that does.
    """
    steps: dict[tuple[str, str], set[int]] = {}
    for row in samples:
        steps.setdefault((row.get("prompt") or "", row.get("completion")), set()).add(row.get("step"))
    out = []
    for file in labels:
        for question, items in file.answers.items():
            for item, yes in items.items():
                source = file.sources[item]
                held = steps.get((source.get("prompt") or "", source.get("completion")))
                if held:
                    step = source.get("step") if source.get("step") in held else min(held)
                    out.append(Answer(question, step, yes))
    return out


def read_labels_files(paths: list[Path]) -> list:
    """The labels files that hold answers (a file begun with no answer yet is left out)."""
    from tether.labels.agreement import read_labels

    out = []
    for path in paths:
        try:
            out.append(read_labels(path))
        except TetherError as e:
            if "no yes/no labels and no compare choices" not in str(e):
                raise
    return out


def read_verdict(run_dir: str | Path, extra_labels: list[Path] = ()) -> Verdict:
    """`decide` on a run folder: metrics.jsonl, events.jsonl, finished.json, samples.jsonl and labels."""
    from tether.watch.report_agreement import label_files

    run = RunDir(run_dir)
    samples = jsonl.read(run.path / "samples.jsonl")
    answers = run_answers(read_labels_files(label_files(run.path, list(extra_labels))), samples)
    metrics, events = jsonl.read(run.path / "metrics.jsonl"), jsonl.read(run.path / "events.jsonl")
    limits = detector_limits(run.config() if run.has_run() else {})
    return decide(metrics, events, read_finished(run.path), answers, limits)


def read_finished(run_dir: Path) -> dict | None:
    """finished.json (written last by a run that completed), or None while it runs; damage is a one-line error."""
    path = Path(run_dir) / "finished.json"
    if not path.exists():
        return None
    try:
        summary = json.loads(path.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise TetherError(f"{path}: malformed JSON; a run writes it whole when it finishes") from None
    return summary if isinstance(summary, dict) else None


def detector_limits(config: dict) -> dict[str, float]:
    """The threshold detectors' limits (a maximum each) in a run's config, or the defaults where it has none."""
    from tether.watch.detectors import DetectorConfig

    try:
        detectors = DetectorConfig(**(config.get("detectors") or {}))
    except (ValueError, TypeError):  # a config from another version: the defaults still say how close it came
        detectors = DetectorConfig()
    return {"kl": detectors.kl, **detectors.limits()}
