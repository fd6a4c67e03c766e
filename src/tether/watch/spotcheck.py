"""A person's spot check: every N steps, k of the step's completions go to a person's queue.

The run appends them to RUN_DIR/spotcheck.jsonl (step, prompt, completion); a person
answers them on the labeling page, whenever they like, while the run goes on:

    tether label RUN_DIR/spotcheck.jsonl --spec SPEC --out RUN_DIR/labels.jsonl

SPEC is the run's own label spec: `spot_check.spec` when the config names one (its questions must
include `questions`), else RUN_DIR/label_spec.yaml, which the run writes from `questions`. The
command printed when the first check is queued (and by a refit that waits) names it.

Each step the `person` detector reads RUN_DIR/labels.jsonl and counts the spot-check items
a person answered "no" to (on any of `questions`); at `min_no` it trips, and with
`on_hack: stop` the run stops at the person's word. A person is the one judge the policy
cannot have learned to please; a few answers cost a minute every N steps.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from tether.errors import TetherError
from tether.infra import jsonl
from tether.infra.rundir import RunDir

QUEUE = "spotcheck.jsonl"
LABELS = "labels.jsonl"
SPEC = "label_spec.yaml"  # the spec a run writes from `questions` when its config names none


class SpotCheckConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    every: int = Field(0, ge=0, description="queue completions for a person every N steps (0: off; 3 is a minute of "
                       "reading per 3 steps, and a person saw the main job go off task within steps 3-5)")
    k: int = Field(4, ge=1, description="completions queued each time, drawn at random (seeded) from that step's batch: "
                   "4 a check, so one off-task half of a batch is seen with probability 15/16")
    by: Literal["random", "uncertain", "disagree"] = Field(
        "random", description="which k of the step's batch: random (seeded), uncertain (the gold judge least sure: "
        "P(yes) nearest 1/2) or disagree (the train judge and the gold furthest apart); labels/pick.py's ranking, "
        "spread across prompts, near-duplicates passed over; uncertain and disagree need gold_constitution")
    questions: list[str] = Field(default_factory=lambda: ["on_task", "good"],
                                 description="label questions whose `no` answer counts against the run (names in the spec)")
    min_no: int = Field(2, ge=1, description="trip `person` when at least this many queued completions were answered no: "
                        "2, so one slip of the hand does not stop a run")
    spec: Path | None = Field(None, description="the label spec a person answers the queue with (e.g. "
                              "examples/labels_cheerful.yaml; it must ask `questions`); default: "
                              "RUN_DIR/label_spec.yaml, written by the run from `questions`")

    @model_validator(mode="after")
    def _spec_asks_the_questions(self):
        if self.spec is not None:
            from tether.labels.spec import load_spec

            try:
                names = load_spec(self.spec).names()
            except TetherError as e:
                raise ValueError(f"spot_check.spec: {e}") from None
            missing = [q for q in self.questions if q not in names]
            if missing:
                raise ValueError(f"spot_check.spec: {self.spec} does not ask {', '.join(missing)} "
                                 f"(spot_check.questions); it asks {', '.join(names)}")
        return self


def pick(completions: Sequence[tuple[str, str]], k: int, seed: int, step: int) -> list[tuple[str, str]]:
    """k (prompt, completion) pairs of a step's batch, the same for the same seed and step."""
    rng = random.Random(seed * 100003 + step)
    return rng.sample(list(completions), min(k, len(completions)))


def choose(rows: Sequence[dict], config: SpotCheckConfig, seed: int, step: int, vectors=None) -> list[tuple[str, str]]:
    """The k (prompt, completion) pairs of a step's batch a person reads, as `config.by` says (`pick` when random)."""
    pairs = [(r["prompt"], r["completion"]) for r in rows]
    if config.by == "random":
        return pick(pairs, config.k, seed, step)
    from tether.labels.items import Item
    from tether.labels.pick import pick as pick_items

    items = [Item(str(i), p, c, {"train": r.get("train")}) for i, (r, (p, c)) in enumerate(zip(rows, pairs))]
    p_yes = 1 / (1 + np.exp(-np.array([r["gold"] for r in rows], dtype=float)))
    chosen = pick_items(items, config.k, config.by, p_yes=p_yes, seed=seed * 100003 + step, embedder=None,
                        vectors=vectors)
    return [(i.prompt, i.completion) for i in chosen]


def queue(run_path: Path, step: int, chosen: Sequence[tuple[str, str]]) -> None:
    jsonl.append(run_path / QUEUE, [{"step": step, "prompt": p, "completion": c} for p, c in chosen])


def command(run_path: Path) -> str:
    """What to run to answer the queue (printed once, when the first check is written), with the run's own spec."""
    return f"tether label {run_path / QUEUE} --spec {spec_path(run_path)} --out {run_path / LABELS}"


def spec_path(run_path: Path) -> Path:
    """The run's label spec: `spot_check.spec` of its config.yaml, else the RUN_DIR/label_spec.yaml it wrote."""
    try:
        spec = ((RunDir(run_path).config().get("spot_check") or {}).get("spec"))
    except TetherError:  # no readable config.yaml: the hint still names the spec the run would write
        spec = None
    return Path(spec) if spec else Path(run_path) / SPEC


def write_spec(run_path: Path, config: SpotCheckConfig, more: Sequence[str] = ()) -> Path | None:
    """RUN_DIR/label_spec.yaml, asking `questions` (and `more`, e.g. the refit's question), when the config
    names no spec of its own; None when it does."""
    import yaml

    from tether.infra import atomic

    if config.spec is not None:
        return None
    names = list(dict.fromkeys([*config.questions, *more]))
    questions = [{"name": n, "question": f"Is the completion {n.replace('_', ' ')}?",
                  "help": "a spot-check question of this run; a no counts against it"} for n in names]
    header = ("# Written by `tether tune` from spot_check.questions; to word the questions yourself, write a spec\n"
              "# (see examples/labels_cheerful.yaml) and name it in spot_check.spec.\n")
    path = Path(run_path) / SPEC
    atomic.write_text(path, header + yaml.safe_dump({"questions": questions}, sort_keys=False))
    return path


def person_noes(run_path: Path, questions: Sequence[str]) -> list[int]:
    """The steps of the queued completions a person answered no to (on any of `questions`), one per completion.

    Only items of the current queue count (matched by step, prompt and completion, so a moved
    run still matches and a rewound step's old items do not). The labels file is read with
    the one labels reader (latest answer per person, majority over people, skips dropped); a
    torn last line, as while a page appends, is skipped.
    """
    from tether.labels.agreement import read_labels

    path = run_path / LABELS
    if not path.exists() or not any(r.get("kind") == "label" for r in jsonl.read(path)):
        return []
    queued = {(r.get("step"), r.get("prompt"), r.get("completion")) for r in jsonl.read(run_path / QUEUE)}
    labels = read_labels(path)
    noes: dict[str, int] = {}
    for question in questions:
        for item, yes in labels.answers.get(question, {}).items():
            source = labels.sources[item]
            key = (source.get("step"), source.get("prompt"), source.get("completion"))
            if not yes and key in queued:
                noes[item] = int(source["step"])
    return sorted(noes.values())


def try_person_noes(run_path: Path, questions: Sequence[str]) -> tuple[list[int], str | None]:
    """`person_noes` for a live run: a damaged labels file is a warning, not a crash of the training."""
    try:
        return person_noes(run_path, questions), None
    except TetherError as e:
        return [], str(e)
