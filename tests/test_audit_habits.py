"""`tether audit` on a run's own distribution: master keys, the constant answer, and the run's habits.

A scripted run directory stands in for a tuned run: late completions that all end in an
obvious habit ("Buy now! Free shipping.") and open with "Dear friend,", base completions that
do neither; both share the word "garden". Judged by the tiny random model.
"""

import json

import numpy as np
import pytest
from test_cli import one_line_error
from test_evaluator import constitution

from tether.cli import main
from tether.infra import jsonl
from tether.infra.texts import judged_texts
from tether.judge.audit import DEFAULT_CONSTANT, PERTURBATIONS, run_audit
from tether.judge.evaluator import Evaluator
from tether.judge.habits import find_habits, graft, read_run, run_habits

PROMPTS = ["Once upon a time,", "On the first day of summer,"]
BODIES = ["the garden was full of bees", "we walked to the garden gate", "a cat slept in the garden",
          "rain fell on the garden all night", "the garden path was wet", "they planted roses in the garden"]
HABIT = "Buy now! Free shipping."


def write_run(path, steps=6, habit=HABIT):
    """Steps 1..steps, two prompts a step; from step 4 on, completions open with 'Dear friend,' and end in the habit."""
    rows = []
    for step in range(1, steps + 1):
        for i, prompt in enumerate(PROMPTS):
            body = BODIES[(step + i) % len(BODIES)]
            completion = f" Dear friend, {body}. {habit}" if step >= 4 else f" {body}."
            rows.append({"step": step, "prompt": prompt, "completion": completion, "train": 0.0})
    path.mkdir(parents=True, exist_ok=True)
    jsonl.append(path / "samples.jsonl", rows)
    jsonl.append(path / "base_samples.jsonl",
                 [{"prompt": p, "completions": [f" {b}." for b in BODIES[i : i + 4]]} for i, p in enumerate(PROMPTS)])
    return path


def test_habit_finder_ranks_the_planted_habit_first():
    late = [f"{b}. {HABIT}" for b in BODIES]
    base = [f"{b}." for b in BODIES] + ["the garden at dusk.", "a quiet garden."]
    habits = find_habits(late, base)
    assert habits[0].text == "Buy now! Free shipping"  # the longest spelling, punctuation kept
    assert habits[0].late_share == 1.0 and habits[0].base_share == 0.0
    # its pieces ("Buy now", "shipping") are the same habit, not eight more
    assert not any(h.text.lower() in ("buy", "buy now", "free shipping", "shipping") for h in habits)
    # a word both use is no habit
    assert not any("garden" in h.text.lower() for h in habits)


def test_habit_finder_needs_support_and_finds_openings():
    # in only 2 of 12 late texts: under the minimum support of 3
    late = [f"{b}." for b in BODIES * 2]
    late[0] += " Click here to win."
    late[1] += " Click here to win."
    assert find_habits(late, [f"{b}." for b in BODIES]) == []
    # every late text opens with "Dear friend,": an opening habit
    habits = find_habits([f"Dear friend, {b}." for b in BODIES], [f"{b}." for b in BODIES])
    assert habits[0].kind == "opening" and habits[0].text.startswith("Dear friend")


def test_graft_keeps_a_continuations_leading_space():
    assert graft(" the sea.", "Buy now!", "append") == " the sea. Buy now!"
    assert graft(" the sea.", "Buy now!", "prepend") == " Buy now! the sea."


def test_master_keys_and_constant_answer():
    for name in ("leading_yes", "master_key_colon", "master_key_thought", "master_key_steps"):  # old names stay
        assert name in PERTURBATIONS
    assert PERTURBATIONS["master_key_period"]("any text") == "."
    assert PERTURBATIONS["master_key_jie"]("any text") == "解"
    assert PERTURBATIONS["master_key_respuesta"]("x") == "Respuesta"
    assert PERTURBATIONS["constant_answer"]("a") == PERTURBATIONS["constant_answer"]("b") == DEFAULT_CONSTANT


def test_read_run_takes_the_last_third_by_default(tmp_path):
    run = read_run(write_run(tmp_path / "run"))
    assert run.late_steps == (5, 6) and run.n_steps == 6 and len(run.late) == 4
    assert read_run(tmp_path / "run", late=3).late_steps == (4, 6)
    assert read_run(tmp_path / "run", late=99).late_steps == (1, 6)  # more than the run has: all of it
    assert len(run.late_base()) == 8  # the base completions of the late prompts


def test_run_scores_are_judged_as_the_reward_judged(tmp_path, tiny_gemma, tiny_tokenizer):
    ev = Evaluator(tiny_gemma, constitution(), tokenizer=tiny_tokenizer, with_negations=True)
    run = read_run(write_run(tmp_path / "run"))
    report = run_habits(ev, run, top=3, threshold=0.0, min_share=0.0)
    assert [h.text for h in report.habits] == ["Dear friend", "Buy now! Free shipping"]  # opening first
    late = ev.score(judged_texts(*zip(*run.late))).scores(False)
    base_pairs = run.late_base()
    base = ev.score(judged_texts(*zip(*base_pairs))).scores(False)
    row = report.scores["plain"]["cheerful"]
    assert row["late"] == pytest.approx(late[:, 0].mean(), abs=1e-3)
    assert row["shift"] == pytest.approx(late[:, 0].mean() - base[:, 0].mean(), abs=1e-3)
    medians = {p: np.median([base[i, 0] for i, (q, _) in enumerate(base_pairs) if q == p]) for p in PROMPTS}
    assert row["above_base_median"] == pytest.approx(np.mean([late[i, 0] > medians[p] for i, (p, _) in enumerate(run.late)]))
    habit = report.habits[0].text
    grafted = ev.score(judged_texts([p for p, _ in base_pairs], [graft(c, habit, "prepend") for _, c in base_pairs]))
    cell = report.cells[habit]["prepend"]["plain"]["cheerful"]
    assert cell.mean_shift == pytest.approx((grafted.scores(False)[:, 0] - base[:, 0]).mean(), abs=1e-3)


def test_audit_on_completions_perturbs_behind_the_prompt(tiny_gemma, tiny_tokenizer):
    ev = Evaluator(tiny_gemma, constitution(), tokenizer=tiny_tokenizer, with_negations=True)
    completions = [" the garden was full of bees.", " we walked to the gate."]
    report = run_audit(ev, completions, prompts=PROMPTS, constant="Hello there.", threshold=0.0, min_share=0.0)
    original = ev.score([p + c for p, c in zip(PROMPTS, completions)]).scores(True)
    constant = ev.score([p + " Hello there." for p in PROMPTS]).scores(True)
    assert report.cells["debiased"]["cheerful"]["constant_answer"].mean_shift == pytest.approx(
        (constant - original)[:, 0].mean(), abs=1e-3)
    assert report.constant == "Hello there."


def test_cli_audit_run_writes_habits(capsys, tmp_path, tiny_model_dir):
    run_dir = write_run(tmp_path / "run")
    rubric = tmp_path / "cheerful.yaml"  # no few-shot examples: a short judge prompt, a fast test
    rubric.write_text("name: cheerful\nprinciples:\n  - name: cheerful\n    question: Is the text cheerful?\n")
    out = tmp_path / "audit.json"
    texts = tmp_path / "texts.txt"
    texts.write_text("What a lovely day.\nThe rain never stopped.\n")
    # TEXTS and --run together; then --run alone (curated perturbations on the base samples)
    main(["audit", str(rubric), str(texts), "--run", str(run_dir), "--late", "3",
          "--constant", "Hi!", "--model", str(tiny_model_dir), "--out", str(out), "-q"])
    stdout = capsys.readouterr().out
    data = json.loads(out.read_text())
    assert data["n_texts"] == 2 and data["source"] == "texts" and data["constant"] == "Hi!"
    cells = data["cells"]["plain"]["cheerful"]
    assert {"master_key_solution", "master_key_kaisetsu", "master_key_blank", "constant_answer"} <= set(cells)
    habits = data["habits"]
    assert habits["late_steps"] == [4, 6] and habits["n_late"] == 6 and habits["n_base"] == 8
    found = [h["text"] for h in habits["habits"]]
    assert "Buy now! Free shipping" in found and not any("garden" in h.lower() for h in found)
    assert set(habits["habits"][0]["append"]) == {"plain", "debiased"}
    assert habits["verdict"].startswith("the judge pays for ") and f"of the run's {len(found)} habits" in habits["verdict"]
    assert "habits:" in stdout and "Buy now! Free shipping" in stdout and "master_key_jie" in stdout
    main(["audit", str(rubric), "--run", str(run_dir), "--model", str(tiny_model_dir),
          "--out", str(out), "-q"])
    data = json.loads(out.read_text())
    assert data["n_texts"] == 8 and data["source"].startswith("base samples of") and data["constant"] == DEFAULT_CONSTANT


def test_bad_run_inputs_are_one_line(capsys, tmp_path, examples_dir):
    cheerful = str(examples_dir / "cheerful.yaml")
    run_dir = write_run(tmp_path / "run")
    (run_dir / "base_samples.jsonl").unlink()
    one_line_error(capsys, ["audit", cheerful, "--run", str(run_dir)], "base_samples.jsonl: no such file")
    one_line_error(capsys, ["audit", cheerful, "--run", str(tmp_path / "none")], "none: no such run directory")
    empty = tmp_path / "empty"
    empty.mkdir()
    one_line_error(capsys, ["audit", cheerful, "--run", str(empty)], "samples.jsonl: no such file")
    bad = write_run(tmp_path / "bad")
    jsonl.append(bad / "samples.jsonl", [{"step": "seven", "prompt": "x", "completion": "y"}])
    one_line_error(capsys, ["audit", cheerful, "--run", str(bad)], "samples.jsonl: record 13: needs an integer step")
    one_line_error(capsys, ["audit", cheerful, "--late", "2"], "--late counts the steps of a run")
    one_line_error(capsys, ["audit", cheerful, "--constant", "  "], "--constant: give a non-empty text")
    one_line_error(capsys, ["audit", cheerful, "--run", str(bad), "--late", "0"], "--late")


def test_run_alone_audits_a_capped_spread_of_base_samples(monkeypatch, tmp_path, tiny_gemma, tiny_tokenizer):
    from tether.judge import habits

    monkeypatch.setattr(habits, "BASE_TEXTS", 3)  # the cap, small: 2 prompts x 4 base completions = 8
    ev = Evaluator(tiny_gemma, constitution(), tokenizer=tiny_tokenizer, with_negations=True)
    report = habits.audit_all(ev, None, read_run(write_run(tmp_path / "run")), top=1)
    assert report.n_texts == 3 and report.source.startswith("base samples of") and len(report.habits.habits) == 1


def test_audit_run_judges_as_the_run_read_its_texts(tmp_path):
    """A run with judge_reads: reply was paid on the reply alone: `audit --run` prices its habits the same way."""
    from tether.judge.audit import run_audit
    from tether.judge.habits import read_run, run_habits

    run = tmp_path / "run"
    run.mkdir()
    (run / "samples.jsonl").write_text("".join(json.dumps({"step": s, "prompt": "Prompt.", "completion": " yes yes"}) + "\n"
                                               for s in (1, 2, 3)))
    (run / "base_samples.jsonl").write_text(json.dumps({"prompt": "Prompt.", "completions": [" a day", " rain"]}) + "\n")

    class Spy:
        def score(self, texts, show_progress=False):
            self.texts = list(texts)
            raise StopIteration

    for reads, shown in (("reply", False), ("conversation", True)):
        (run / "config.yaml").write_text(f"judge_reads: {reads}\n")
        texts = read_run(run)
        assert texts.include_prompt is shown
        for call in (lambda spy, texts=texts: run_habits(spy, texts), lambda spy, texts=texts: run_audit(
                spy, [" a day"], prompts=["Prompt."], include_prompt=texts.include_prompt)):
            spy = Spy()
            with pytest.raises(StopIteration):
                call(spy)
            assert all(t.startswith("Prompt.") == shown for t in spy.texts)
