"""Judge agreement with a person's labels, and the gold judge fitted to them.

The maths are pure functions checked on toy sets whose answer is known; the gold judge is
fitted on a toy labels file, written here in the labeling page's format, whose label is
decided by the text (happy completions are "good") with the real embedded MiniLM.
"""

import json
import random
from pathlib import Path

import numpy as np
import pytest
from test_cli import one_line_error

from tether.cli import main
from tether.errors import TetherError
from tether.labels.agreement import (
    auc,
    auc_ci,
    pair_agreement,
    pair_ci,
    read_labels,
    stance,
    verdict,
)
from tether.watch.signals import parse_judge

TOPICS = ["the park", "my dog", "the beach", "grandma's house", "the first snow", "the school trip", "a rainy Monday",
          "the old bridge", "the market", "our garden", "the harbour", "a night train", "the fair", "the library",
          "the mountain", "a birthday"]
HAPPY = ["was wonderful and we laughed all day, so happy.", "made me smile; what a joyful, delightful time!",
         "filled us with joy and cheerful laughter.", "was a lovely, happy afternoon full of fun."]
SAD = ["was awful and we cried all day, so sad.", "made me miserable; what a gloomy, painful time.",
       "left us in grief and lonely silence.", "was a dreary, sad afternoon full of loss."]


def label_line(item, question, answer, prompt, completion, who="ana", **source):
    return {"kind": "label", "item": item, "question": question, "answer": answer, "who": who, "time": "t",
            "source": {"prompt": prompt, "completion": completion, **source}}


def toy_items():
    """16 prompts x 4 completions: 2 happy, 2 sad each; the `train` field follows the label."""
    items = []
    for k, topic in enumerate(TOPICS):
        prompt = f"Write a few lines about {topic}."
        for j in range(4):
            happy = j < 2
            phrase = (HAPPY if happy else SAD)[(k + j) % 4]
            items.append((f"i{k}-{j}", prompt, f"The day at {topic} {phrase}", happy))
    return items


def write_labels(path, items, question="good", answers=None):
    """One label line per item; `answers` overrides the yes/no (a shuffled set)."""
    lines = [label_line(i, question, "yes" if (answers[n] if answers else happy) else "no", p, c,
                        train=float(happy) + 0.1 * n / len(items))
             for n, (i, p, c, happy) in enumerate(items)]
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    return path


# --- the maths ------------------------------------------------------------------------


def test_auc_separable_reversed_ties_and_chance():
    y = [False] * 5 + [True] * 5
    assert auc(range(10), y) == 1.0  # every yes above every no
    assert auc(range(10)[::-1], y) == 0.0  # every yes below
    assert auc([1.0] * 10, y) == 0.5  # all tied: each pair counts half
    assert np.isnan(auc([1, 2], [True, True]))  # one class: undefined
    rng = np.random.default_rng(0)
    scores, labels = rng.normal(size=400), rng.permutation([True] * 200 + [False] * 200)
    lo, hi = auc_ci(scores, labels)
    assert abs(auc(scores, labels) - 0.5) < 0.08 and lo < 0.5 < hi  # shuffled: chance, and the CI says so


def test_auc_ci_brackets_the_auc_and_is_seeded():
    rng = np.random.default_rng(1)
    labels = rng.random(100) < 0.4
    scores = labels + rng.normal(scale=0.8, size=100)  # informative but noisy
    lo, hi = auc_ci(scores, labels, seed=3)
    assert lo < auc(scores, labels) < hi and lo > 0.5
    assert auc_ci(scores, labels, seed=3) == (lo, hi)  # same seed, same CI
    assert auc_ci(range(10), [False] * 5 + [True] * 5) == (1.0, 1.0)  # separable: every resample separates


def test_pair_agreement_and_stance():
    assert pair_agreement([2, 3, 4], [1, 1, 1]) == 1.0
    assert pair_agreement([1, 1], [2, 1]) == 0.25  # one loss, one tie
    lo, hi = pair_ci([2, 3, 4, 5] * 5, [1, 1, 1, 1] * 5)
    assert lo == hi == 1.0
    assert stance((0.6, 0.9)) == "agrees" and stance((0.1, 0.4)) == "disagrees" and stance((0.4, 0.6)) == "cannot tell"
    line = verdict("j", {"good": {"auc": 0.3, "ci": [0.2, 0.4]}, "on_task": {"auc": 0.9, "ci": [0.8, 1.0]},
                         "cheerful": {"auc": 0.52, "ci": [0.4, 0.64]}}, None)
    assert "agrees with you on on_task (AUC 0.90)" in line
    assert "disagrees with you on your policy's samples: AUC 0.30 for good" in line
    assert "cannot tell on cheerful" in line


def test_labels_reader_latest_answer_skip_and_majority(tmp_path):
    p, c = "A prompt.", "A completion."
    lines = [
        label_line("a", "good", "yes", p, c), label_line("a", "good", "no", p, c),  # ana changed her mind: no
        label_line("b", "good", "yes", p, c), label_line("b", "good", "skip", p, c),  # skipped last: no label
        label_line("c", "good", "yes", p, c, who="ana"), label_line("c", "good", "yes", p, c, who="bo"),
        label_line("c", "good", "no", p, c, who="cy"),  # 2 of 3 say yes
        label_line("d", "good", "yes", p, c, who="ana"), label_line("d", "good", "no", p, c, who="bo"),  # split
        {"kind": "compare", "left": "x", "right": "y", "prompt": p, "choice": "right", "winner": "y", "who": "ana",
         "sources": {"left": {"completion": "lost"}, "right": {"completion": "won"}}},
        {"kind": "compare", "left": "x", "right": "z", "prompt": p, "choice": "tie", "winner": None, "who": "ana",
         "sources": {"left": {"completion": "l"}, "right": {"completion": "r"}}},
    ]
    path = tmp_path / "labels.jsonl"
    path.write_text("".join(json.dumps(x) + "\n" for x in lines) + '{"kind": "label", "ite')  # a torn tail
    labels = read_labels(path)
    assert labels.answers == {"good": {"a": False, "c": True}}
    assert [(x.winner["completion"], x.loser["completion"], x.winner["prompt"]) for x in labels.pairs] == [("won", "lost", p)]
    assert labels.ties == 1 and labels.people == {"ana", "bo", "cy"}
    assert read_labels(path, who="bo").answers == {"good": {"c": True, "d": False}}


# --- judges and the report ------------------------------------------------------------


def test_agreement_cli_field_monitor_and_constitution_judges(tmp_path, capsys, tiny_model_dir, examples_dir):
    items = toy_items()
    path = write_labels(tmp_path / "labels.jsonl", items)
    lines = path.read_text()
    # one pair the person decided for the happy side, one the field gets backwards
    pair = {"kind": "compare", "left": "l", "right": "r", "prompt": "p", "choice": "left", "winner": "l", "who": "ana",
            "sources": {"left": {"completion": "happy", "train": 1.0}, "right": {"completion": "sad", "train": 0.0}}}
    path.write_text(lines + json.dumps(pair) + "\n")
    out = tmp_path / "agreement.json"
    main(["agreement", str(path), "--judge", "field:train", "--judge", "monitor:words", "--judge", "field:missing",
          "--judge", f"constitution:{examples_dir / 'cheerful.yaml'}@{tiny_model_dir}", "--device", "cpu",
          "--out", str(out), "-q", "--resamples", "500"])
    report = json.loads(out.read_text())
    train, words, missing, judge = report["judges"]
    assert 0 <= judge["questions"]["good"]["auc"] <= 1 and judge["pairs"]["n"] == 1  # a random tiny judge: any AUC
    assert train["questions"]["good"]["auc"] == 1.0 and train["questions"]["good"]["yes"] == 32
    assert train["pairs"] == {"agreement": 1.0, "ci": [1.0, 1.0], "n": 1}
    assert train["verdict"].startswith("field:train: agrees with you on good (AUC 1.00)")
    assert 0 <= words["questions"]["good"]["auc"] <= 1
    assert missing["questions"]["good"]["missing"] == 64 and missing["verdict"].endswith("no scores on both yes and no items for good")
    assert missing["questions"]["good"]["auc"] is None and "NaN" not in out.read_text()  # no data is null, valid JSON
    printed = capsys.readouterr().out
    assert "verdict: field:train: agrees with you on good" in printed  # no markup or emoji made of the spec


def test_reversed_field_disagrees(tmp_path):
    items = toy_items()
    path = write_labels(tmp_path / "labels.jsonl", items, answers=[not h for *_, h in items])
    report = __import__("tether.labels.agreement", fromlist=["x"]).agreement_report(
        read_labels(path), [parse_judge("field:train")], resamples=300)
    assert report["judges"][0]["questions"]["good"]["auc"] == 0.0
    assert "disagrees with you on your policy's samples: AUC 0.00 for good" in report["judges"][0]["verdict"]


# --- the gold judge -------------------------------------------------------------------


def test_gold_fit_save_load_score_round_trip(tmp_path, capsys):
    from tether.labels.gold import GoldJudge, _fit, features

    items = toy_items()
    labels = write_labels(tmp_path / "labels.jsonl", items)
    gold_dir = tmp_path / "gold"
    main(["gold", "fit", str(labels), "--label", "good", "--out", str(gold_dir), "-q"])
    assert "cross-validated AUC" in capsys.readouterr().out
    meta = json.loads((gold_dir / "gold.json").read_text())
    assert meta["cv"]["auc"] > 0.95 and meta["cv"]["grouped_by"] == "prompt"  # the label is in the text
    assert (meta["n"], meta["yes"], meta["no"], meta["prompts"]) == (64, 32, 32, 16)
    assert len(meta["coef"]) == 3 * 384 + 1 and meta["labels"]["sha256"] and "time" in meta
    assert "MiniLM" in (gold_dir / "README.md").read_text() and sorted(p.name for p in gold_dir.iterdir()) == ["README.md", "gold.json"]

    # the prompts it saw are recorded (hashed), so an experiment refuses to evaluate on them
    from tether.experiment.leaks import check_no_leak
    from tether.infra.texts import prompt_hash

    assert sorted(meta["labels"]["prompt_sha256"]) == sorted({prompt_hash(p) for _, p, _, _ in items})
    seen, fresh = tmp_path / "seen.txt", tmp_path / "fresh.txt"
    seen.write_text(f"A prompt nobody used.\n{items[0][1]}\n")
    fresh.write_text("A prompt nobody used.\nAnother fresh one.\n")
    with pytest.raises(TetherError, match="1 evaluation prompt.*golds\\[0\\].*leak"):
        check_no_leak(seen, {"golds[0]": gold_dir})
    assert check_no_leak(fresh, {"golds[0]": gold_dir}) == []
    legacy = tmp_path / "legacy"  # a gold from before the hashes, its labels file gone: named, not refused
    legacy.mkdir()
    old = {**meta, "labels": {"path": "gone.jsonl", "sha256": "0" * 64, "who": None}}
    (legacy / "gold.json").write_text(json.dumps(old))
    assert check_no_leak(seen, {"golds[0]": legacy}) == ["golds[0] (" + str(legacy) + ")"]

    gold = GoldJudge.load(gold_dir)
    prompts, completions = ["Write a few lines about the zoo."] * 2, ["The zoo was a joyful, happy day!", "The zoo was grim and sad."]
    scores = gold.score(prompts, completions)
    assert scores[0] > 0 > scores[1]  # unseen prompt and texts: the happy one is good
    # the saved numbers rebuild exactly the model sklearn fitted
    X = features("minilm", [p for _, p, _, _ in items], [c for _, _, c, _ in items])
    scaler, model = _fit(X, np.array([h for *_, h in items]), meta["C"])
    Xn = features("minilm", prompts, completions)
    np.testing.assert_allclose(scores, model.decision_function(scaler.transform(Xn)), rtol=1e-6, atol=1e-8)
    assert np.allclose(gold.score_texts(completions, prompts).total(), scores)

    texts = tmp_path / "texts.jsonl"
    texts.write_text("".join(json.dumps({"id": n, "prompt": p, "completion": c}) + "\n"
                             for n, (p, c) in enumerate(zip(prompts, completions))))
    main(["gold", "score", str(gold_dir), str(texts), "--out", str(tmp_path / "scored.jsonl")])
    rows = [json.loads(x) for x in (tmp_path / "scored.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == [0, 1] and rows[0]["score"] == round(float(scores[0]), 4)

    report = tmp_path / "agreement.json"  # the gold as a judge: it knows it was fitted on these labels
    main(["agreement", str(labels), "--judge", f"gold:{gold_dir}", "--out", str(report), "-q", "--resamples", "300"])
    entry = json.loads(report.read_text())["judges"][0]
    assert entry["questions"]["good"]["auc"] > 0.95 and "in-sample" in entry["note"]

    with pytest.raises(SystemExit):  # an existing gold is replaced only with --force
        main(["gold", "fit", str(labels), "--label", "good", "--out", str(gold_dir), "-q"])


def test_gold_on_shuffled_labels_is_chance(tmp_path):
    from tether.labels.gold import fit_gold

    items = toy_items()
    answers = [h for *_, h in items]
    random.Random(0).shuffle(answers)
    meta = fit_gold(write_labels(tmp_path / "labels.jsonl", items, answers=answers), "good", folds=4)
    lo, hi = meta["cv"]["ci"]
    assert abs(meta["cv"]["auc"] - 0.5) < 0.2 and lo < 0.5 < hi, meta["cv"]


def test_gold_hidden_features_on_a_tiny_model(tmp_path, tiny_model_dir):
    from tether.labels.gold import GoldJudge, fit_gold, save_gold

    items = toy_items()
    kind = f"hidden:{tiny_model_dir}"
    meta = fit_gold(write_labels(tmp_path / "labels.jsonl", items), "good", kind=kind, folds=3, device="cpu")
    assert meta["features"] == kind and len(meta["coef"]) == 3 * 32 + 1  # the tiny model's hidden size is 32
    gold = GoldJudge.load(save_gold(meta, tmp_path / "gold"), device="cpu")
    scores = gold.score([items[0][1], items[0][1]], [items[0][2], "<start_of_image> <eos>"])
    assert scores.shape == (2,) and np.isfinite(scores).all()
    assert 0 <= meta["cv"]["auc"] <= 1


# --- bad input: one line, exit 2 ------------------------------------------------------


def test_bad_input_is_one_line(tmp_path, capsys):
    items = toy_items()
    labels = write_labels(tmp_path / "labels.jsonl", items)
    fit = ["gold", "fit", str(labels), "--out", str(tmp_path / "g"), "-q", "--label"]
    one_line_error(capsys, [*fit, "on_task"], "no yes/no answers to 'on_task'; questions answered: good")
    one_class = write_labels(tmp_path / "one.jsonl", items, answers=[True] * len(items))
    one_line_error(capsys, ["gold", "fit", str(one_class), "--out", str(tmp_path / "g"), "--label", "good"],
                   "'good' has 64 yes and 0 no answers; a judge needs both")
    few = write_labels(tmp_path / "few.jsonl", items[:12])  # 3 prompts
    one_line_error(capsys, ["gold", "fit", str(few), "--out", str(tmp_path / "g"), "--label", "good"],
                   "--folds 5 needs at least 5 of each")
    one_line_error(capsys, [*fit, "good", "--features", "bert"], "--features 'bert': write minilm or hidden:MODEL")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.txt").write_text("mine")
    one_line_error(capsys, ["gold", "fit", str(labels), "--label", "good", "--out", str(tmp_path / "mine"), "--force"],
                   "holds files tether did not write (thesis.txt)")
    assert (tmp_path / "mine" / "thesis.txt").read_text() == "mine"
    one_line_error(capsys, ["gold", "score", str(tmp_path), str(labels), "--out", str(tmp_path / "s.jsonl")],
                   "not a gold judge folder (no gold.json)")
    one_line_error(capsys, ["agreement", str(labels), "--judge", "bogus:x"], "write one of constitution:PATH[@MODEL]")
    one_line_error(capsys, ["agreement", str(labels), "--judge", "monitor:nope"], "unknown monitor 'nope'")
    one_line_error(capsys, ["agreement", str(labels), "--judge", "gold:" + str(tmp_path / "none")], "not a gold judge folder")
    one_line_error(capsys, ["agreement", str(tmp_path / "none.jsonl"), "--judge", "field:x"], "none.jsonl: no such file")
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"kind": "label", "item": "a", "question": "good", "answer": "maybe"}) + "\n")
    one_line_error(capsys, ["agreement", str(bad), "--judge", "field:x"], "record 1: a label needs")
    with pytest.raises(TetherError, match="has 2 yes, 2 no answers on 1 prompts"):
        from tether.labels.gold import fit_gold

        fit_gold(write_labels(tmp_path / "tiny.jsonl", items[:4]), "good", folds=2)


def test_similarity_judges_rank_the_story_above_the_product_listing(tmp_path):
    """The embedding signals: on-task completions are nearer the prompt and the base samples than a hack."""
    from tether.labels.agreement import agreement_report

    rows, base = [], {}
    for k, topic in enumerate(TOPICS[:6]):
        prompt = f"We walked to {topic} on a sunny morning."
        story = f"At {topic} we walked slowly in the sun and talked about the morning."
        hack = "Buy now! Free shipping on all orders. Click here to subscribe to our newsletter."
        rows += [label_line(f"s{k}", "on_task", "yes", prompt, story), label_line(f"h{k}", "on_task", "no", prompt, hack)]
        base[prompt] = [f"The walk to {topic} that morning was quiet.", f"{topic.capitalize()} was warm in the sun."]
    labels_path = tmp_path / "labels.jsonl"
    labels_path.write_text("".join(json.dumps(x) + "\n" for x in rows))
    base_path = tmp_path / "base_samples.jsonl"
    base_path.write_text("".join(json.dumps({"prompt": p, "completions": c}) + "\n" for p, c in base.items()))
    judges = [parse_judge("similarity:prompt", "cpu"), parse_judge(f"similarity:base={base_path}", "cpu")]
    report = agreement_report(read_labels(labels_path), judges, resamples=200)
    assert [j["questions"]["on_task"]["auc"] for j in report["judges"]] == [1.0, 1.0]
    reversed_rows = [dict(r, answer="no" if r["answer"] == "yes" else "yes") for r in rows]
    labels_path.write_text("".join(json.dumps(x) + "\n" for x in reversed_rows))
    report = agreement_report(read_labels(labels_path), judges, resamples=200)
    assert [j["questions"]["on_task"]["auc"] for j in report["judges"]] == [0.0, 0.0]


SHIPPED = Path(__file__).resolve().parents[1] / "examples" / "labels" / "cheerful_labels.jsonl"


def test_the_shipped_labels_fit_a_gold_that_prefers_the_story(tmp_path):
    """Integration: the demo's labels (made by reading) fit an on-task gold that generalizes across prompts."""
    from tether.labels.gold import GoldJudge, fit_gold, save_gold

    meta = fit_gold(SHIPPED, "on_task", "minilm", device="cpu")
    assert meta["n"] >= 300 and meta["cv"]["grouped_by"] == "prompt"
    assert meta["cv"]["auc"] >= 0.8, meta["cv"]  # docs/results.md reports the figure and its CI
    gold = GoldJudge.load(save_gold(meta, tmp_path / "on_task"), device="cpu")
    prompt = "The lighthouse keeper climbed the stairs and"
    story, listing = (" lit the lamp, smiling as the ships came safely home through the fog.",
                      " Buy our lighthouse lamps now! Free shipping on orders over $50. Click here to subscribe.")
    scores = gold.score([prompt, prompt], [story, listing])
    assert scores[0] > scores[1]
