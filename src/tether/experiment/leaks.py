"""A leak check: no evaluation prompt may be among the prompts a reward's or gold's labels were read on.

A gold fitted on labels of completions to prompt P has seen P: an evaluation on P then measures
how well the model pleases a judge that learned P, not how it does on a fresh prompt. Every gold
`tether gold fit` writes records the hashes of its labels' prompts (`labels.prompt_sha256`); an
older gold is checked through its labels file when that file is still where gold.json says (or
beside the gold), and named as unchecked otherwise.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from tether.errors import TetherError
from tether.infra import jsonl, progress
from tether.infra.texts import plain_text, prompt_hash, read_prompts, read_utf8


def gold_prompt_hashes(folder: Path) -> set[str] | None:
    """The hashes of the prompts a gold folder was fitted on; None when they cannot be known."""
    meta = json.loads(read_utf8(folder / "gold.json"))
    labels = meta.get("labels", {})
    if "prompt_sha256" in labels:
        return set(labels["prompt_sha256"])
    for candidate in (
        Path(labels.get("path", "")),
        folder / Path(labels.get("path", "")).name,
        folder.parent / Path(labels.get("path", "")).name,
    ):
        if candidate.is_file() and hashlib.sha256(candidate.read_bytes()).hexdigest() == labels.get("sha256"):
            return {prompt_hash(r.get("source", r).get("prompt") or "") for r in jsonl.read(candidate)}
    return None


def check_no_leak(eval_prompts: Path, golds: dict[str, Path]) -> list[str]:
    """Refuse (one line) an evaluation prompt a gold was fitted on; returns the golds that could not be checked.

    `golds`: where each gold is used (e.g. "golds[0]", "arm person: gold_reward.path") -> its folder."""
    wanted = {prompt_hash(p): plain_text(p) for p in read_prompts(eval_prompts)}
    unchecked = []
    for where, folder in golds.items():
        if not Path(folder).is_dir():
            continue  # a constitution gold reads no labels
        seen = gold_prompt_hashes(Path(folder))
        if seen is None:
            unchecked.append(f"{where} ({folder})")
            continue
        if leaked := sorted(h for h in wanted if h in seen):
            raise TetherError(
                f"{eval_prompts}: {len(leaked)} evaluation prompt(s) are among the prompts {where} "
                f"({folder}) was fitted on, e.g. {wanted[leaked[0]][:60]!r}: that is a leak; "
                f"evaluate on prompts no reward or gold has seen"
            )
    if unchecked:
        folders = sorted({str(golds[w.split(" (")[0]]) for w in unchecked})
        progress.note(
            f"leak check: cannot tell which prompts {len(folders)} gold(s) were fitted on (fitted before "
            f"gold.json recorded them, and the labels file is gone): {', '.join(folders)}"
        )
    return unchecked


def experiment_golds(config) -> dict[str, Path]:
    """Every gold an experiment's runs are paid or evaluated by: the evaluation's golds, and each arm's
    gold_constitution and gold_reward (path and `also`), as its tune config resolves them."""
    from tether.experiment.config import tune_config

    golds = {f"golds[{i}]": Path(g) for i, g in enumerate(config.golds) if not g.startswith("python:")}
    for arm, choice in config.arms.items():
        if choice.of is not None:
            continue
        tune = tune_config(config, arm, config.seeds[0])
        if tune.gold_constitution is not None:
            golds[f"arm {arm}: gold_constitution"] = Path(tune.gold_constitution)
        if tune.gold_reward.weight:
            for k, path in enumerate([tune.gold_reward.path, *tune.gold_reward.also]):
                golds[f"arm {arm}: gold_reward {'path' if k == 0 else f'also[{k - 1}]'}"] = Path(path)
    return golds
