"""Labels where they teach most: `tether label --pick N --by ...` ranks a pool by a gold, spreads it, and records why."""

import json

import numpy as np
import pytest
from test_cli import one_line_error, tether

from tether.labels.items import Item, item_id, read_items
from tether.labels.store import LabelsFile


@pytest.fixture(scope="module")
def gold(tmp_path_factory):
    from tether.labels.gold import fit_gold, save_gold

    folder = tmp_path_factory.mktemp("gold")
    start = LabelsFile(folder / "start.jsonl")
    for i in range(12):
        prompt, completion = f"Story {i % 6} began.", ("a happy day with friends" if i % 2 else "sad cold rain") + f" {i}"
        item = Item(item_id(folder / "start.jsonl", prompt, completion), prompt, completion, {"file": "start"})
        start.add_label(item, "good", "yes" if i % 2 else "no", "ana")
    save_gold(fit_gold(start.path, "good", "minilm"), folder / "gold")
    return folder / "gold"


@pytest.fixture
def pool(tmp_path):
    who = ["The fox", "My aunt", "A robot", "The baker", "Two kids", "An old sailor", "The mayor", "A cat"]
    what = ["laughed and played all day in the sun.", "lost the keys in the cold storm and cried.",
            "counted the rows of a table of contents.", "sang happily by the fire with friends."]
    rows = [{"prompt": f"Opening {p}.", "completion": f" {who[p]} {what[(p + k) % 4]}", "train": float((p * 3 + k) % 5 - 2)}
            for p in range(8) for k in range(3)]
    rows.append({**rows[0], "completion": rows[0]["completion"] + "!"})  # a near-duplicate of the first
    path = tmp_path / "pool.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_uncertain_disagree_and_random_picks_are_spread_and_recorded(pool, gold):
    from tether.labels.gold import GoldJudge
    from tether.labels.pick import pick

    items = read_items(pool)
    p = 1 / (1 + np.exp(-GoldJudge.load(gold).score([i.prompt for i in items], [i.completion for i in items])))
    chosen = pick(items, 6, "uncertain", gold)
    assert len(chosen) == 6 and len({i.prompt for i in chosen}) == 6  # one a prompt before a second from any
    first = chosen[0].source["pick"]
    assert first["by"] == "uncertain" and first["rank"] == 1 and "gold P(yes)" in first["why"]
    assert abs(first["p_yes"] - 0.5) == pytest.approx(np.min(np.abs(p - 0.5)), abs=1e-4)  # the least sure first

    disagree = pick(items, 3, "disagree", gold)
    judge = 1 / (1 + np.exp(-np.array([i.source["train"] for i in items])))
    assert abs(disagree[0].source["pick"]["p_yes"] - judge[[i.id for i in items].index(disagree[0].id)]) == \
        pytest.approx(np.max(np.abs(judge - p)), abs=1e-4)

    a, b = pick(items, 5, "random", seed=3), pick(items, 5, "random", seed=3)
    assert [i.id for i in a] == [i.id for i in b] and len({i.prompt for i in a}) == 5

    same_prompt = [i for i in items if i.prompt == "Opening 0."]  # 4 texts, two of them near-duplicates
    assert len(same_prompt) == 4
    two = pick(same_prompt, 3, "random", seed=0)
    texts = [i.completion.rstrip("!") for i in two]
    assert len(set(texts)) == 3  # the near-duplicate was passed over while others remained
    assert len(pick(items[:2], 5, "uncertain", gold)) == 2  # a pool smaller than N: all of it


def test_the_page_session_shows_only_the_picked_and_the_labels_keep_why(pool, gold, tmp_path):
    from tether.labels.pick import pick
    from tether.labels.server import Session
    from tether.labels.spec import load_spec

    spec = tmp_path / "spec.yaml"
    spec.write_text("questions:\n  - {name: good, question: 'Is it good?'}\n")
    session = Session([str(pool)], tmp_path / "labels.jsonl", load_spec(spec), who="ana",
                      choose=lambda items: pick(items, 4, "uncertain", gold))
    state = session.state()
    assert len(state["items"]) == 4 and all(set(i) == {"id", "prompt", "completion", "answers"} for i in state["items"])
    session.answer({"item": state["items"][0]["id"], "question": "good", "answer": "yes"})
    record = json.loads((tmp_path / "labels.jsonl").read_text().splitlines()[0])
    assert record["source"]["pick"]["by"] == "uncertain" and "p_yes" in record["source"]["pick"]


def test_list_and_bad_picks(pool, gold, tmp_path, capsys, examples_dir):
    run = tether("label", pool, "--pick", "3", "--by", "uncertain", "--gold", gold, "--list")
    assert run.returncode == 0, run.stderr
    rows = [json.loads(line) for line in run.stdout.splitlines()]
    assert len(rows) == 3 and set(rows[0]) == {"prompt", "completion", "why", "p_yes", "rank", "by"}
    spec = examples_dir / "labels_cheerful.yaml"
    out = str(tmp_path / "l.jsonl")
    for args, expected in [(["--pick", "0", "--list"], "--pick 0: must be at least 1"),
                           (["--pick", "3", "--by", "disagree", "--list"], "needs the gold's P(yes)"),
                           (["--pick", "3", "--by", "sideways", "--list"], "--by 'sideways'"),
                           (["--pick", "3", "--gold", str(tmp_path / "none"), "--list"], "no such folder"),
                           (["--list"], "add --pick"),
                           (["--pick", "3", "--by", "flagged", "--gold", str(gold), "--list"], "no detector fired"),
                           (["--pick", "3", "--gold", str(gold), "--spec", str(examples_dir / "labels_reading.yaml"),
                             "--out", out, "--mode", "compare"], "does not apply to --mode compare")]:
        one_line_error(capsys, ["label", str(pool), *args], expected)
    bad_spec = tmp_path / "other.yaml"
    bad_spec.write_text("questions:\n  - {name: fluent, question: 'Is it fluent?'}\n")
    one_line_error(capsys, ["label", str(pool), "--pick", "3", "--gold", str(gold), "--spec", str(bad_spec), "--out", out],
                   "it predicts 'good', not a question of the spec")
    assert spec.exists() and not (tmp_path / "l.jsonl").exists()
