"""Process supervision's first half: steps with offsets, and a step judge that cannot see what follows a step."""

import json

import pytest
from test_cli import one_line_error, tether

from tether.errors import TetherError
from tether.infra.steps import split_steps


def spans(text, how="sentences", max_steps=None):
    steps = split_steps(text, how, max_steps)
    assert all(text[s.start:s.end] == s.text for s in steps)  # offsets index the text
    return [s.text for s in steps]


def test_sentences_lines_patterns_and_functions_mark_steps(tmp_path, monkeypatch):
    assert spans(' "Dr. Smith is here!" she said. They ate 3.5 cakes in the U.S. and') == [
        '"Dr. Smith is here!" she said. ', "They ate 3.5 cakes in the U.S. and"]  # the cut sentence stays a step
    assert spans(" Yes. Yes. Yes. yes") == ["Yes. ", "Yes. ", "Yes. ", "yes"]  # repeats keep their own offsets
    assert spans("one\n\ntwo three\nfour", "lines") == ["one", "two three", "four"]
    assert spans("a, b; c.", "re:[^,;.]+[,;.]?") == ["a,", " b;", " c."]
    assert spans(" One. Two. Three. Four.", max_steps=2) == ["One. ", "Two. Three. Four."]  # the rest merged
    assert split_steps("   ") == []
    (tmp_path / "mysplit.py").write_text("def halves(text):\n    return [(0, len(text) // 2), (len(text) // 2, len(text))]\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert spans("abcdef", "python:mysplit:halves") == ["abc", "def"]
    (tmp_path / "badsplit.py").write_text("def over(text):\n    return [(0, 4), (2, 6)]\n")
    for how, message in [("words", "write sentences, lines"), ("re:(", "not a regular expression"),
                         ("re:x*", "matches an empty string"), ("python:nosuch:f", "nosuch"),
                         ("python:badsplit:over", "steps overlap")]:
        with pytest.raises(TetherError, match=message):
            split_steps("abcdef", how)
    with pytest.raises(TetherError, match="max_steps 0"):
        split_steps("a. b.", max_steps=0)


def test_a_step_is_judged_blind_to_every_later_step_and_the_ending(tiny_gemma, tiny_tokenizer, examples_dir):
    from tether.judge.evaluator import Evaluator
    from tether.judge.steps import constitution_scorer, score_steps

    judge = Evaluator(tiny_gemma, str(examples_dir / "cheerful.yaml"), tokenizer=tiny_tokenizer, batch_size=3)
    prompt = "The children went to the park."
    same = " They played on the swings. The sun was warm."
    completions = [same + " Then it rained and everyone went home sad.",
                   same + " A dragon ate the town! The end, forever and ever.",
                   same + " yes yes yes yes yes yes yes yes yes yes yes yes yes"]
    steps = score_steps(constitution_scorer(judge), [prompt] * 3, completions)
    assert [len(s) for s in steps] == [3, 4, 3]
    for other in steps[1:]:  # rewriting what follows cannot move the first two steps' scores
        assert [s["score"] for s in other[:2]] == pytest.approx([s["score"] for s in steps[0][:2]], abs=1e-4)
    assert len({round(s[-1]["score"], 4) for s in steps}) == 3  # ...while the endings are judged, and differ
    whole = judge.score([prompt + c for c in completions]).total()
    assert [s[-1]["score"] for s in steps] == pytest.approx(list(whole), abs=1e-4)  # the last step: the whole text


def test_score_steps_writes_offsets_and_a_summary_and_refuses_bad_splitters(tmp_path, capsys, tiny_model_dir,
                                                                           examples_dir):
    texts = tmp_path / "texts.jsonl"
    texts.write_text(json.dumps({"prompt": "A girl found a key.", "completion": " She smiled. She opened the door and"})
                     + "\n" + json.dumps({"text": "One line only"}) + "\n")
    out = tmp_path / "scores.jsonl"
    run = tether("score", examples_dir / "cheerful.yaml", texts, "--model", tiny_model_dir, "--steps", "sentences",
                 "--out", out, "-q")
    assert run.returncode == 0, run.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [[(s["text"], s["start"], s["end"]) for s in r["steps"]] for r in rows] == [
        [("She smiled. ", 1, 13), ("She opened the door and", 13, 36)], [("One line only", 0, 13)]]
    assert all(isinstance(s["score"], float) for r in rows for s in r["steps"]) and "total" in rows[0]
    assert "never after" in run.stdout and "mean score" in run.stdout
    one_line_error(capsys, ["score", str(examples_dir / "cheerful.yaml"), str(texts), "--steps", "re:(",
                            "--out", str(tmp_path / "x.jsonl")], "not a regular expression")
    one_line_error(capsys, ["score", str(examples_dir / "cheerful.yaml"), str(texts), "--steps", "lines",
                            "--out", str(tmp_path / "x.csv")], "use a .jsonl file")
    assert not (tmp_path / "x.jsonl").exists() and not (tmp_path / "x.csv").exists()


@pytest.mark.parametrize("build", ["gemma", "llama"])
def test_a_cache_grown_step_by_step_scores_as_judging_each_prefix_afresh(build, tiny_tokenizer, examples_dir):
    from conftest import build_tiny_gemma, build_tiny_llama

    from tether.judge.evaluator import Evaluator
    from tether.judge.steps import constitution_scorer, score_steps

    model = build_tiny_gemma(len(tiny_tokenizer), sliding_window=4096) if build == "gemma" else \
        build_tiny_llama(len(tiny_tokenizer))
    model.config.max_position_embeddings = 2048  # the few-shot prefix is ~540 tiny-tokenizer tokens
    judge = Evaluator(model, str(examples_dir / "cheerful.yaml"), tokenizer=tiny_tokenizer, batch_size=3, debias=True)
    prompts = ["The children went to the park.", "Grandma opened the box and", "It rained.", "A dog barked."]
    completions = [" They played on the swings. The sun was warm. Then it rained!",
                   " found a letter. It was from 1952, and it said: come home. She smiled.",
                   " yes yes yes yes yes yes yes yes yes yes",  # one step
                   "   "]  # no step
    grown = score_steps(constitution_scorer(judge), prompts, completions, "re:\\S+\\s*", max_steps=6)
    fresh = score_steps(lambda p, c: judge.score([a + b for a, b in zip(p, c)]).total(), prompts, completions,
                        "re:\\S+\\s*", max_steps=6)
    assert [len(s) for s in grown] == [6, 6, 6, 0] and [len(s) for s in fresh] == [6, 6, 6, 0]
    for g, f in zip(grown, fresh):  # every step's score, debiased (two probes a principle), as read afresh
        assert [s["score"] for s in g] == pytest.approx([s["score"] for s in f], abs=1e-4)
    # a word merged across a cut (the prefix's trailing space joins the next word in the longer prefix) is
    # read as the prefix alone tokenizes it: the stale cache positions are masked, not reused
    texts = ["Once upon a time", "Once upon a time there"]
    from tether.judge.prefixes import score_prefixes

    assert score_prefixes(judge, texts, [[5, 10, 16], [4, 9, 22]]).total() == pytest.approx(
        judge.score(["Once ", "Once upon ", texts[0], "Once", "Once upon", texts[1]]).total(), abs=1e-4)
