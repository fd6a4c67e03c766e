"""Baselines as arms (prompted, best-of-n), pre-registration, and the blind reading built and analysed by the tool."""

import json
import math

import numpy as np
import pytest
import yaml
from test_cli import one_line_error
from test_experiment import experiment, grid  # noqa: F401  (grid: the tiny 2-seed experiment fixture)


def _arms(config, arms: dict, **more) -> None:
    data = yaml.safe_load(config.read_text())
    data.update({"arms": arms, "jobs": 1, **more})
    config.write_text(yaml.safe_dump(data))


BASELINES = {"plain": {"set": {"steps": 1}},
             "prompted": {"kind": "prompted", "instruction": "Here is a happy story."},
             "best_of_3": {"kind": "best_of_n", "n": 3, "reward_of": "plain"}}


def test_bad_baseline_arms_are_refused_in_one_line(capsys, monkeypatch, grid):  # noqa: F811
    config, out, env = grid
    monkeypatch.syspath_prepend(str(config.parent))
    _arms(config, BASELINES)
    cases = [("arms.prompted.instruction=''", "needs an instruction"),
             ("arms.prompted.instruction='   '", "needs an instruction"),
             ("arms.best_of_3.n=0", "at least 1 (got 0)"),
             ("arms.best_of_3.reward_of=plian", "reward_of: 'plian' is not an arm that tunes"),
             ("arms.prompted.model=nobody", "model: 'nobody' is not an arm that tunes"),
             ("arms.prompted.n=4", "n: not a field of kind prompted"),
             ("arms.best_of_3.set.kl_coef=1", "set: not a field of kind best_of_n"),
             ("arms.plain.instruction=hi", "instruction: not a field of kind tune"),
             ("arms.late.kind=best_of_n", "needs n")]
    for case, expected in cases:
        one_line_error(capsys, ["experiment", str(config), "--register", "--set", case], expected)
    assert not out.exists()  # refused before anything was written


def test_a_registration_edited_afterwards_is_refused_and_changes_are_named(capsys, monkeypatch, grid):  # noqa: F811
    from tether.experiment.config import load_experiment
    from tether.experiment.registration import changes_since, register

    config, out, env = grid
    monkeypatch.chdir(config.parent)
    monkeypatch.syspath_prepend(str(config.parent))
    _arms(config, BASELINES, registration={"hypotheses": ["plain beats prompted"], "primary": "good",
                                           "analysis": "cluster bootstrap"})
    settings = load_experiment(config)
    path = register(settings)
    assert register(settings) == path  # the same registration again: nothing changes
    assert changes_since(settings)[1] == []
    moved = load_experiment(config, ["arms.best_of_3.n=5", "eval_completions=3"])
    assert changes_since(moved)[1] == ["arm best_of_3 changed", "eval_completions"]
    one_line_error(capsys, ["experiment", str(config), "--register", "--set", "arms.best_of_3.n=5"],
                   "registered on")  # registering other settings in the same folder
    record = json.loads(path.read_text())
    record["hypotheses"] = ["prompted beats plain"]
    path.write_text(json.dumps(record))
    one_line_error(capsys, ["experiment", str(config), "--summary"], "edited after it was written")


def test_baselines_run_beside_a_tuned_arm_and_a_reading_is_built_taken_and_analysed(grid, examples_dir):  # noqa: F811
    config, out, env = grid
    # read with a second task's questions (on_task, polite, fluent, good), tone and quality apart on polite
    reading = {"spec": str(examples_dir / "labels_helpful.yaml"), "among": "polite",
               "instructions": "docs/reading_helpful.md"}
    _arms(config, {**BASELINES, "reader": {"set": {"steps": 1, "judge_reads": "reply"}}}, seeds=[0], reading=reading)
    result = experiment(config, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    runs = {p.name for p in (out / "runs").iterdir()}
    assert runs == {"plain-s0", "prompted-s0", "best_of_3-s0", "reader-s0"}
    other = json.loads((out / "runs/reader-s0/eval/result.json").read_text())["base"]
    assert other.startswith("base-") and (out / other / "result.json").exists()  # judged as that arm judges: its own base
    assert json.loads((out / "runs/plain-s0/eval/result.json").read_text())["base"] == "base"

    prompted = [json.loads(line) for line in (out / "runs/prompted-s0/eval/samples.jsonl").read_text().splitlines()]
    heldout = (config.parent / "heldout.txt").read_text().split("\n")
    assert {s["prompt"] for s in prompted} == set(filter(None, heldout))  # the instruction is never shown
    assert all(s["kl_completion"] > 0 for s in prompted if s["tokens"])  # the instruction moved the distribution
    best = [json.loads(line) for line in (out / "runs/best_of_3-s0/eval/samples.jsonl").read_text().splitlines()]
    assert len(best) == 4 and all(len(s["reward_of_n"]) == 3 for s in best)
    assert all(math.isclose(s["reward"], max(s["reward_of_n"]), abs_tol=1e-3) for s in best)  # the best kept
    cost = json.loads((out / "runs/best_of_3-s0/eval/result.json").read_text())
    assert cost["inference_judged"] == 3 and math.isclose(cost["kl_bound"], math.log(3) - 2 / 3)
    assert cost["inference_tokens"] >= cost["tokens"]
    tuned = json.loads((out / "runs/plain-s0/eval/result.json").read_text())
    assert tuned["train_steps"] == 1 and tuned["train_tokens"] > 0 and tuned["inference_judged"] == 0
    summary = (out / "summary.md").read_text()
    assert "| best_of_3 | 0 | 0 | 0 |" in summary and "≤ " in summary  # the cost table; best-of-n's KL is a bound
    assert f"| {other} | - |" in summary

    assert experiment(config, "--read", env=env).returncode == 0
    reading = out / "reading"
    key = json.loads((reading / "key.json").read_text())
    assert key["questions"] == ["on_task", "polite", "fluent", "good"]
    readme = (reading / "README.md").read_text()
    assert "docs/reading_helpful.md" in readme and '"polite": "no"' in readme and "cheerful" not in readme
    items = {json.loads(line)["item"]: json.loads(line) for line in (reading / "items.jsonl").read_text().splitlines()}
    assert len(items) == 5 * 4  # base, plain, reader, prompted, best_of_3: 2 prompts x 2 draws each
    batches = sorted((reading / "batches").glob("*.jsonl"))
    for batch in batches:
        rows = [json.loads(line) for line in batch.read_text().splitlines()]
        assert all(set(r) in ({"read", "prompt", "completion"}, {"pair", "prompt", "left", "right"}) for r in rows)
        own = [key["reads"][r["read"]]["item"] for r in rows if "read" in r and not key["reads"][r["read"]]["reread"]]
        for prompt in {items[i]["prompt"] for i in own}:  # every source of a batch's prompts is in that batch
            assert {items[i]["source"]["arm"] for i in own if items[i]["prompt"] == prompt} == {
                "base", "plain", "prompted", "best_of_3", "reader"}
        shown = [key["pairs"][r["pair"]][side] for r in rows if "pair" in r for side in ("left", "right")]
        assert shown and len(shown) == len(set(shown))  # no text in two pairs
    (reading / "answers" / f"{batches[0].stem}.jsonl").write_text('{"read": "99-999", "good": "yes"}\n')
    bad = experiment(config, "--read", env=env)
    assert bad.returncode == 2 and "not an item of this reading" in bad.stderr and "Traceback" not in bad.stderr
    for batch in batches:  # answers that favour the tuned arm: the analysis must find it
        answers = []
        for r in map(json.loads, batch.read_text().splitlines()):
            if "read" in r:
                arm = items[key["reads"][r["read"]]["item"]]["source"]["arm"]
                yes = "yes" if arm == "plain" else "no"
                answers.append({"read": r["read"], "on_task": "yes", "polite": yes, "fluent": "yes", "good": yes})
            else:
                left = items[key["pairs"][r["pair"]]["left"]]
                answers.append({"pair": r["pair"], "choice": "left" if left["source"]["arm"] == "plain" else "right"})
        (reading / "answers" / batch.name).write_text("".join(json.dumps(a) + "\n" for a in answers))
    first = experiment(config, "--read", env=env)
    assert first.returncode == 0 and "every batch answered" in first.stderr
    again = experiment(config, "--read", env=env)
    assert "0 new answer(s)" in again.stderr  # answers are taken once

    from tether.experiment.analysis import analyse
    from tether.experiment.config import load_experiment

    result = analyse(load_experiment(config))
    assert result["rates"]["good"]["plain"][0] == 1.0 and result["rates"]["good"]["base"][0] == 0.0
    assert all(d[0] == 1.0 for d in result["diffs"].values())
    assert all(w.mean == 1.0 for w in result["pairs"].values())
    assert result["rates"]["good among polite"]["plain"][0] == 1.0 and "cheerful" not in result["rates"]
    assert set(result["agreement"]) == {"on_task", "polite", "fluent", "good"}
    assert experiment(config, "--summary", env=env).returncode == 0
    summary = (out / "summary.md").read_text()
    assert "## The blind reading" in summary and "| source | good | on_task | polite | fluent | good among polite |" in summary


def test_a_readings_questions_come_from_its_spec_and_must_hold_good(capsys, monkeypatch, grid, tmp_path):  # noqa: F811
    from tether.experiment.config import load_experiment
    from tether.experiment.reading import QUESTIONS, questions

    config, out, env = grid
    assert questions(load_experiment(config)) == QUESTIONS  # no spec: the story task's four questions
    (tmp_path / "spec.yaml").write_text("questions:\n  - {name: kind, question: 'Is it kind?'}\n")
    for case, expected in [("reading.spec=spec.yaml", "reading.spec: the questions (kind) have no 'good'"),
                           ("reading.among=polite", "reading.among: the questions (on_task, cheerful, fluent, good) "
                                                    "have no 'polite'")]:
        one_line_error(capsys, ["experiment", str(config), "--register", "--set", case], expected)
    assert not out.exists()


def test_the_cluster_bootstrap_pairs_arms_and_resamples_prompts():
    from tether.experiment.analysis import bootstrap, holm

    rng = np.random.default_rng(0)
    a = rng.integers(0, 2, (40, 3, 2)).astype(float)
    boots = bootstrap({"a": a, "b": a[:, :1]})
    assert abs(np.mean(boots["a"]) - a.mean()) < 0.01
    low, high = np.percentile(boots["a"], [2.5, 97.5])
    assert 0.05 < high - low < 0.4  # a real interval: prompts resampled
    assert np.all(np.isfinite(boots["b"]))
    assert holm({"x": 0.01, "y": 0.04, "z": 0.03}) == pytest.approx({"x": 0.03, "y": 0.06, "z": 0.06})


def test_evaluation_judges_as_training_did_and_keys_the_base_by_judging(tiny_model_dir, examples_dir, tmp_path):
    from types import SimpleNamespace

    from tether.defenses.sweep import train_judge
    from tether.experiment.evaluate import judging_key
    from tether.judge.evaluator import Evaluator
    from tether.tune.config import TuneConfig

    common = {"policy_model": str(tiny_model_dir), "judge_model": str(tiny_model_dir),
              "constitution": str(examples_dir / "cheerful.yaml"), "prompts": str(examples_dir / "prompts.txt"),
              "output_dir": str(tmp_path / "run")}
    story, reply = TuneConfig(**common), TuneConfig(**common, judge_reads="reply")
    evaluator = Evaluator(str(tiny_model_dir), str(examples_dir / "cheerful.yaml"))
    judges = SimpleNamespace(judge=evaluator)
    prompts, completions = ["The dog ran.", "It rained."], [" We laughed!", " Sad."]
    np.testing.assert_allclose(train_judge(story, judges)(prompts, completions),
                               evaluator.score([p + c for p, c in zip(prompts, completions)]).total(), atol=1e-5)
    np.testing.assert_allclose(train_judge(reply, judges)(prompts, completions), evaluator.score(completions).total(),
                               atol=1e-5)  # judge_reads: reply -> the evaluation reads the reply alone, as training did
    assert judging_key(story) != judging_key(reply)
    assert judging_key(story) == judging_key(TuneConfig(**common, learning_rate=0.5, steps=3))  # training alone: one base


def test_a_baseline_on_the_base_runs_once_and_one_on_an_arm_every_seed(grid, monkeypatch):  # noqa: F811
    from tether.experiment.config import load_experiment

    config, out, env = grid
    monkeypatch.syspath_prepend(str(config.parent))
    _arms(config, {**BASELINES, "tuned_prompted": {"kind": "prompted", "instruction": "Be glad.", "model": "plain"}})
    settings = load_experiment(config)
    assert sorted(settings.runs()) == [("best_of_3", 0), ("plain", 0), ("plain", 1), ("prompted", 0),
                                       ("tuned_prompted", 0), ("tuned_prompted", 1)]
    assert settings.needs("tuned_prompted") == "plain" and settings.needs("prompted") is None
    assert settings.tuned_dir("tuned_prompted", 1) == settings.run_dir("plain", 1)


def test_a_worker_reads_all_its_code_before_it_runs():
    """A file edited while a grid runs must not meet a worker halfway (a lazy import of the new beside the old)."""
    import subprocess
    import sys

    check = ("import sys; from tether.experiment.worker import pin_code; pin_code(); "
             "assert {'tether.experiment.baselines', 'tether.rewards.paid', 'tether.defenses.sweep', "
             "'tether.tune.process', 'tether.labels.gold_fit'} <= set(sys.modules); assert 'tether.serve.app' not in sys.modules")
    assert subprocess.run([sys.executable, "-c", check], capture_output=True, text=True).returncode == 0


def test_the_adjusted_odds_survive_a_source_never_read_good():
    """A source with no good text separates perfectly (no finite odds ratio): it is named, the others estimated."""
    import random

    from tether.experiment.analysis import gee_odds

    rng = random.Random(0)
    rows = [{"good": rng.random() < rate, "arm": arm, "who": f"r{k % 4}", "prompt": f"p{k % 20}"}
            for arm, rate in (("recipe", 0.3), ("base", 0.1), ("best", 0.3), ("never", 0.0)) for k in range(200)]
    odds = gee_odds(rows, "recipe")
    assert odds["never"] == "not estimable: none of its texts read good"
    assert odds["base"][1] > 1 and odds["best"][1] < 1 < odds["best"][2]  # recipe beats base; best is a tie
