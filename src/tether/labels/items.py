"""The samples a person labels, read from whatever tether wrote, each with a stable id and a hidden source.

    items = read_items("runs/cheerful")             # samples.jsonl (step 1..n) + base_samples.jsonl (step 0, base)
    items = read_items("runs/cheerful@step=21-30")  # only the late steps; also @arm=base, @alpha=0.5
    order = label_order(items, who="ana", seed=0)   # the person's order: random, the same on every reload

A SOURCE is a run directory or a blend sweep's folder (samples.jsonl, plus the base model's
base_samples.jsonl as step 0, arm "base"), a corpus directory (candidates.jsonl), or any JSONL
file whose records have prompt + completion (or prompt + completions, as base_samples.jsonl).
An item's id is a short sha256 of its file, prompt and completion: the same command gives the
same ids, so a reload resumes. Its source (file, record, run step, arm, scores) goes into the
labels file for later joins, and never to the page in label or compare mode: a person who sees
"step 30, reward 0.9" is no longer a blind reader.
"""

from __future__ import annotations

import hashlib
import random
import re
from dataclasses import dataclass, field
from pathlib import Path

from tether.errors import TetherError
from tether.infra import jsonl
from tether.infra.texts import plain_text

TEXT_FIELDS = ("prompt", "completion", "completions", "text")
FILTER = re.compile(r"^(\w+)=(.+)$")
RANGE = re.compile(r"^(-?\d+(?:\.\d+)?)-(-?\d+(?:\.\d+)?)$")


@dataclass(frozen=True)
class Item:
    id: str
    prompt: str
    completion: str
    source: dict = field(compare=False)

    def shown(self) -> dict:
        """What the page may see: the text, never the source (a step item: which part is the newest step)."""
        step = self.source.get("steps")
        newest = {"newest": {k: step[k] for k in ("k", "start", "end")}} if step else {}
        return {"id": self.id, "prompt": self.prompt, "completion": self.completion, **newest}


@dataclass(frozen=True)
class Pair:
    id: str
    prompt: str
    left: Item
    right: Item


def item_id(path: Path, prompt: str, completion: str) -> str:
    return hashlib.sha256(f"{path}\0{prompt}\0{completion}".encode()).hexdigest()[:12]


def read_items(source: str | Path) -> list[Item]:
    """Every distinct sample of a SOURCE (optionally PATH@field=value or PATH@field=lo-hi), in file order."""
    path, key, wanted = split_filter(str(source))
    if path.is_dir():
        files = _folder_files(path)
    elif path.exists():
        files = [path]
    else:
        raise TetherError(f"{path}: no such file or folder")
    items, seen = [], set()
    for file in files:
        for item in _file_items(file.absolute()):
            if item.id not in seen and (key is None or _matches(item.source.get(key), wanted)):
                seen.add(item.id)
                items.append(item)
    if not items:
        what = f" match {key}={wanted}" if key else ""
        raise TetherError(f"{source}: no samples{what}; check the SOURCE (a run, sweep or corpus folder, or a JSONL file)")
    return items


def split_filter(source: str) -> tuple[Path, str | None, str | None]:
    """'runs/a@step=21-30' -> (Path('runs/a'), 'step', '21-30'); a path with no such suffix is left whole."""
    head, sep, tail = source.rpartition("@")
    match = FILTER.match(tail) if sep else None
    if match is None or Path(source).exists():
        return Path(source), None, None
    return Path(head), match[1], match[2]


def _matches(value, wanted: str) -> bool:
    if value is None:
        return False
    span = RANGE.match(wanted)
    if span and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(span[1]) <= value <= float(span[2])
    try:
        return float(value) == float(wanted)
    except (TypeError, ValueError):
        return str(value) == wanted


def _folder_files(folder: Path) -> list[Path]:
    if (folder / "candidates.jsonl").exists():
        return [folder / "candidates.jsonl"]
    files = [folder / name for name in ("samples.jsonl", "base_samples.jsonl") if (folder / name).exists()]
    if not files:
        raise TetherError(f"{folder}: no samples here; expected a run or blend sweep folder (samples.jsonl), "
                          f"a corpus folder (candidates.jsonl), or give a JSONL file of prompt + completion")
    return files


def _file_items(path: Path) -> list[Item]:
    items = []
    corpus = path.name == "candidates.jsonl"
    for n, row in enumerate(jsonl.read(path, missing_ok=False), 1):
        prompt, completion, completions = row.get("prompt"), row.get("completion"), row.get("completions")
        if isinstance(prompt, list) and all(isinstance(m, dict) and isinstance(m.get("content"), str) for m in prompt):
            prompt = plain_text(prompt)  # a conversation (a deployment's chat request), shown with its roles
        meta = {k: v for k, v in row.items() if k not in TEXT_FIELDS}
        if isinstance(prompt, str) and isinstance(completions, list) and all(isinstance(c, str) for c in completions):
            # a base_samples file: the base model's completions, step 0 of the run they belong to
            items += [Item(item_id(path, prompt, c), prompt, c, {"file": str(path), "record": n, "sample": i,
                                                                "kind": "base", "arm": "base", "step": 0})
                      for i, c in enumerate(completions)]
        elif isinstance(prompt, str) and isinstance(completion, str):
            kind, arm = _kind(row, corpus)
            items.append(Item(item_id(path, prompt, completion), prompt, completion,
                              {"file": str(path), "record": n, "kind": kind, "arm": arm, **meta}))
        else:
            raise TetherError(f"{path}: record {n}: expected text fields prompt and completion "
                              f"(or prompt and completions, as in base_samples.jsonl)")
    return items


def _kind(row: dict, corpus: bool) -> tuple[str, str]:
    if corpus:
        return "corpus", str(row.get("status", "corpus"))
    if "alpha" in row:
        return "sweep", f"alpha={row['alpha']:g}" if isinstance(row["alpha"], (int, float)) else str(row["alpha"])
    if "step" in row:
        return "run", str(row.get("arm", "policy"))
    if "version" in row:  # a deployment's interactions.jsonl
        return "deploy", str(row["version"])
    return "file", str(row.get("arm", "file"))


def step_items(items: list[Item], how: str = "sentences", max_steps: int | None = None) -> list[Item]:
    """Each sample as its steps, for process supervision's labels: step k shows the prompt and steps 1..k.

    The item's completion is the prefix through step k, so no later step ever reaches the page, and a
    gold fitted on these labels (`tether gold fit`) reads (prompt, prefix), as the step judge does
    (judge/steps.py). The source keeps the sample's own and adds `steps`: the sample's id, k, how many,
    the newest step's character offsets and the splitter."""
    from tether.infra.steps import check_how, split_steps

    check_how(how)
    out = []
    for item in items:
        steps = split_steps(item.completion, how, max_steps)
        for k, step in enumerate(steps, 1):
            prefix = item.completion[: step.end]
            out.append(Item(hashlib.sha256(f"{item.id}\0step {k}\0{prefix}".encode()).hexdigest()[:12], item.prompt,
                            prefix, {**item.source, "steps": {"item": item.id, "k": k, "of": len(steps),
                                                              "start": step.start, "end": step.end, "split": how}}))
    if not out:
        raise TetherError(f"--steps {how}: no sample has a step (every completion is blank); nothing to label")
    return out


def label_order(items: list[Item], who: str, seed: int = 0, limit: int | None = None) -> list[Item]:
    """A random order for this person, the same on every reload; `limit` picks the same subset for everyone.

    Step items (`step_items`) are ordered by sample, and a sample's steps come in order, 1..k: a reader
    judges step k before any later step of that sample reaches the page."""
    steps = [i for i in items if i.source.get("steps")]
    if steps:
        samples: dict[str, list[Item]] = {}
        for i in items:
            samples.setdefault(i.source["steps"]["item"] if i.source.get("steps") else i.id, []).append(i)
        order = label_order([Item(key, "", "", {}) for key in samples], who, seed, limit)
        return [i for o in order for i in sorted(samples[o.id], key=lambda i: (i.source.get("steps") or {}).get("k", 0))]
    chosen = sorted(items, key=lambda i: i.id)
    if limit is not None and limit < len(chosen):
        chosen = random.Random(seed).sample(chosen, limit)
    random.Random(f"{seed}/{who}").shuffle(chosen)
    return chosen


def compare_pairs(first: list[Item], second: list[Item], who: str, seed: int = 0,
                  limit: int | None = None) -> list[Pair]:
    """Pairs of completions for the same prompt, one from each source, in a random order with random sides.

    A prompt with k completions in one source and m in the other gives min(k, m) pairs, matched
    at random (the same for everyone), unless every item has a `pair` field (an experiment's
    draw): then each item of the first source meets the second's item of the same prompt and
    pair. `limit` picks the same pairs for everyone, while the order and which side each source
    is shown on are seeded per person.
    """
    if all("pair" in i.source for i in [*first, *second]):  # an experiment's draws: the same prompt and seed
        keyed = {(i.prompt, str(i.source["pair"])): i for i in second}
        matched = [(a, keyed[a.prompt, str(a.source["pair"])]) for a in first if (a.prompt, str(a.source["pair"])) in keyed]
        return _shown_pairs(matched, who, seed, limit)
    by_prompt: dict[str, list[Item]] = {}
    for item in second:
        by_prompt.setdefault(item.prompt, []).append(item)
    mine: dict[str, list[Item]] = {}
    for item in first:
        if item.prompt in by_prompt:
            mine.setdefault(item.prompt, []).append(item)
    matched = []
    for prompt, left in mine.items():
        right = list(by_prompt[prompt])
        random.Random(f"{seed}/{prompt}").shuffle(right)
        matched += [(a, b) for a, b in zip(left, right) if a.id != b.id]
    return _shown_pairs(matched, who, seed, limit)


def _shown_pairs(matched: list[tuple[Item, Item]], who: str, seed: int, limit: int | None) -> list[Pair]:
    """The matched pairs, a subset the same for everyone, in this person's order with random sides."""
    if not matched:
        raise TetherError("compare: the first two sources share no prompt; give two sources sampled on the same prompts")
    matched.sort(key=lambda ab: (ab[0].id, ab[1].id))
    if limit is not None and limit < len(matched):
        matched = random.Random(seed).sample(matched, limit)
    random.Random(f"{seed}/{who}").shuffle(matched)
    pairs = []
    for a, b in matched:
        pair_id = hashlib.sha256(f"{a.id}\0{b.id}".encode()).hexdigest()[:12]
        flip = random.Random(f"{seed}/{who}/{pair_id}").random() < 0.5
        pairs.append(Pair(pair_id, a.prompt, *((b, a) if flip else (a, b))))
    return pairs
