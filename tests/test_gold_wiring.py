"""A gold folder (fitted to a person's labels) wherever tether takes a gold judge; agreement on the run report.

The gold is fitted once on test_gold's toy labels (happy completions are "good") with the
embedded MiniLM; the judges are the tiny random Gemma. The report's agreement is checked on
a scripted run directory whose signals are chosen so the AUC is known: train ranks the
labels perfectly (1.0), gold backwards (0.0), and drift (less is better) backwards too (0.0).
"""

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from test_cli import one_line_error
from test_gold import label_line, toy_items, write_labels

from tether.cli import main
from tether.corpus.config import SampleConfig
from tether.infra.config import load_config
from tether.labels.gold import GoldJudge
from tether.tune.config import TuneConfig

PROMPT = "Write a few lines about the zoo."
COMPLETIONS = ["The zoo was a joyful, happy day!", "The zoo was grim and sad.", "We laughed with delight at the zoo."]


@pytest.fixture(scope="module")
def gold_dir(tmp_path_factory):
    from tether.labels.gold import fit_gold, save_gold

    tmp = tmp_path_factory.mktemp("gold")
    return save_gold(fit_gold(write_labels(tmp / "labels.jsonl", toy_items()), "good", folds=3, device="cpu"), tmp / "gold")


def base_fields(examples_dir, **more):
    return {"constitution": str(examples_dir / "cheerful.yaml"), "prompts": str(examples_dir / "prompts.txt"), **more}


# --- configs, Judges ------------------------------------------------------------------


def test_configs_take_a_gold_folder_or_a_constitution(gold_dir, examples_dir):
    for model in (TuneConfig, SampleConfig):
        folder = load_config(model, data=base_fields(examples_dir, gold_constitution=str(gold_dir)), where="cfg")
        assert folder.gold_constitution == gold_dir
        old = load_config(model, data=base_fields(examples_dir, gold_constitution=str(examples_dir / "on_topic.yaml")),
                          where="cfg")  # an old config, a constitution: still loads
        assert old.gold_constitution.name == "on_topic.yaml"
        assert "tether gold fit" in model.model_fields["gold_constitution"].description


def test_judges_score_a_gold_folder_as_goldjudge_does(gold_dir, tmp_path, tiny_model_dir, examples_dir):
    from tether.labels.gold_judge import FolderGold
    from tether.labels.judges import Judges

    config = SampleConfig.model_validate(base_fields(
        examples_dir, judge_model=str(tiny_model_dir), gold_constitution=gold_dir, device="cpu",
        gold_model="no-such-model"))  # a folder ignores gold_model: it would fail to load
    judges = Judges(config, config.constitution)
    direct = GoldJudge.load(gold_dir).score([PROMPT] * 3, COMPLETIONS)
    assert isinstance(judges.gold, FolderGold) and judges.gold.name == "gold:good"
    np.testing.assert_allclose(judges.gold.score([PROMPT] * 3, COMPLETIONS), direct)
    assert direct[0] > direct[1] < direct[2]  # the fitted gold reads the happy ones as good
    rows = judges.records(PROMPT, COMPLETIONS)  # what a corpus candidate records
    assert [r["gold_total"] for r in rows] == [round(float(x), 4) for x in direct]
    assert rows[0]["gold_scores"] == {"good": round(float(direct[0]), 4)}


def test_a_gold_constitution_scores_as_before(tiny_model_dir, tiny_gemma, tiny_tokenizer, examples_dir):
    """The constitution kind judges prompt + completion joined, debiased: the scores runs logged before."""
    from tether.judge.evaluator import Evaluator
    from tether.labels.gold_judge import ConstitutionGold
    from tether.labels.judges import Judges

    config = SampleConfig.model_validate(base_fields(
        examples_dir, judge_model=str(tiny_model_dir), gold_constitution=examples_dir / "on_topic.yaml", device="cpu"))
    judges = Judges(config, config.constitution)
    assert isinstance(judges.gold, ConstitutionGold) and judges.gold.evaluator.model is judges.judge.model  # one model
    rows = judges.records(PROMPT, COMPLETIONS[:2])  # what a corpus candidate records
    # the same weights (tiny_model_dir was saved from tiny_gemma), judged as before this change
    before = Evaluator(tiny_gemma, examples_dir / "on_topic.yaml", tokenizer=tiny_tokenizer, debias=True)
    expected = before.score([PROMPT + c for c in COMPLETIONS[:2]])
    np.testing.assert_allclose([r["gold_total"] for r in rows], expected.total(), atol=1e-4)
    assert list(rows[0]["gold_scores"]) == expected.names  # per principle, as before


def test_a_bad_gold_is_one_line_before_anything_runs(tmp_path, capsys, examples_dir):
    empty = tmp_path / "empty"
    empty.mkdir()
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "gold.json").write_text('{"format": "tether-gold/1", "coef": [1, ')
    for command in ("tune", "sample"):
        for gold, expected in ((empty, "empty: not a gold judge folder (no gold.json)"),
                               (corrupt, "corrupt/gold.json: cannot read")):
            config = tmp_path / f"{command}.yaml"
            config.write_text(yaml.safe_dump(base_fields(examples_dir, gold_constitution=str(gold),
                                                         output_dir=str(tmp_path / "out"))))
            one_line_error(capsys, [command, str(config)], expected)
    config.write_text(yaml.safe_dump(base_fields(examples_dir, gold_constitution=str(tmp_path / "gone"),
                                                 output_dir=str(tmp_path / "out"))))
    one_line_error(capsys, ["sample", str(config)], "gone: no such file or folder")  # at the start, before any model
    assert not (tmp_path / "out").exists()  # nothing written
    assert sorted(p.name for p in corrupt.iterdir()) == ["gold.json"]


# --- the monitor callback -------------------------------------------------------------


def test_monitor_callback_logs_a_gold_folder_score(gold_dir, tmp_path, tiny_gemma, tiny_tokenizer, examples_dir):
    from tether.infra.rundir import RunDir
    from tether.judge.evaluator import Evaluator
    from tether.labels.gold_judge import FolderGold
    from tether.rewards.constitution import ConstitutionReward
    from tether.watch.callbacks import MonitorCallback

    reward = ConstitutionReward(Evaluator(tiny_gemma, examples_dir / "cheerful.yaml", tokenizer=tiny_tokenizer))
    reward([PROMPT] * 3, COMPLETIONS)  # as TRL calls it: the step's batch
    run = RunDir(tmp_path / "run")
    run.path.mkdir()
    callback = MonitorCallback(reward, gold=FolderGold(GoldJudge.load(gold_dir)), run_dir=run)
    metrics = callback._measure(1, {}, callback._whole_batch(reward.last_result))
    direct = GoldJudge.load(gold_dir).score([PROMPT] * 3, COMPLETIONS)
    assert metrics["gold/score"] == pytest.approx(float(direct.mean()), abs=1e-9)
    assert metrics["gold/gap"] == pytest.approx(metrics["reward/train"] - float(direct.mean()), abs=1e-9)
    logged = [json.loads(x) for x in (run.path / "samples.jsonl").read_text().splitlines()]
    assert [r["gold"] for r in logged] == [round(float(x), 4) for x in direct]

    # a bare Evaluator (a user's script) still works: it judges the text the train judge read
    gold = Evaluator(tiny_gemma, examples_dir / "on_topic.yaml", tokenizer=tiny_tokenizer)
    metrics = MonitorCallback(reward, gold=gold)._measure(1, {}, callback._whole_batch(reward.last_result))
    assert metrics["gold/score"] == pytest.approx(float(gold.score([PROMPT + c for c in COMPLETIONS]).total().mean()))


# --- the report's judge agreement -----------------------------------------------------


def mann_whitney(scores, yes):
    """The AUC counted pair by pair, apart from the code under test."""
    pos = [s for s, y in zip(scores, yes) if y]
    neg = [s for s, y in zip(scores, yes) if not y]
    return sum((p > n) + 0.5 * (p == n) for p in pos for n in neg) / (len(pos) * len(neg))


def scripted_run(path: Path) -> tuple[Path, list[dict]]:
    """10 samples at step 3; the person says yes to k >= 5. train follows k, gold goes against it, drift too."""
    path.mkdir()
    (path / "config.yaml").write_text(yaml.safe_dump({"policy_model": "tiny", "algorithm": "grpo"}))
    (path / "metrics.jsonl").write_text(json.dumps({"step": 3, "reward/train": 0.5}) + "\n")
    rng = np.random.default_rng(0)
    samples = [{"step": 3, "prompt": "Tell me <b>a story</b>.", "completion": f" story {k}", "train": float(k),
                "gold": -float(k), "drift": k / 10, "embedding_kl": float(rng.normal())} for k in range(10)]
    (path / "samples.jsonl").write_text("".join(json.dumps(s) + "\n" for s in samples))
    return path, samples


def labels_of(samples, elsewhere="/moved/from/here/samples.jsonl"):
    """Labels as `tether label` wrote them when the run lived elsewhere, plus one base sample not in the run."""
    lines = [label_line(f"id{k}", "good", "yes" if k >= 5 else "no", s["prompt"], s["completion"],
                        file=elsewhere, step=3, kind="run", arm="policy") for k, s in enumerate(samples)]
    lines.append(label_line("base", "good", "yes", "Tell me <b>a story</b>.", " a base story", file=elsewhere, step=0))
    return "".join(json.dumps(x) + "\n" for x in lines)


def test_report_shows_agreement_of_the_runs_signals_with_labels(tmp_path, capsys):
    from test_report import rendered

    run, samples = scripted_run(tmp_path / "run")
    (run / "labels.jsonl").write_text(labels_of(samples))
    main(["report", str(run)])
    out = capsys.readouterr().out
    yes = [k >= 5 for k in range(10)]
    expected_kl = mann_whitney([s["embedding_kl"] for s in samples], yes)
    assert mann_whitney([s["train"] for s in samples], yes) == 1.0  # the test's own sums, for what the report says

    result = json.loads((run / "report" / "agreement.json").read_text())[0]
    auc = {j["judge"]: j["questions"]["good"]["auc"] for j in result["judges"]}
    assert (result["matched"], result["items"]) == (10, 11)  # the base sample is not this run's
    assert auc["train"] == 1.0 and auc["gold"] == 0.0 and auc["-drift (less drift = better)"] == 0.0
    assert auc["embedding_kl"] == pytest.approx(expected_kl)
    assert "verdict: train: agrees with you on good (AUC 1.00)" in out
    assert "verdict: gold: disagrees with you on your policy's samples: AUC 0.00 for good" in out
    assert "n labeled 10" in out

    dom = rendered(run / "report" / "report.html")
    assert "Judge agreement with your labels" in dom and "n labeled 10" in dom
    assert "1.00 [1.00, 1.00] +" in dom and "0.00 [0.00, 0.00] -" in dom
    assert "good (yes/no 5/5)" in dom
    assert "agrees with you on good (AUC 1.00)" in dom


def test_report_labels_option_and_no_labels(tmp_path, capsys):
    run, samples = scripted_run(tmp_path / "run")
    main(["report", str(run)])
    out = capsys.readouterr().out
    assert f"tether label {run} --spec SPEC.yaml --out {run / 'labels.jsonl'}" in out
    page = (run / "report" / "report.html").read_text()
    assert "No labels for this run" in page and "tether label" in page

    flipped = labels_of(samples).replace('"answer": "yes"', '"answer": "x"').replace('"answer": "no"', '"answer": "yes"')
    other = tmp_path / "elsewhere.jsonl"
    other.write_text(flipped.replace('"answer": "x"', '"answer": "no"'))  # the opposite person: train reversed
    (run / "labels.jsonl").write_text("")  # labeling begun, nothing answered: not an error
    main(["report", str(run), "--labels", str(other)])
    results = json.loads((run / "report" / "agreement.json").read_text())
    assert [r["matched"] for r in results] == [0, 10]
    assert results[1]["judges"][0]["judge"] == "train" and results[1]["judges"][0]["questions"]["good"]["auc"] == 0.0

    one_line_error(capsys, ["report", str(run), "--labels", str(tmp_path / "none.jsonl")], "none.jsonl: no such file")
