"""A blind reading of an experiment, built by the tool: batches that mix every arm and the base.

    tether experiment CONFIG --read     # first: writes OUTPUT_DIR/reading/ (batches, the key, the instructions)
    tether experiment CONFIG --read     # later: takes the readers' answers into reading/labels.jsonl

Every evaluated text (every arm's, every seed's and the base's) is an item. A batch holds all the
items of a few prompts, so every batch holds every arm and the base on the same prompts, shuffled;
about `rereads` of each batch are items of other batches (a second reader's answer: the agreement
figure). Then pairs: on each prompt, a text of `compare_arm` against a text of each other source,
sides shuffled, no text in two pairs. A reader sees only ids and texts (batches/NN.jsonl); which arm
wrote what stays in key.json. Readers write answers/NN.jsonl:

    {"read": "03-017", "on_task": "yes", "cheerful": "no", "fluent": "yes", "good": "no"}
    {"pair": "03-p05", "choice": "left"}

and the next `--read` appends them to reading/labels.jsonl in the labeling page's format, as reader
`reader-bNN` (one fresh reader a batch), once: answers already taken are not taken twice.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from tether.errors import TetherError
from tether.experiment.config import QUESTIONS, ExperimentConfig
from tether.infra import atomic, jsonl

__all__ = ["QUESTIONS", "build", "folder", "questions", "take_answers"]


def questions(config: ExperimentConfig) -> tuple[str, ...]:
    """The questions read: a built reading's own (its key), else the config's spec's, else the default."""
    key = folder(config) / "key.json"
    if key.exists():
        return tuple(json.loads(key.read_text(encoding="utf-8"))["questions"])
    if config.reading.spec is None:
        return QUESTIONS
    from tether.labels.spec import load_spec

    return tuple(q.name for q in load_spec(config.reading.spec).questions)


def folder(config: ExperimentConfig) -> Path:
    return config.output_dir / "reading"


def sources(config: ExperimentConfig) -> list[tuple[str, int | None, Path]]:
    """(arm, seed, samples file) of every evaluated text, the base first; refused while a run is not evaluated."""
    from tether.experiment.grid import status

    missing = [f"{arm}-s{seed}" for (arm, seed), state in status(config).items() if state != "done"]
    base = config.output_dir / "base" / "samples.jsonl"
    if missing or not base.exists():
        raise TetherError(f"{config.output_dir}: {len(missing)} run(s) not evaluated yet ({', '.join(missing[:4]) or 'base'}"
                          f"{', ...' if len(missing) > 4 else ''}); a reading mixes every arm, so run the experiment first")
    return [("base", None, base)] + [(arm, seed, config.run_dir(arm, seed) / "eval" / "samples.jsonl")
                                     for arm, seed in config.runs()]


def build(config: ExperimentConfig) -> Path:
    """reading/: items.jsonl (texts and sources), key.json, batches/NN.jsonl, README.md. Written once."""
    from tether.labels.items import item_id

    out = folder(config)
    if (out / "key.json").exists():
        raise TetherError(f"{out}: the reading is built already (its batches may be out with readers)")
    if out.exists():
        raise TetherError(f"{out}: exists, and is not a reading tether built (no key.json); move it away")
    settings = config.reading
    items, by_prompt = {}, {}
    for arm, seed, path in sources(config):
        for s in jsonl.read(path):
            iid = item_id(path, s["prompt"], s["completion"])
            items[iid] = {"item": iid, "prompt": s["prompt"], "completion": s["completion"],
                          "source": {"arm": arm, "seed": seed, "draw": s.get("draw"), "file": str(path)}}
            by_prompt.setdefault(s["prompt"], []).append(iid)
    rng = random.Random(settings.seed)
    prompts = list(by_prompt)
    rng.shuffle(prompts)
    per = max(1, round(settings.batch_items / max(1, len(items) / len(prompts))))
    groups = [prompts[i:i + per] for i in range(0, len(prompts), per)]
    key, batches = {"reads": {}, "pairs": {}, "questions": list(questions(config))}, []
    for b, group in enumerate(groups):
        own = [i for p in group for i in by_prompt[p]]
        others = [i for g in groups if g is not group for p in g for i in by_prompt[p]]
        again = rng.sample(others, min(len(others), round(settings.rereads * len(own))))
        reads = [(i, False) for i in own] + [(i, True) for i in again]
        rng.shuffle(reads)
        rows = []
        for n, (iid, reread) in enumerate(reads):
            rid = f"{b:02d}-{n:03d}"
            key["reads"][rid] = {"item": iid, "reread": reread}
            rows.append({"read": rid, "prompt": items[iid]["prompt"], "completion": items[iid]["completion"]})
        rows += _pairs(config, b, group, by_prompt, items, key, rng)
        batches.append(rows)
    with atomic.folder(out) as building:
        atomic.write_records(building / "items.jsonl", list(items.values()))
        for b, rows in enumerate(batches):
            atomic.write_records(building / "batches" / f"{b:02d}.jsonl", rows)
        (building / "answers").mkdir()
        atomic.write_text(building / "README.md", _instructions(config, len(batches)))
        atomic.write_json(building / "key.json", key)
    return out


def _pairs(config, b: int, group: list[str], by_prompt: dict, items: dict, key: dict, rng) -> list[dict]:
    """On each prompt: `compare_arm`'s texts against one text of every other source, each text in one pair."""
    arm = config.reading.compare_arm or next(a for a, c in config.arms.items() if c.kind == "tune")
    rows = []
    for prompt in group:
        ids = by_prompt[prompt]
        mine = [i for i in ids if items[i]["source"]["arm"] == arm]
        rng.shuffle(mine)
        for other in ["base", *(a for a in config.arms if a != arm)]:
            theirs = [i for i in ids if items[i]["source"]["arm"] == other]
            if not mine or not theirs:
                continue
            left, right = mine.pop(), rng.choice(theirs)
            if rng.random() < 0.5:
                left, right = right, left
            pid = f"{b:02d}-p{len([k for k in key['pairs'] if k.startswith(f'{b:02d}-')]):02d}"
            key["pairs"][pid] = {"left": left, "right": right}
            rows.append({"pair": pid, "prompt": prompt, "left": items[left]["completion"],
                         "right": items[right]["completion"]})
    return rows


def _instructions(config: ExperimentConfig, batches: int) -> str:
    asked, guide = questions(config), config.reading.instructions
    names = ", ".join(asked[:-1]) + f" and {asked[-1]}" if len(asked) > 1 else asked[0]
    example = json.dumps({"read": "00-017", **{q: "yes" if i % 2 == 0 else "no" for i, q in enumerate(asked)}})
    return f"""# Reading of {config.output_dir.name}: {batches} batches

The instructions are {guide} (what {names} mean, with examples).
Each batch, batches/NN.jsonl, is read by one reader who sees only that file and those instructions.
A line with `read` is an item: answer {names}, each "yes" or "no".
A line with `pair` shows two texts after one prompt: choose "left" or "right", the one
that is better as {guide} defines good (no ties).
Write answers/NN.jsonl, one line per answer, then run `tether experiment CONFIG --read`:

    {example}
    {{"pair": "00-p05", "choice": "left"}}

The key (key.json, items.jsonl) says which model wrote each text: a reader never opens it.
"""


def take_answers(config: ExperimentConfig) -> tuple[int, list[str]]:
    """Append every new answer in answers/*.jsonl to labels.jsonl; returns (answers taken, batches unanswered)."""
    from tether.labels.items import Item
    from tether.labels.store import LabelsFile

    out = folder(config)
    key = json.loads((out / "key.json").read_text(encoding="utf-8"))
    items = {r["item"]: Item(r["item"], r["prompt"], r["completion"], r["source"]) for r in jsonl.read(out / "items.jsonl")}
    labels = LabelsFile(out / "labels.jsonl")
    done = set(labels.latest())
    compared = {(r["who"], r["left"], r["right"]) for r in labels.records() if r.get("kind") == "compare"}
    taken, missing = 0, []
    for batch in sorted((out / "batches").glob("*.jsonl")):
        answers = out / "answers" / batch.name
        if not answers.exists():
            missing.append(batch.stem)
            continue
        for n, row in enumerate(jsonl.read(answers), 1):
            taken += _take(row, f"{answers}: line {n}", key, items, labels, done, compared, f"reader-b{batch.stem}")
    return taken, missing


def _take(row: dict, where: str, key: dict, items: dict, labels, done: set, compared: set, default_who: str) -> int:
    who = default_who  # one reader a batch: the batch names the reader
    if "read" in row:
        entry = key["reads"].get(row["read"])
        if entry is None:
            raise TetherError(f"{where}: read {row['read']!r} is not an item of this reading")
        taken = 0
        for q in key["questions"]:
            answer = row.get(q)
            if answer not in ("yes", "no", "skip"):
                raise TetherError(f"{where}: {q}: {answer!r}; answer yes or no")
            if (entry["item"], q, who) not in done:
                labels.add_label(items[entry["item"]], q, answer, who)
                done.add((entry["item"], q, who))
                taken += 1
        return taken
    if "pair" in row:
        entry = key["pairs"].get(row["pair"])
        if entry is None or row.get("choice") not in ("left", "right"):
            raise TetherError(f"{where}: pair {row.get('pair')!r} choice {row.get('choice')!r}: a pair of this reading, "
                              f"and choice left or right")
        if (who, entry["left"], entry["right"]) in compared:
            return 0
        left, right = items[entry["left"]], items[entry["right"]]
        labels.add_compare(left.prompt, left, right, row["choice"], who)
        compared.add((who, entry["left"], entry["right"]))
        return 1
    raise TetherError(f"{where}: a line needs `read` (an item's answers) or `pair` (a choice)")
